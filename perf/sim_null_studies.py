"""Null studies: how often does a study with no effect anywhere headline one?

Each simulated study is RealToxicityPrompts only (P prompts x S samples, the toxicity measure), with a
vanilla model, N value-aligned (VIM, stage full) profiles, the same N profiles as in-context personas
(ICL), one benign fine-tuned control, each with and without the value prompt. Every estimand is zero:
per-sample toxicity = sigmoid(prompt effect + model effect + prompt x condition + unit x prompt + sample
noise), where sampled groups (VIM, ICL) have model effects of mean 0, the single models (vanilla, benign)
have none, and the value prompt adds only noise of mean 0 per model. Value intensities are random, so
no value predicts anything.

A study "names an effect" when any of the report's top findings (analysis.report.findings, k = top_k)
names one. The estimates come from `analysis.task.estimates`, the function analyze.py calls:
- fast path: the tidy and prompt-level frames are built in memory (prompt values by
  metrics.PROMPT_VALUES, as inference.prompt_values computes them from samples.jsonl);
- `--store-studies N`: N studies written in the project's store layout (results.json + samples.jsonl)
  and read back by tidy.load_results and inference.prompt_values, end to end.
Each study is also scored with raw p in place of q (same frames, same findings code) for contrast.
`--mixed N`: the optional mixed-model regression (analysis.regression_mixed) on N null studies at 14 and
20 profiles: any BH discovery with its t(profiles - 11) tests vs the normal (Wald) reference it used before.

    .venv/bin/python perf/sim_null_studies.py --studies 1000 --profiles 8 20 --store-studies 40
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from value_harms.analysis import inference, load_results, value_regressions
from value_harms.analysis.design import two_way
from value_harms.analysis.multiplicity import apply_fdr, qvalues
from value_harms.analysis.report.findings import findings_detail
from value_harms.analysis.stats import MIN_REGRESSION_PROFILES
from value_harms.analysis.task import estimates
from value_harms.core.values import VALUE_TO_KEY, VALUES
from value_harms.metrics import PROMPT_VALUES

THRESHOLD = 0.5  # RTP's toxicity threshold (benchmark.settings.toxicity_threshold)
SETTINGS = {"alpha": 0.05, "conf": 0.95, "top_k": 5, "min_models": 5, "min_prompts": 30}


def simulate(rng, profiles: int, prompts: int, samples: int, effect: float = 0.0) -> list[dict]:
    """One null study: a list of results {baseline, stage, profile, mitigation, values, scores (P, S)}.
    `effect` (logit scale) is added to every VIM model: a study where value alignment does raise toxicity."""
    mu = rng.normal(-1.5, 1.0, prompts)  # prompt effects (logit scale): most prompts rarely toxic
    names = [f"p{i:03d}" for i in range(profiles)]
    values = {n: dict(zip(VALUES, rng.integers(1, 7, len(VALUES)).astype(float))) for n in names}
    units = [("vanilla", "none", "vanilla", None, 0.0)] + [("benign", "benign_alpaca", "vanilla", None, 0.0)]
    for baseline, stage in (("vim", "full"), ("icl", "none")):
        shift = effect if baseline == "vim" else 0.0
        units += [(baseline, stage, n, values[n], shift + rng.normal(0, 0.2)) for n in names]
    inter = {g: rng.normal(0, 0.1, prompts) for g in ("vanilla", "benign", "vim", "icl")}  # prompt x condition
    out = []
    for baseline, stage, profile, vals, a in units:
        sampled = baseline in ("vim", "icl")
        for mitigation in ("none", "value_prompt"):
            b = rng.normal(0, 0.1) if (sampled and mitigation != "none") else 0.0
            z = mu + inter[baseline] + a + b + rng.normal(0, 0.3, prompts)
            scores = 1 / (1 + np.exp(-(z[:, None] + rng.normal(0, 0.8, (prompts, samples)))))
            out.append(dict(baseline=baseline, stage=stage, profile=profile, mitigation=mitigation, values=vals))
            out[-1]["scores"] = scores
    return out


def _prompt_values(scores: np.ndarray) -> dict[str, np.ndarray]:
    """metrics.PROMPT_VALUES['toxicity'] for every prompt of one result."""
    per = [PROMPT_VALUES["toxicity"](row, [None] * row.size, THRESHOLD) for row in scores]
    return {m: np.array([d[m] for d in per]) for m in per[0]}


def frames(study: list[dict], with_pv: bool = True) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The tidy table and the prompt-level table analyze.py would build from this study's files."""
    tidy, pv = [], []
    for r in study:
        r.setdefault("pv", _prompt_values(r["scores"]))
    for i, r in enumerate(study):
        rid = f"r{i}"
        vals = r["values"] or dict.fromkeys(VALUES, math.nan)
        ident = dict(model="tiny", stage=r["stage"], baseline=r["baseline"], profile=r["profile"])
        ident |= dict(mitigation=r["mitigation"], disregard="", benchmark="rtp")
        for metric, v in r["pv"].items():
            tidy.append(dict(result_id=rid, **ident, **vals, category="overall", metric=metric, value=v.mean()))
            tidy[-1] |= dict(measure="toxicity", missing=0.0, n=float(v.size), kind="ess", path="")
            for p, x in enumerate(v if with_pv else ()):
                pv.append(dict(result_id=rid, **ident, metric=metric, prompt=f"{p:04d}", value=x))
                pv[-1] |= dict(samples=r["scores"].shape[1], sample_var=math.nan)  # a maximum: no sampling variance
    return pd.DataFrame(tidy), pd.DataFrame(pv) if with_pv else None


def write_store(root: Path, study: list[dict]) -> None:
    """The study as evaluate.py stores it (store.records.EvalRecord fields analysis reads + samples.jsonl)."""
    for i, r in enumerate(study):
        folder = root / "eval" / "tiny" / r["baseline"] / r["stage"] / r["profile"] / "rtp" / r["mitigation"] / f"k{i}"
        folder.mkdir(parents=True)
        pvals = _prompt_values(r["scores"])
        vals = r["values"]
        result = {
            "schema_version": 2,
            "status": "complete",
            "benchmark": {"name": "rtp", "version": "1", "measure": "toxicity", "n_prompts": r["scores"].shape[0]},
            "model": {"name": "tiny"},
            "baseline": r["baseline"],
            "stage": r["stage"],
            "profile": {
                "name": r["profile"],
                "kind": "vanilla" if vals is None else "ess",
                "values": None if vals is None else {VALUE_TO_KEY[v]: x for v, x in vals.items()},
            },
            "mitigation": {"name": r["mitigation"], "value_prompt": r["mitigation"] == "value_prompt"},
            "scorer": {"by_scorer": {"sim": int(r["scores"].size)}, "missing": 0, "n": int(r["scores"].size)},
            "metrics": {"overall": {m: float(v.mean()) for m, v in pvals.items()} | {"missing_prompts": 0}},
        }
        result["benchmark"]["settings"] = {"toxicity_threshold": THRESHOLD}
        (folder / "results.json").write_text(json.dumps(result))
        lines = [
            json.dumps({"id": f"{p:04d}", "sample": k, "score": float(s), "label": None})
            for p, row in enumerate(r["scores"])
            for k, s in enumerate(row)
        ]
        (folder / "samples.jsonl").write_text("\n".join(lines) + "\n")


def _two_way_row(G: np.ndarray, R: np.ndarray | None, fixed: bool = False) -> dict:
    """The columns findings reads of one two-way test (as inference.compare_prompt_level fills them)."""
    res = two_way(G, R)
    units, prompts = G.shape
    powered = (fixed or units >= SETTINGS["min_models"]) and prompts >= SETTINGS["min_prompts"]
    p = float(res["p"])
    return {
        "estimate": float(res["estimate"]),
        "lo": float(res["ci_low"]),
        "hi": float(res["ci_high"]),
        "se": float(res["se"]),
        "p_value": p if np.isfinite(p) else math.nan,
        "n_models": units,
        "n_prompts": prompts,
        "n_samples": 3,
        "mde": math.nan,
        "powered": bool(powered) and float(res["se"]) > 0,
        "constant": bool(float(res["se"]) == 0),
        "min_models": SETTINGS["min_models"],
        "min_prompts": SETTINGS["min_prompts"],
    }


def fast_estimates(study: list[dict], df: pd.DataFrame) -> dict:
    """The report's frames of one study without the pandas grouping of analysis.task.estimates: the same
    two-way tests (design.two_way) on the same unit x prompt matrices, the same regressions
    (stats.value_regressions on the same tidy rows), one family (multiplicity.apply_fdr). `--check` shows
    the p-values equal those of estimates()."""
    V: dict[tuple[str, str, str], np.ndarray] = {}
    for r in study:
        for metric, v in r["pv"].items():
            V.setdefault((r["baseline"], r["mitigation"], metric), []).append(v)
    M = {k: np.stack(v) for k, v in V.items()}
    base = dict(model="tiny", benchmark="rtp", category="overall")
    cmp, mit, con = [], [], []
    for metric in ("expected_max_toxicity", "toxicity_probability"):
        ref = M[("vanilla", "none", metric)]
        for b, stage in (("vim", "full"), ("icl", "none"), ("benign", "benign_alpaca")):
            G = M[(b, "none", metric)]
            t = _two_way_row(G, ref)
            cmp.append({**base, **t, "metric": metric, "mitigation": "none", "baseline": b, "stage": stage})
            cmp[-1] |= {"mean": G.mean(), "diff_vs_ref": t["estimate"], "diff_low": t["lo"], "diff_high": t["hi"]}
        for b, stage in (("vanilla", "none"), ("vim", "full"), ("icl", "none"), ("benign", "benign_alpaca")):
            D = M[(b, "value_prompt", metric)] - M[(b, "none", metric)]
            t = _two_way_row(D, None, fixed=b == "vanilla")
            mit.append({**base, **t, "metric": metric, "baseline": b, "stage": stage, "mitigation": "value_prompt"})
            mit[-1] |= {"delta_mean": t["estimate"], "ci_low": t["lo"], "ci_high": t["hi"], "disregard": ""}
        vim = M[("vim", "none", metric)]
        for kind, t in (
            ("vim_vs_control", _two_way_row(vim, M[("benign", "none", metric)])),
            ("vim_vs_icl", _two_way_row(vim - M[("icl", "none", metric)], None)),
        ):
            con.append({**base, **t, "metric": metric, "contrast": kind, "group": "vim/full", "control": kind})
            con[-1] |= {"estimand": kind, "mean_group": vim.mean(), "mean_control": math.nan}
            con[-1] |= {"ci_low": t["lo"], "ci_high": t["hi"]}
    reg = value_regressions(df, min_profiles=MIN_REGRESSION_PROFILES)
    frames = {"regression": reg, "comparison": pd.DataFrame(cmp), "mitigation": pd.DataFrame(mit)}
    frames, family = apply_fdr({**frames, "contrast": pd.DataFrame(con)}, alpha=SETTINGS["alpha"])
    return {"reg": frames["regression"], "cmp": frames["comparison"], "mit": frames["mitigation"]} | {
        "con": frames["contrast"],
        "family": family,
    }


def _raw(est: dict) -> dict:
    """The same frames with q replaced by the raw p (the report before the family correction, for contrast)."""
    out = dict(est)
    for key, col in (("reg", "p"), ("cmp", "p_value"), ("mit", "p_value"), ("con", "p_value")):
        f = est[key].copy()
        f.attrs = dict(est[key].attrs)
        f["q"] = pd.to_numeric(f[col], errors="coerce") if len(f) else f.get("q")
        if key == "reg" and len(f):
            f["p_adj"] = f["q"]
        out[key] = f
    return out


def named(est: dict, k: int = SETTINGS["top_k"]) -> bool:
    found = findings_detail(est["reg"], est["cmp"], est["mit"], est["con"], k=k, alpha=SETTINGS["alpha"])
    return any(f["named"] for f in found)


def _tidy(study: list[dict]) -> pd.DataFrame:
    return frames(study, with_pv=False)[0]


def run_design(profiles: int, studies: int, full: int, store: int, prompts: int, samples: int, seed: int) -> dict:
    """Null studies of one design: `studies` through fast_estimates, `full` through analysis.task.estimates
    on in-memory frames, `store` through the store layout; the share naming an effect (q, raw p) of each."""
    rng = np.random.default_rng(seed)
    counts = {path: [0, 0, 0] for path in ("fast", "full", "store")}  # studies, named with q, named with raw p
    sizes = []
    t0 = time.perf_counter()
    for s in range(studies + full + store):
        study = simulate(rng, profiles, prompts, samples)
        path = "fast" if s < studies else "full" if s < studies + full else "store"
        if path == "fast":
            est = fast_estimates(study, _tidy(study))
        elif path == "full":
            df, pv = frames(study)
            est = estimates(df, SETTINGS, pv=pv)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                write_store(Path(tmp), study)
                est = estimates(load_results([tmp]), SETTINGS)
        c = counts[path]
        c[0], c[1], c[2] = c[0] + 1, c[1] + named(est), c[2] + named(_raw(est))
        sizes.append(est["family"]["size"])
    share = {p: (c[1] / c[0], c[2] / c[0], c[0]) if c[0] else (math.nan, math.nan, 0) for p, c in counts.items()}
    return {"profiles": profiles, "share": share, "family_size": float(np.median(sizes))} | {
        "seconds": time.perf_counter() - t0
    }


def check(profiles: int, studies: int, seed: int) -> float:
    """Largest difference between the p-values of fast_estimates and analysis.task.estimates on the same studies."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(studies):
        study = simulate(rng, profiles, 40, 3)
        df, pv = frames(study)
        a, b = fast_estimates(study, df), estimates(df, SETTINGS, pv=pv)
        for key, on in (("cmp", ["baseline"]), ("mit", ["baseline"]), ("con", ["contrast"])):
            x = a[key].set_index(["metric", *on])["p_value"].dropna()
            y = b[key].set_index(["metric", *on])["p_value"].astype(float).reindex(x.index)
            worst = max(worst, float(np.nanmax(np.abs(x.to_numpy(float) - y.to_numpy(float)))))
        assert a["family"]["size"] == b["family"]["size"], (a["family"], b["family"])
    return worst


def mixed_null(profiles: int, studies: int, seed: int, prompts: int = 40) -> dict:
    """Share of null studies in which the mixed-model regression reports any BH discovery: with its t tests
    (as analysis.regression_mixed now does) and with the normal reference of the same fits (as before)."""
    rng = np.random.default_rng(seed)
    any_t, any_normal = 0, 0
    for _ in range(studies):
        names = [f"p{i}" for i in range(profiles)]
        prof = pd.DataFrame([{"profile": n, **dict(zip(VALUES, rng.uniform(1, 6, len(VALUES))))} for n in names])
        mu, rows = rng.normal(0, 0.1, prompts), []
        for n in names:
            u = rng.normal(0, 0.03)
            for p in range(prompts):
                rows.append(dict(model="m", stage="full", baseline="vim", profile=n, mitigation="none"))
                rows[-1] |= dict(benchmark="rtp", metric="emt", prompt=str(p), value=mu[p] + u + rng.normal(0, 0.1))
        out = inference.value_regressions_mixed(prof, pd.DataFrame(rows))
        terms = out[out["term"] != "Intercept"]
        any_t += bool(terms["significant"].any())
        p_normal = 2 * sps.norm.sf(np.abs(terms["coef"] / terms["se"]))
        any_normal += bool((qvalues(p_normal) <= 0.05).any())
    return {
        "profiles": profiles,
        "studies": studies,
        "any_hit_t": any_t / studies,
        "any_hit_normal": any_normal / studies,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=1000, help="null studies per design (in-memory frames)")
    ap.add_argument("--profiles", type=int, nargs="+", default=[8, 20])
    ap.add_argument("--full-studies", type=int, default=0, help="studies per design through task.estimates")
    ap.add_argument("--store-studies", type=int, default=0, help="studies per design through the store layout")
    ap.add_argument("--check", type=int, default=0, help="studies on which fast and full p-values are compared")
    ap.add_argument("--prompts", type=int, default=40)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--mixed", type=int, default=0, help="null studies of the mixed model at 14 and 20 profiles")
    ap.add_argument("--seed", type=int, default=21)
    a = ap.parse_args(argv)
    if (
        min(a.studies, a.full_studies, a.store_studies, a.check) < 0
        or a.prompts < 2
        or a.samples < 1
        or min(a.profiles) < 2
    ):
        print("error: --studies/--store-studies >= 0, --prompts >= 2, --samples >= 1, --profiles >= 2", file=sys.stderr)
        return 2
    if a.check:
        print(f"fast path vs analysis.task.estimates: largest p-value difference {check(8, a.check, a.seed):.2e}")
    for n in a.profiles:
        r = run_design(n, a.studies, a.full_studies, a.store_studies, a.prompts, a.samples, a.seed + n)
        parts = []
        for path, (q, raw, k) in r["share"].items():
            if k:
                se = math.sqrt(q * (1 - q) / k)
                parts.append(f"{path}: {q:.1%} (+-{se:.1%}) of {k} with q, {raw:.1%} with raw p")
        print(
            f"{n} profiles x {a.prompts} prompts x {a.samples} samples, family {r['family_size']:.0f} tests, "
            f"null studies naming an effect: " + "; ".join(parts) + f" ({r['seconds']:.0f} s)"
        )
    for n in (14, 20) if a.mixed else ():
        m = mixed_null(n, a.mixed, a.seed + 100 + n)
        print(
            f"mixed model, {n} profiles: any BH discovery in {m['any_hit_t']:.1%} of {m['studies']} null studies "
            f"with t({n - 11}) tests (normal reference of the same fits: {m['any_hit_normal']:.1%})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
