"""One false-discovery-rate family over every test the report can headline, the contrasts that
isolate values, and honest small-n regressions.

Null studies come from perf/sim_null_studies.py (RTP-like: a vanilla model, N VIM profiles, the same N as
ICL personas, one benign control, each with and without the value prompt; no effect anywhere). The
estimates are those of analysis.task.estimates, the function analyze.py calls.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from value_harms.analysis.contrasts import flat_profiles, value_contrasts
from value_harms.analysis.multiplicity import apply_fdr, family_text, qvalues
from value_harms.analysis.report.document import write_report
from value_harms.analysis.report.findings import findings_detail, top_findings
from value_harms.analysis.task import estimates
from value_harms.errors import AnalysisError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))
import sim_null_studies as sim  # noqa: E402 - perf/ is not a package

SETTINGS = dict(sim.SETTINGS)


def test_qvalues_match_statsmodels_and_keep_nan():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.2, 40)
    for method, name in (("bh", "fdr_bh"), ("by", "fdr_by")):
        assert np.allclose(qvalues(p, method), multipletests(p, method=name)[1])
    q = qvalues([0.01, np.nan, 0.04])
    assert np.isnan(q[1]) and np.allclose(q[[0, 2]], multipletests([0.01, 0.04], method="fdr_bh")[1])
    with pytest.raises(AnalysisError, match="fdr_method"):
        qvalues(p, "holm")


def test_family_spans_every_source_and_leaves_out_intercepts_and_constants():
    reg = pd.DataFrame({"term": ["Intercept", "Power", "Power"], "p": [0.001, 0.01, np.nan]})
    reg.attrs["skipped"] = [{"reason": "x"}]
    cmp = pd.DataFrame({"baseline": ["vanilla", "vim", "icl"], "p_value": [np.nan, 0.02, 0.5]})
    mit = pd.DataFrame({"p_value": [0.03, 0.9], "constant": [False, True]})
    out, fam = apply_fdr({"regression": reg, "comparison": cmp, "mitigation": mit, "contrast": None})
    assert fam["size"] == 4 and fam["by_source"] == {"regression": 1, "comparison": 2, "mitigation": 1}
    expect = multipletests([0.01, 0.02, 0.5, 0.03], method="fdr_bh")[1]
    got = [out["regression"]["q"][1], *out["comparison"]["q"][1:], out["mitigation"]["q"][0]]
    assert np.allclose(got, expect)
    assert out["regression"]["q"].isna().tolist() == [True, False, True]
    assert out["regression"]["p_adj"][1] == out["regression"]["q"][1] and out["regression"].attrs["skipped"]
    assert "over a family of 4 test(s) (1 value-regression coefficients, 2 comparisons" in family_text(fam)
    with pytest.raises(AnalysisError, match="alpha"):
        apply_fdr({"comparison": cmp}, alpha=1.5)


def test_null_studies_rarely_name_an_effect():
    """150 null studies (8 profiles x 40 prompts x 3 samples): the report names an effect in <= 8% of them
    (goal 5%; perf/sim_null_studies.py measures 1,000 per design), and with raw p far more often."""
    r = sim.run_design(8, 150, 0, 0, 40, 3, seed=2021)
    q, raw, k = r["share"]["fast"]
    assert k == 150 and r["family_size"] == 18
    assert q <= 0.08, q
    assert raw >= 0.2, raw


def test_fast_path_equals_the_analysis_path():
    """The simulation's fast path gives the p-values and family of analysis.task.estimates exactly."""
    assert sim.check(6, 2, seed=5) < 1e-12


def _study(effect: float, profiles: int = 8, seed: int = 3) -> dict:
    study = sim.simulate(np.random.default_rng(seed), profiles, 40, 3, effect=effect)
    df, pv = sim.frames(study)
    return df, pv


def test_contrasts_isolate_values_and_lead_the_findings(tmp_path):
    """VIM raised by a planted effect: the contrasts against the benign control and against the same
    profiles as ICL personas (paired by profile) find it, and the findings lead with them."""
    df, pv = _study(effect=1.0)
    est = estimates(df, SETTINGS, pv=pv)
    con = est["con"].set_index(["metric", "contrast"])
    icl = con.loc[("expected_max_toxicity", "vim_vs_icl")]
    ctrl = con.loc[("expected_max_toxicity", "vim_vs_control")]
    assert icl["n_models"] == 8 and icl["powered"] and icl["estimate"] > 0 and icl["q"] <= 0.05
    assert ctrl["control"] == "benign/benign_alpaca" and ctrl["n_control"] == 1 and ctrl["ci_low"] > 0
    assert "paired by profile" in icl["estimand"] and "this control model" in ctrl["estimand"]
    found = findings_detail(est["reg"], est["cmp"], est["mit"], est["con"], k=5)
    assert found[0]["source"] == "contrast" and found[0]["named"]
    assert found[0]["text"].startswith("Value-aligned models vs ")
    assert any(f["named"] and "vs this vanilla model" in f["text"] for f in found)
    assert all(f"over {est['family']['size']} tests" in f["text"] for f in found if f["named"])
    paths = write_report(
        tmp_path,
        reg=est["reg"],
        cmp=est["cmp"],
        mit=est["mit"],
        con=est["con"],
        aln=None,
        fid=None,
        provenance={},
        findings=[f["text"] for f in found],
    )
    md = paths["report.md"].read_text()
    assert f"over a family of {est['family']['size']} test(s)" in md and "What the values add" in md
    assert "| p_value | q |" in md


def test_flat_profile_is_a_fine_tuning_control():
    df, pv = _study(effect=0.0)
    flat = df["profile"] == "p000"
    for v in sim.VALUES:
        df.loc[flat, v] = 3.0
    assert flat_profiles(df) == {"p000"}
    con = value_contrasts(df, pv, **{k: SETTINGS[k] for k in ("min_models", "min_prompts", "alpha")})
    ctrl = con[con["control"] == "vim/full flat profile"]
    assert len(ctrl) == 2 and set(ctrl["n_models"]) == {7} and set(ctrl["n_control"]) == {1}
    # the control is not a value-aligned model: it leaves the VIM group of every other estimate and stands
    # beside it (seen in the first study: the flat control pooled as the 15th "value-aligned" model)
    est = estimates(df, SETTINGS, pv=pv)
    cmp, mit, reg = est["cmp"], est["mit"], est["reg"]
    vim = cmp[cmp["baseline"] == "vim"]
    assert len(vim) and set(vim["n_models"]) == {7}
    assert set(cmp[cmp["baseline"] == "control"]["n_models"]) == {1}
    assert "control" in set(mit["baseline"]) and set(mit[mit["baseline"] == "vim"]["n_models"]) <= {7}
    assert len(reg) == 0  # 7 value-aligned profiles: too few for a fit (13 needed), the control does not help
    # with enough profiles the fit is over the value-aligned ones only: n counts 15, not the control's 16th
    df16, pv16 = _study(effect=0.0, profiles=16)
    ctrl16 = df16["profile"] == "p000"
    for v in sim.VALUES:
        df16.loc[ctrl16, v] = 3.0
    reg16 = estimates(df16, SETTINGS, pv=pv16)["reg"]
    assert len(reg16) and set(reg16["n"]) == {15}


def test_constant_metric_and_vanilla_mitigation_notes():
    """A metric without variance says so instead of 'minimum detectable effect 0.000'; a vanilla
    mitigation delta needs only the prompt minimum (one fixed model)."""
    base = dict(model="m", benchmark="beavertails", metric="flagged_rate", category="overall")
    cmp = pd.DataFrame(
        [
            {**base, "baseline": "vanilla", "mean": 1.0, "p_value": np.nan},
            {**base, "baseline": "vim", "mean": 1.0, "diff_vs_ref": 0.0, "p_value": np.nan, "se": 0.0, "mde": 0.0},
        ]
    )
    cmp = cmp.assign(powered=False, n_models=2, n_prompts=3, n_samples=1, min_models=5, min_prompts=30)
    mit = pd.DataFrame(
        [
            {**base, "baseline": "vanilla", "mitigation": "value_prompt", "delta_mean": -0.1, "ci_low": -0.3}
            | {"ci_high": 0.1, "p_value": 0.3, "se": 0.05, "mde": 0.2, "powered": False, "n_models": 1}
            | {"n_prompts": 3, "n_samples": 2, "min_models": 5, "min_prompts": 30, "constant": False}
        ]
    )
    f = top_findings(None, cmp, mit, k=5)
    assert (
        "Value-aligned models vs this vanilla model on BeaverTails flagged_rate: the metric is constant here "
        "(1.000 everywhere); nothing can be estimated." in f
    )
    note = [s for s in f if s.startswith("value_prompt on BeaverTails flagged_rate within this vanilla model")]
    assert note and "a finding needs >= 30 prompts (one fixed model)" in note[0] and "5 models" not in note[0]
    assert not any("minimum detectable effect 0.000" in s for s in f)


def test_small_regressions_are_underpowered_and_skips_are_listed(tmp_path):
    """20 profiles: fitted, labelled underpowered with the minimum detectable slopes, never headlined;
    8 profiles: nothing fitted, and the report says why."""
    df, pv = _study(effect=0.0, profiles=20, seed=8)
    est = estimates(df, SETTINGS, pv=pv)
    reg = est["reg"]
    terms = reg[reg["term"] != "Intercept"]
    assert not terms["powered"].any() and (terms["df_resid"] == 9).all() and (terms["mde"] > 0).all()
    assert np.isfinite(terms["cond_index"]).all() and (terms["vif"] >= 1).all()
    found = top_findings(reg, None, None, k=5)
    assert any(
        s.startswith("Value regressions across the value-aligned models' profiles (RealToxicityPrompts ")
        and "underpowered (20 profiles, 9 residual df; a finding needs >= 40 profiles); minimum detectable slope" in s
        for s in found
    ), found
    df8, pv8 = _study(effect=0.0, profiles=8)
    reg8 = estimates(df8, SETTINGS, pv=pv8)["reg"]
    assert reg8.empty and "8 profiles < 11 parameters + 2" in reg8.attrs["skipped"][0]["reason"]
    assert top_findings(reg8, None, None)[0].startswith("No value regression was fitted (2 skipped: 8 profiles")
    md = write_report(tmp_path, reg=reg8, cmp=None, mit=None, aln=None, fid=None, provenance={}, findings=[])
    assert "2 regression(s) were not fitted: RealToxicityPrompts overall expected_max_toxicity: 8 profiles" in (
        md["report.md"].read_text()
    )
    icl_only = estimates(df8[df8["baseline"] != "vim"], SETTINGS, pv=pv8[pv8["baseline"] != "vim"])["reg"]
    assert "no results of variant 'vim'" in icl_only.attrs["skipped"][0]["reason"]
