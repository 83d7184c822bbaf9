"""Inference at the right unit (issue 14): intervals over models AND prompts, power, design minimums.

The study samples two things: models (value profiles of one base model) and prompts (a sample of a
benchmark); each prompt's value (e.g. the max toxicity over its samples) also carries generation
noise. A comparison that treats one of them as fixed is overconfident. Here each comparison is made on
the prompt-level values read from each result's `samples.jsonl`:

    Y[u, p] = value of unit (model / profile) u on prompt p, averaged over the results of that unit
              (generation seeds of one profile are one unit, never separate observations)

Two-way (models x prompts) estimator, paired on the prompts both sides share:
    estimate = mean over prompts of d_p,  d_p = mean_u G[u, p] - mean_u R[u, p]   (R absent: one-sample)
    variance = s2(d_p) / P                                          (prompts, incl. generation noise)
             + sum over sides with U >= 2 of  s2(unit means) / U - s2(residual) / (U P)
    (the last term removes the residual variance counted in both the prompt and the unit part:
    the two-way "pigeonhole" moment estimator). Degrees of freedom: Welch-Satterthwaite over the prompt
    part (P - 1) and each unit part (U - 1); a t interval and p-value. A single vanilla model is a fixed
    reference (there is one vanilla model, not a sample of them): it contributes prompt noise only.

`python -m value_harms.power` and `power_table` turn a pilot's variance components into the minimum
detectable effect of a planned design (profiles x prompts x samples) and the prompts a target needs.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from value_harms.analysis.design import POWER, design_se, mde, prompts_needed, two_way, variance_components
from value_harms.core.values import VALUES
from value_harms.metrics import PROMPT_VALUES

log = logging.getLogger(__name__)

__all__ = [
    "METHOD",
    "MIN_MODELS",
    "MIN_PROMPTS",
    "prompt_values",
    "two_way",
    "variance_components",
    "design_se",
    "mde",
    "prompts_needed",
    "compare_prompt_level",
    "mitigation_prompt_level",
    "power_table",
    "pooled_components",
]

METHOD = (
    "two-way (models x prompts) moment estimator, paired on shared prompts; Welch-Satterthwaite t "
    "interval; seeds of one profile averaged; vanilla is a fixed reference"
)
# The smallest design whose comparisons may headline a finding (analysis.min_models / min_prompts).
MIN_MODELS = 5
MIN_PROMPTS = 30

UNIT = ["model", "stage", "baseline", "profile"]


# --------------------------------------------------------------------------------------------------
# Prompt-level values from samples.jsonl


def _per_prompt(measure: str, rows: list[dict], threshold: float) -> dict[str, dict[str, tuple[float, int]]]:
    """{metric: {prompt id: (value, samples scored)}} of one result's samples (missing scores left out)."""
    by: dict[str, list] = {}
    for r in rows:
        s = r.get("score")
        if s is None or (isinstance(s, float) and math.isnan(s)):
            continue
        by.setdefault(str(r.get("id")), []).append(r)
    out: dict[str, dict[str, tuple[float, int]]] = {}
    for pid, rs in by.items():
        scores = np.asarray([float(r["score"]) for r in rs], dtype=float)
        n = int(scores.size)
        values = PROMPT_VALUES.get(measure)  # metrics.PROMPT_VALUES: one function per measure
        if values is None:
            continue
        vals = values(scores, [r.get("label") for r in rs], threshold)
        for k, v in vals.items():
            out.setdefault(k, {})[pid] = (v, n)
    return out


def prompt_values(df: pd.DataFrame) -> pd.DataFrame:
    """Per-prompt values of every result in the tidy table `df` (tidy.load_results), read from the
    `samples.jsonl` next to each result's results.json. Columns: result_id, model, stage, baseline,
    profile, mitigation, disregard, benchmark, metric, prompt, value, samples. Results without a
    readable samples file are left out (logged once with a count)."""
    cols = ["result_id", *UNIT, "mitigation", "disregard", "benchmark", "metric", "prompt", "value", "samples"]
    if df is None or df.empty:
        return pd.DataFrame(columns=cols)
    rows: list[dict[str, Any]] = []
    lacking: list[str] = []
    per = df[df["category"] == "overall"].drop_duplicates("result_id")
    for r in per.itertuples(index=False):
        path = Path(str(r.path)).with_name("samples.jsonl")
        try:
            samples = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except (OSError, ValueError):
            lacking.append(str(path))
            continue
        try:
            threshold = float(
                json.loads(Path(str(r.path)).read_text())["benchmark"]["settings"].get("toxicity_threshold", 0.5)
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            threshold = 0.5
        base = {
            "result_id": r.result_id,
            "model": r.model,
            "stage": r.stage,
            "baseline": r.baseline,
            "profile": r.profile,
            "mitigation": r.mitigation,
            "disregard": getattr(r, "disregard", ""),
            "benchmark": r.benchmark,
        }
        for metric, vals in _per_prompt(str(r.measure), samples, threshold).items():
            for pid, (v, n) in vals.items():
                rows.append({**base, "metric": metric, "prompt": pid, "value": v, "samples": n})
    if lacking:
        log.warning(
            "%d result(s) have no readable samples.jsonl (e.g. %s): their comparisons fall back to "
            "model-level tests that ignore prompt sampling",
            len(lacking),
            lacking[0],
        )
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------------------------------
# The two-way estimator (vectorised over leading axes: one call runs a whole simulation)


# --------------------------------------------------------------------------------------------------
# Variance components and power


# --------------------------------------------------------------------------------------------------
# Comparisons on prompt-level data


def _matrix(pv: pd.DataFrame) -> pd.DataFrame:
    """units (profile) x prompts, seeds / repeated results of a unit averaged."""
    return pv.pivot_table(index="profile", columns="prompt", values="value", aggfunc="mean")


def _paired(g: pd.DataFrame, r: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray | None]:
    mg = _matrix(g)
    if r is None:
        mg = mg.dropna(axis=1)
        return mg.to_numpy(dtype=float), None
    mr = _matrix(r)
    common = [c for c in mg.columns if c in mr.columns]
    both = pd.concat([mg[common], mr[common]]).dropna(axis=1)
    return mg[both.columns].to_numpy(dtype=float), mr[both.columns].to_numpy(dtype=float)


def _design_cols(G: np.ndarray, samples: float, powered: bool, m: float, res: dict, conf: float) -> dict:
    return {
        "n_models": int(G.shape[0]),
        "n_prompts": int(G.shape[1]),
        "n_samples": samples,
        "se": float(res["se"]),
        "df": float(res["df"]),
        "mde": m,
        "powered": bool(powered),
        "method": METHOD,
        "conf": conf,
    }


def pooled_components(pv: pd.DataFrame, reference: str = "vanilla") -> dict[tuple[str, str], dict[str, float]]:
    """Variance components per (benchmark, metric) averaged over the groups with >= 2 units (mitigation none)."""
    out: dict[tuple[str, str], list[dict[str, float]]] = {}
    sub = pv[pv["mitigation"] == "none"]
    for (_model, bench, metric), g in sub.groupby(["model", "benchmark", "metric"], sort=True, dropna=False):
        ref = g[g["baseline"] == reference]
        for (_b, _stage), gg in g[g["baseline"] != reference].groupby(["baseline", "stage"], dropna=False):
            G, R = _paired(gg, ref if len(ref) else None)
            if G.shape[0] >= 2 and G.shape[1] >= 2:
                out.setdefault((bench, metric), []).append(variance_components(G, R))
    return {
        k: {c: float(np.mean([v[c] for v in vs])) for c in ("model", "prompt", "residual")} for k, vs in out.items()
    }


def compare_prompt_level(
    cmp: pd.DataFrame,
    pv: pd.DataFrame,
    reference: str = "vanilla",
    conf: float = 0.95,
    min_models: int = MIN_MODELS,
    min_prompts: int = MIN_PROMPTS,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """stats.compare_baselines' frame with its intervals and p-values replaced by the two-way ones
    where prompt-level data exist: ci_low / ci_high of the group mean, diff_low / diff_high of the
    difference to the reference, p_value of that difference; plus the design (n_models, n_prompts,
    n_samples), se, df, mde (at 80% power), powered (the design meets min_models for a sampled group
    and min_prompts) and method. Rows without prompt-level data keep their model-level test and are
    marked not powered (prompts unaccounted for)."""
    # size: one statistical procedure end to end; its steps share the same grouped frames
    out = cmp.copy()
    for c, v in (
        ("diff_low", math.nan),
        ("diff_high", math.nan),
        ("n_models", math.nan),
        ("n_prompts", math.nan),
        ("n_samples", math.nan),
        ("se", math.nan),
        ("df", math.nan),
        ("mde", math.nan),
        ("powered", False),
        ("method", "model-level t (no prompt-level data)"),
    ):
        out[c] = v
    out["powered"] = out["powered"].astype(bool)
    out["min_models"], out["min_prompts"] = int(min_models), int(min_prompts)
    if out.empty or pv is None or pv.empty:
        return out
    pooled = pooled_components(pv, reference)
    for i, row in out.iterrows():
        sel = pv[
            (pv["model"] == row["model"])
            & (pv["benchmark"] == row["benchmark"])
            & (pv["metric"] == row["metric"])
            & (pv["mitigation"] == row.get("mitigation", "none"))
        ]
        g = sel[(sel["baseline"] == row["baseline"]) & (sel["stage"] == row["stage"])]
        if g.empty:
            continue
        ref = sel[sel["baseline"] == reference]
        samples = float(g["samples"].median())
        G1, _ = _paired(g, None)
        one = two_way(G1, None, conf) if G1.shape[1] >= 2 else None
        if one is not None:
            out.at[i, "ci_low"], out.at[i, "ci_high"] = float(one["ci_low"]), float(one["ci_high"])
        if row["baseline"] == reference or ref.empty:
            out.at[i, "n_models"], out.at[i, "n_prompts"] = G1.shape
            out.at[i, "n_samples"] = samples
            out.at[i, "method"] = METHOD
            continue
        G, R = _paired(g, ref)
        if G.shape[1] < 2:
            continue
        res = two_way(G, R, conf)
        vc = (
            variance_components(G, R)
            if G.shape[0] >= 2
            else pooled.get((row["benchmark"], row["metric"]), {"model": math.nan})
        )
        m = mde(vc, G.shape[0], G.shape[1], ref_models=R.shape[0], alpha=alpha)
        powered = G.shape[0] >= min_models and G.shape[1] >= min_prompts
        out.at[i, "diff_vs_ref"] = float(res["estimate"])
        out.at[i, "diff_low"], out.at[i, "diff_high"] = float(res["ci_low"]), float(res["ci_high"])
        out.at[i, "p_value"] = float(res["p"]) if np.isfinite(res["p"]) else None
        out.at[i, "test"] = "two-way t (models x prompts)"
        for k, v in _design_cols(G, samples, powered, m, res, conf).items():
            out.at[i, k] = v
    return out


def mitigation_prompt_level(
    mit: pd.DataFrame,
    pv: pd.DataFrame,
    reference: str = "none",
    conf: float = 0.95,
    min_models: int = MIN_MODELS,
    min_prompts: int = MIN_PROMPTS,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """stats.mitigation_effects' frame with two-way intervals of the mean delta (mitigated - unmitigated,
    paired by unit AND prompt) where prompt-level data exist; design columns as compare_prompt_level.
    A vanilla group is one fixed model: only min_prompts applies to it."""
    out = mit.copy()
    for c, v in (
        ("n_models", math.nan),
        ("n_prompts", math.nan),
        ("n_samples", math.nan),
        ("se", math.nan),
        ("df", math.nan),
        ("mde", math.nan),
        ("powered", False),
        ("method", "model-level paired t (no prompt-level data)"),
    ):
        out[c] = v
    out["powered"] = out["powered"].astype(bool)
    out["min_models"], out["min_prompts"] = int(min_models), int(min_prompts)
    if out.empty or pv is None or pv.empty:
        return out
    for i, row in out.iterrows():
        sel = pv[
            (pv["model"] == row["model"])
            & (pv["benchmark"] == row["benchmark"])
            & (pv["metric"] == row["metric"])
            & (pv["baseline"] == row["baseline"])
            & (pv["stage"] == row["stage"])
        ]
        t = sel[(sel["mitigation"] == row["mitigation"]) & (sel["disregard"] == row.get("disregard", ""))]
        r = sel[sel["mitigation"] == reference]
        if t.empty or r.empty:
            continue
        mt, mr = _matrix(t), _matrix(r)
        units = [u for u in mt.index if u in mr.index]
        prompts = [p for p in mt.columns if p in mr.columns]
        D = (mt.loc[units, prompts] - mr.loc[units, prompts]).dropna(axis=1).to_numpy(dtype=float)
        if D.shape[0] < 1 or D.shape[1] < 2:
            continue
        res = two_way(D, None, conf)
        vc = (
            variance_components(D)
            if D.shape[0] >= 2
            else {"model": 0.0, "prompt": float(D.var(ddof=1)), "residual": 0.0}
        )
        m = mde(vc, D.shape[0], D.shape[1], ref_models=0, alpha=alpha)
        fixed = str(row["baseline"]) == "vanilla"
        powered = (fixed or D.shape[0] >= min_models) and D.shape[1] >= min_prompts
        out.at[i, "mean_delta" if "mean_delta" in out else "delta_mean"] = float(res["estimate"])
        out.at[i, "ci_low"], out.at[i, "ci_high"] = float(res["ci_low"]), float(res["ci_high"])
        out.at[i, "p_value"] = float(res["p"]) if np.isfinite(res["p"]) else None
        out.at[i, "test"] = "two-way paired t (models x prompts)"
        for k, v in _design_cols(D, float(t["samples"].median()), powered, m, res, conf).items():
            out.at[i, k] = v
    return out


# --------------------------------------------------------------------------------------------------
# Power of a planned design


# --------------------------------------------------------------------------------------------------
# Mixed-model variant of the value regressions (analysis.regression_mixed)


def value_regressions_mixed(
    df: pd.DataFrame, pv: pd.DataFrame, *, baseline: str = "vim", alpha: float = 0.05
) -> pd.DataFrame:
    """Prompt-level value -> harm regressions: per (model, stage, benchmark, metric), a linear mixed model
    (statsmodels MixedLM, REML) of the per-prompt value on the 10 intensities with a random intercept
    per profile; prompt effects are removed first by centring each prompt's values (prompts are crossed
    with profiles, so their fixed effects are orthogonal to the profile-level intensities). Wald tests,
    Benjamini-Hochberg over all non-intercept terms. Columns as stats.REGRESSION_COLUMNS' core."""
    # size: one statistical procedure end to end (fit per group, then BH over the family)
    import warnings

    import statsmodels.api as sm
    from statsmodels.stats.multitest import multipletests

    cols = [
        "model",
        "stage",
        "benchmark",
        "category",
        "metric",
        "term",
        "coef",
        "se",
        "p",
        "p_adj",
        "significant",
        "ci_low",
        "ci_high",
        "n",
        "n_prompts",
        "method",
    ]
    sub = pv[(pv["baseline"] == baseline) & (pv["mitigation"] == "none")]
    if sub.empty:
        return pd.DataFrame(columns=cols)
    inten = df.drop_duplicates("profile").set_index("profile")[list(VALUES)]
    rows = []
    for (model, stage, bench, metric), g in sub.groupby(["model", "stage", "benchmark", "metric"], sort=True):
        g = g.groupby(["profile", "prompt"], as_index=False)["value"].mean()
        g = g[g["profile"].isin(inten.index)]
        n = g["profile"].nunique()
        if n < len(VALUES) + 2:
            continue
        y = (g["value"] - g.groupby("prompt")["value"].transform("mean")).to_numpy(dtype=float)
        X = sm.add_constant(inten.loc[g["profile"]].to_numpy(dtype=float), has_constant="add")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                res = sm.MixedLM(y, X, groups=g["profile"].to_numpy()).fit(reml=True)
            except (np.linalg.LinAlgError, ValueError) as exc:
                log.warning("mixed model for %s/%s not fitted: %s", bench, metric, exc)
                continue
        ci = np.asarray(res.conf_int(alpha=alpha))
        for j, term in enumerate(["Intercept", *VALUES]):
            rows.append(
                {
                    "model": model,
                    "stage": stage,
                    "benchmark": bench,
                    "category": "overall",
                    "metric": metric,
                    "term": term,
                    "coef": float(res.fe_params[j]),
                    "se": float(res.bse_fe[j]),
                    "p": float(res.pvalues[j]),
                    "p_adj": math.nan,
                    "significant": False,
                    "ci_low": float(ci[j, 0]),
                    "ci_high": float(ci[j, 1]),
                    "n": n,
                    "n_prompts": int(g["prompt"].nunique()),
                    "method": "MixedLM, random intercept per profile, prompt-centred",
                }
            )
    out = pd.DataFrame(rows, columns=cols)
    fam = (out["term"] != "Intercept") & np.isfinite(out["p"].to_numpy(dtype=float)) if len(out) else None
    if fam is not None and fam.any():
        _, p_adj, _, _ = multipletests(out.loc[fam, "p"].to_numpy(dtype=float), alpha=alpha, method="fdr_bh")
        out.loc[fam, "p_adj"] = p_adj
        out.loc[fam, "significant"] = p_adj < alpha
    return out


def power_table(
    pv: pd.DataFrame,
    *,
    models: int,
    prompts: int,
    samples: int | None = None,
    target: float | None = None,
    reference: str = "vanilla",
    alpha: float = 0.05,
    power: float = POWER,
) -> pd.DataFrame:
    """Per (benchmark, metric): the pilot's variance components (pooled_components), the MDE of a
    planned comparison of `models` profiles against the vanilla model on `prompts` prompts with
    `samples` samples each, and (with `target`) the prompts needed to detect it."""
    rows = []
    for (bench, metric), vc in pooled_components(pv, reference).items():
        pilot_samples = int(pv[(pv["benchmark"] == bench) & (pv["metric"] == metric)]["samples"].median())
        row = {
            "benchmark": bench,
            "metric": metric,
            "var_model": vc["model"],
            "var_prompt": vc["prompt"],
            "var_residual": vc["residual"],
            "pilot_samples": pilot_samples,
            "models": models,
            "prompts": prompts,
            "samples": samples or pilot_samples,
            "mde": mde(vc, models, prompts, samples, pilot_samples, 1, alpha, power),
        }
        if target is not None:
            row["target"] = target
            row["prompts_needed"] = prompts_needed(vc, target, models, samples, pilot_samples, 1, alpha, power)
        rows.append(row)
    return pd.DataFrame(rows)
