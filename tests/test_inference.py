"""Inference at the right unit: two-way (models x prompts) intervals, coverage and FDR on
simulated small studies, per-profile regressions, power, and "underpowered" findings.

The simulations are vectorised (one call of `two_way` runs every study) and take well under a second.
Planted structure of a simulated study, per prompt p and model u of the compared group:
    reference (one vanilla model): 0.3 + b_p + e
    group:                         0.3 + delta + a_u + b_p + c_p + e
with model effects a_u ~ N(0, sd_model), prompt effects b_p (shared, cancel in the pairing), prompt x
condition effects c_p ~ N(0, sd_prompt) and per-prompt noise e (generation).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from value_harms.analysis import compare_baselines, load_results, mitigation_effects, value_regressions
from value_harms.analysis import inference as I
from value_harms.analysis.report.document import write_report
from value_harms.analysis.report.findings import top_findings
from value_harms.core.values import VALUE_TO_KEY, VALUES

STUDIES = 2000
# Binomial Monte-Carlo error of a 95% coverage over 2000 studies: sd 0.005, so 93-97% is +-4 sd.


def simulate(rng, studies, models, prompts, delta, sd_model=0.04, sd_prompt=0.03, sd_noise=0.1):
    b = rng.normal(0, 0.1, (studies, 1, prompts))
    ref = 0.3 + b + rng.normal(0, sd_noise, (studies, 1, prompts))
    grp = (
        0.3
        + delta
        + b
        + rng.normal(0, sd_model, (studies, models, 1))
        + rng.normal(0, sd_prompt, (studies, 1, prompts))
        + rng.normal(0, sd_noise, (studies, models, prompts))
    )
    return grp, ref


@pytest.mark.parametrize("models,prompts,delta", [(4, 20, 0.03), (6, 40, 0.0), (3, 12, 0.05)])
def test_two_way_intervals_cover_planted_differences(models, prompts, delta):
    rng = np.random.default_rng(1400 + models)
    grp, ref = simulate(rng, STUDIES, models, prompts, delta)
    res = I.two_way(grp, ref)
    cover = np.mean((res["ci_low"] <= delta) & (delta <= res["ci_high"]))
    assert 0.93 <= cover <= 0.97, cover
    # The old model-level t on per-model means ignores prompt sampling: it covers far less often
    # when the prompt x condition effect is real (here with 4+ models).
    means = grp.mean(-1)
    from scipy import stats as sps

    se = means.std(-1, ddof=1) / np.sqrt(models)
    q = sps.t.ppf(0.975, models - 1)
    naive = np.abs(means.mean(-1) - ref.mean((-1, -2)) - delta) <= q * se
    assert naive.mean() < 0.9


def test_two_way_mitigation_deltas_cover():
    """One-sample form: per-unit, per-prompt deltas (mitigated - unmitigated) with model and prompt effects."""
    rng = np.random.default_rng(7)
    for models, prompts, delta in [(5, 30, -0.02), (8, 15, 0.0)]:
        d = (
            delta
            + rng.normal(0, 0.03, (STUDIES, models, 1))
            + rng.normal(0, 0.04, (STUDIES, 1, prompts))
            + rng.normal(0, 0.08, (STUDIES, models, prompts))
        )
        res = I.two_way(d)
        cover = np.mean((res["ci_low"] <= delta) & (delta <= res["ci_high"]))
        assert 0.93 <= cover <= 0.97, (models, prompts, cover)


def test_bh_keeps_fdr_under_the_null():
    """10 null comparisons per study (one shared vanilla reference, so their p-values are dependent):
    BH at 0.05 rejects any in at most 5% of studies (the FDR under the complete null), MC error 0.005."""
    rng = np.random.default_rng(99)
    ps = []
    b = rng.normal(0, 0.1, (STUDIES, 1, 25))
    ref = 0.3 + b + rng.normal(0, 0.1, (STUDIES, 1, 25))
    for _ in range(10):
        grp = (
            0.3
            + b
            + rng.normal(0, 0.04, (STUDIES, 5, 1))
            + rng.normal(0, 0.03, (STUDIES, 1, 25))
            + rng.normal(0, 0.1, (STUDIES, 5, 25))
        )
        ps.append(I.two_way(grp, ref)["p"])
    ps = np.stack(ps, axis=1)
    any_rejected = np.array([multipletests(row, alpha=0.05, method="fdr_bh")[0].any() for row in ps])
    assert any_rejected.mean() <= 0.05 + 2 * 0.005, any_rejected.mean()
    assert np.mean(ps < 0.05) == pytest.approx(0.05, abs=0.01)  # the p-values are calibrated


# --------------------------------------------------------------------------------------------------
# Synthetic results with samples.jsonl


def _write(root: Path, profile: str, baseline: str, mitigation: str, scores: np.ndarray, values=None) -> None:
    """One RTP result (results.json + samples.jsonl) of `scores` (prompts x samples) in the store layout."""
    stage = "full" if baseline == "vim" else "none"
    store = root / "eval" / "tiny" / baseline / stage / profile / "rtp" / mitigation / f"fp{profile}{mitigation}"
    store.mkdir(parents=True)
    maxima = scores.max(1)
    result = {
        "schema_version": 2,
        "status": "complete",
        "benchmark": {
            "name": "rtp",
            "version": "1",
            "measure": "toxicity",
            "n_prompts": int(scores.shape[0]),
            "settings": {"toxicity_threshold": 0.5},
        },
        "model": {"name": "tiny"},
        "baseline": baseline,
        "stage": stage,
        "profile": {
            "name": profile,
            "kind": "vanilla" if values is None else "ess",
            "values": None if values is None else {VALUE_TO_KEY[v]: x for v, x in values.items()},
        },
        "mitigation": {"name": mitigation, "value_prompt": mitigation == "value_prompt", "disregard_values": []},
        "scorer": {
            "by_scorer": {"profanity_check": int(scores.size)},
            "missing": 0,
            "n": int(scores.size),
            "stand_in": True,
        },
        "metrics": {
            "overall": {
                "expected_max_toxicity": float(maxima.mean()),
                "toxicity_probability": float((maxima >= 0.5).mean()),
                "n_prompts": int(scores.shape[0]),
                "missing_prompts": 0,
            }
        },
    }
    (store / "results.json").write_text(json.dumps(result))
    (store / "samples.jsonl").write_text(
        "".join(
            json.dumps({"id": f"{p:04d}", "sample": k, "score": float(scores[p, k]), "label": None}) + "\n"
            for p in range(scores.shape[0])
            for k in range(scores.shape[1])
        )
    )


def _study(root: Path, models: int, prompts: int, samples: int, effect: float, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.05, 0.5, prompts)
    _write(root, "vanilla", "vanilla", "none", np.clip(base[:, None] + rng.normal(0, 0.05, (prompts, samples)), 0, 1))
    for u in range(models):
        vals = dict(zip(VALUES, rng.uniform(1, 6, len(VALUES)).round(2)))
        shift = effect + rng.normal(0, 0.01)
        for mit, d in (("none", 0.0), ("value_prompt", -effect)):
            s = base[:, None] + shift + d + rng.normal(0, 0.05, (prompts, samples))
            _write(root, f"p{u}", "vim", mit, np.clip(s, 0, 1), vals)
    return root


def _analyse(root: Path):
    df = load_results([root])
    pv = I.prompt_values(df)
    cmp = I.compare_prompt_level(compare_baselines(df), pv)
    mit = I.mitigation_prompt_level(mitigation_effects(df), pv)
    return df, pv, cmp, mit


def test_demo_sized_design_is_reported_underpowered(tmp_path):
    """The demo's shape (2 aligned models x 3 prompts x 2 samples, a real planted effect): no effect is
    named; each comparison says 'underpowered' with its design and minimum detectable effect."""
    df, pv, cmp, mit = _analyse(_study(tmp_path, models=2, prompts=3, samples=2, effect=0.1))
    assert set(pv["prompt"]) == {"0000", "0001", "0002"} and set(pv["samples"]) == {2}
    row = cmp[(cmp["baseline"] == "vim") & (cmp["metric"] == "expected_max_toxicity")].iloc[0]
    assert (row["n_models"], row["n_prompts"], row["n_samples"]) == (2, 3, 2) and not row["powered"]
    assert row["mde"] > 0 and row["diff_low"] < row["diff_vs_ref"] < row["diff_high"]
    findings = top_findings(None, cmp, mit, k=10)
    emt = [f for f in findings if "expected_max_toxicity" in f and "Value-aligned" in f]
    # the estimand's wording is the report's (findings.py); the design and the MDE are this module's
    assert emt and "RealToxicityPrompts expected_max_toxicity: underpowered (2 models x 3 prompts x 2 samples" in emt[0]
    assert "minimum detectable effect " in emt[0]
    assert all("underpowered" in f for f in findings), findings
    assert not any(" p " in f or "(p " in f for f in findings)
    paths = write_report(
        tmp_path / "report", reg=None, cmp=cmp, mit=mit, aln=None, fid=None, provenance={}, findings=findings
    )
    md = paths["report.md"].read_text()
    assert "two-way (models x prompts)" in md and "| n_models | n_prompts | n_samples | mde | powered |" in md


def test_adequate_design_names_the_effect_with_its_interval(tmp_path):
    df, pv, cmp, mit = _analyse(_study(tmp_path, models=6, prompts=40, samples=3, effect=0.08, seed=3))
    row = cmp[(cmp["baseline"] == "vim") & (cmp["metric"] == "expected_max_toxicity")].iloc[0]
    assert row["powered"] and row["p_value"] < 0.001 and row["diff_low"] > 0
    findings = top_findings(None, cmp, mit, k=10)
    assert any(
        f.startswith("Value-aligned models: RealToxicityPrompts expected_max_toxicity")
        and "95% CI +0." in f
        and "6 models x 40 prompts x 3 samples" in f
        for f in findings
    ), findings
    m = mit[(mit["baseline"] == "vim") & (mit["metric"] == "expected_max_toxicity")].iloc[0]
    assert m["powered"] and m["ci_high"] < 0 and m["test"].startswith("two-way paired")


def test_regression_counts_a_profile_once(tmp_path):
    """Three seeds of each of 14 profiles: 14 observations, not 42 (HC3 does not cluster)."""
    rng = np.random.default_rng(5)
    rows = []
    for i in range(14):
        vals = dict(zip(VALUES, rng.uniform(1, 6, len(VALUES))))
        for _seed in range(3):
            rows.append(
                {
                    "profile": f"p{i}",
                    "baseline": "vim",
                    "mitigation": "none",
                    "model": "m",
                    "stage": "full",
                    "benchmark": "rtp",
                    "category": "overall",
                    "metric": "expected_max_toxicity",
                    "value": 0.1 + 0.02 * vals["Power"] + rng.normal(0, 0.01),
                    "missing": 0.0,
                    **vals,
                }
            )
    reg = value_regressions(pd.DataFrame(rows))
    assert set(reg["n"]) == {14}


def test_power_mde_and_prompts_needed():
    # by level: the cell residual 0.01 = model x prompt 0.006 + sampling 0.004 (at the pilot's samples)
    vc = {"model": 0.0004, "prompt": 0.001, "interaction": 0.006, "sample": 0.004, "ref_cell": 0.004}
    vc["ref_sample"] = 0.004
    small, big = I.mde(vc, 5, 30), I.mde(vc, 5, 300)
    assert big < small
    n = I.prompts_needed(vc, 0.04, models=10)
    assert I.mde(vc, 10, n) <= 0.04 < I.mde(vc, 10, n - 1)
    # between-model variance alone exceeds the target with 3 models: no prompt count reaches it
    assert I.prompts_needed(vc, 0.01, models=3) is None
    # fewer samples per prompt than the pilot: more residual noise, larger MDE
    assert I.mde(vc, 5, 30, samples=5, pilot_samples=25) > small
    # components without the split (only a residual): nothing is known to shrink with samples
    old = {"model": 0.0004, "prompt": 0.001, "residual": 0.01}
    assert I.mde(old, 5, 30, samples=100, pilot_samples=2) == I.mde(old, 5, 30)


def test_power_command(tmp_path):
    root = _study(tmp_path, models=3, prompts=8, samples=2, effect=0.05)
    cmd = [
        sys.executable,
        "-m",
        "value_harms.power",
        str(root),
        "--models",
        "10",
        "--prompts",
        "200",
        "--target",
        "0.03",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "expected_max_toxicity" in out.stdout and "prompts_needed" in out.stdout and "mde" in out.stdout
    bad = subprocess.run(cmd[:5] + ["0", "--prompts", "200"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: --models=0")


def _mixed_frames(rng, n_profiles: int, n_prompts: int, sd_profile: float, value):
    """(profiles with random 1-6 intensities, their prompt-level RTP values): `value(intensities, prompt, u)` with
    u a profile's random intercept of sd `sd_profile`; drawn in the order profile, intercept, prompts."""
    prof, rows = [], []
    for i in range(n_profiles):
        vals = dict(zip(VALUES, rng.uniform(1, 6, len(VALUES))))
        prof.append({"profile": f"p{i}", **vals})
        u = rng.normal(0, sd_profile)
        for p in range(n_prompts):
            rows.append(
                {
                    "model": "m",
                    "stage": "full",
                    "baseline": "vim",
                    "profile": f"p{i}",
                    "mitigation": "none",
                    "benchmark": "rtp",
                    "metric": "expected_max_toxicity",
                    "prompt": f"{p}",
                    "value": value(vals, p, u),
                }
            )
    return pd.DataFrame(prof), pd.DataFrame(rows)


def test_mixed_model_regression_on_prompt_level_values():
    """analysis.regression_mixed: per-prompt values of 16 profiles x 12 prompts, Power planted at the
    profile level, prompt effects and a profile random intercept: Power is found, the others are not."""
    rng = np.random.default_rng(11)
    prompt_fx = rng.normal(0, 0.1, 12)
    prof, pv = _mixed_frames(
        rng, 16, 12, 0.005, lambda vals, p, u: 0.1 + 0.03 * vals["Power"] + u + prompt_fx[p] + rng.normal(0, 0.02)
    )
    out = I.value_regressions_mixed(prof, pv)
    power = out[out["term"] == "Power"].iloc[0]
    assert power["significant"] and power["ci_low"] < 0.03 < power["ci_high"]
    assert out[(out["term"] != "Intercept") & (out["term"] != "Power")]["significant"].sum() <= 1
    assert set(out["n"]) == {16} and set(out["n_prompts"]) == {12}


def test_mixed_model_tests_use_t_on_the_profiles_degrees_of_freedom():
    """The intensities vary between profiles only: a mixed-model coefficient is tested with t(profiles - 11), not
    MixedLM's normal reference (which named false effects in a third of null studies at 14 profiles). Null data
    of 14 profiles: p-values follow the t reference and nothing is significant after the family correction."""
    from scipy import stats as sps

    rng = np.random.default_rng(5)
    hits = 0
    for _study in range(6):
        prof, pv = _mixed_frames(rng, 14, 10, 0.03, lambda vals, p, u: 0.2 + u + rng.normal(0, 0.05))
        out = I.value_regressions_mixed(prof, pv)
        assert set(out["method"]) == {"MixedLM, random intercept per profile, prompt-centred; t(3) tests"}
        z = (out["coef"] / out["se"]).abs().to_numpy()
        assert np.allclose(out["p"], 2 * sps.t.sf(z, 3))
        hits += int(out["significant"].any())
    assert hits <= 1, f"{hits} of 6 null studies named an effect"
