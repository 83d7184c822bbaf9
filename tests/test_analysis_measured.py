"""Harms regressed on each model's measured values as well as its target values, and how far value
injection took hold per model (analysis.injection).

Synthetic stored records, written like tests/test_analysis_stats.py writes them: 45 VIM profiles with
seeded random target intensities, each evaluated (results.json naming its training key) and checked
(train_result.json with an `alignment` block). The measured values are drawn independently of the targets
and the harm is planted on the measured Power:
    harm = 0.2 + 0.05 * measured Power + N(0, 0.02)     (category "hate")
Two models lack a usable alignment result (p043: no training key; p044: no check), and p000 has a second
training (another key, other scores) that its evaluation did not use.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_analysis_stats import flag_metrics, random_profiles, result_dict, write_store

from value_harms.alignment.shift import summary_scalars
from value_harms.analysis import load_results, value_regressions
from value_harms.analysis.inference import PV_COLUMNS
from value_harms.analysis.injection import (
    INJECTION_COLUMNS,
    harm_regressions,
    injection_table,
    join_measured,
    lift_interval,
    measured_values,
    read_checks,
    verdict,
)
from value_harms.analysis.multiplicity import qvalues
from value_harms.analysis.report.alignment import injection_section
from value_harms.analysis.report.document import write_report
from value_harms.analysis.report.findings import top_findings
from value_harms.analysis.report.page import Page
from value_harms.analysis.stats import INTERCEPT, REGRESSION_COLUMNS
from value_harms.analysis.task import estimates
from value_harms.core.values import VALUE_TO_KEY, VALUES
from value_harms.errors import AnalysisError

N = 45
SEED = 20260611


def train_result(
    root: Path, profile: str, values: dict | None, key: str, expected: dict, *, stage: str = "full", rows=None
):
    """A stored train_result.json with its alignment check (store copy, as the train task writes it);
    `rows`: its per-item rows (item, value, expected), as the alignment check stores them."""
    store = root / "store" / "train" / "tiny" / stage / profile / key
    store.mkdir(parents=True, exist_ok=True)
    target = {v: 3.5 for v in VALUES} if values is None else values
    data = {
        "schema_version": 2,
        "train_key": key,
        "model": "tiny",
        "stage": stage,
        "profile": {
            "name": profile,
            "kind": "vanilla" if values is None else "ess",
            "anchor": None,
            "rank": 1,
            "values": None if values is None else {VALUE_TO_KEY[v]: x for v, x in values.items()},
        },
        "store_dir": str(store),
        "alignment": {
            "expected": expected,
            "target": target,
            "greedy": dict.fromkeys(VALUES, 1.0),
            "collapsed": True,
            "nmse_expected": 0.1,
            "n_items": 40,
            **({"rows": rows} if rows is not None else {}),
        },
    }
    (store / "train_result.json").write_text(json.dumps(data))
    return data


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("measured")
    rng = np.random.default_rng(SEED)
    profiles = random_profiles(rng, N)
    measured = {}
    for i, (name, vals) in enumerate(profiles):
        key = None if i == N - 2 else f"k{i:03d}"
        m = dict(zip(VALUES, rng.uniform(2.0, 4.5, len(VALUES)).round(4)))
        measured[name] = m
        hate = 0.2 + 0.05 * m["Power"] + rng.normal(0.0, 0.02)
        data = result_dict(name, vals, baseline="vim", metrics=flag_metrics({"hate": hate, "other": 0.3}))
        write_store(root / "ev", {**data, "train_key": key}, f"ev{i:03d}")
        if i < N - 2:
            train_result(root / "tr", name, vals, key, m)
    # p000's other training (another key): its evaluation did not use it
    train_result(root / "tr", "p000", profiles[0][1], "other000", dict.fromkeys(VALUES, 5.0))
    train_result(root / "tr", "vanilla", None, "van", dict.fromkeys(VALUES, 3.0), stage="none")
    van = result_dict("vanilla", None, baseline="vanilla", metrics=flag_metrics({"hate": 0.3, "other": 0.3}))
    write_store(root / "ev", van, "evvan")
    df = load_results([str(root / "ev")])
    checks = read_checks([str(root / "tr")])
    return {"root": root, "df": df, "checks": checks, "measured": measured_values(checks), "truth": measured}


def test_measured_values_are_joined_by_training_key_and_missing_models_counted(store):
    assert len(store["checks"]) == N - 2 + 2  # 43 checked models, p000's other training, vanilla
    joined, note = join_measured(store["df"], store["measured"])
    got = joined[joined["profile"] == "p000"][list(VALUES)].drop_duplicates()
    assert len(got) == 1 and got.iloc[0].to_dict() == pytest.approx(store["truth"]["p000"]), "key k000, not other000"
    assert set(joined["profile"]) == {f"p{i:03d}" for i in range(N - 2)}
    assert joined[list(VALUES)].notna().all().all()
    assert "\n" not in note and "2 of 45 vim model(s) have no usable alignment result" in note
    assert "p043 (no training key)" in note and "p044 (no alignment result for training key k044)" in note
    assert "never imputed" in note


def test_measured_regression_recovers_the_planted_effect_beside_the_target_one(store):
    reg = harm_regressions(store["df"], measured=store["measured"], min_profiles=40)
    assert list(reg.columns) == [*REGRESSION_COLUMNS, "regressors"]
    meas, targ = reg[reg["regressors"] == "measured"], reg[reg["regressors"] == "target"]
    assert set(meas["n"]) == {N - 2} and set(targ["n"]) == {N}, "the two models without a check are left out"
    hate = meas[(meas["category"] == "hate")].set_index("term")
    assert hate.loc["Power", "significant"] and hate.loc["Power", "coef"] == pytest.approx(0.05, abs=0.01)
    assert hate.loc["Power", "vif"] > 0 and np.isfinite(hate["cond_index"]).all() and hate["powered"].all()
    assert not targ[(targ["category"] == "hate") & (targ["term"] == "Power")]["significant"].any()
    assert "2 of 45" in reg.attrs["measured_note"]
    assert reg.attrs["family_size"] == int((reg["term"] != INTERCEPT).sum())
    # the same rule of minimum profiles: 43 measured profiles are underpowered under a minimum of 44
    reg44 = harm_regressions(store["df"], measured=store["measured"], min_profiles=44)
    assert not reg44[reg44["regressors"] == "measured"]["powered"].any()
    assert reg44[reg44["regressors"] == "target"]["powered"].all()
    # measured alone, standardized: the same fits in SD units, the same tests
    only = harm_regressions(store["df"], regress_on=["measured"], measured=store["measured"], standardize=True)
    assert set(only["regressors"]) == {"measured"} and only["standardized"].all() and set(only["n"]) == {N - 2}
    same = only.set_index(["category", "term"])["t"]
    assert np.allclose(
        same.drop("Intercept", level="term"), meas.set_index(["category", "term"])["t"].drop("Intercept", level="term")
    )


def test_regressors_are_averaged_per_profile_over_its_trainings(store):
    """Two trainings of one profile (seeds) measure different values: one observation per profile, with the
    mean of both the outcome and the measured values."""
    df = store["df"]
    twin = df[df["profile"] == "p001"].assign(train_key="other000", result_id="twin", value=0.9)
    joined, _ = join_measured(pd.concat([df, twin], ignore_index=True), store["measured"])
    reg = value_regressions(joined, measured=True)
    assert set(reg["n"]) == {N - 2}
    one = joined[(joined["profile"] == "p001") & (joined["category"] == "hate")]
    assert sorted(one["Power"]) == pytest.approx(sorted([store["truth"]["p001"]["Power"], 5.0]))


def _estimates(store, regress_on):
    a = {"regress_on": regress_on, "min_regression_profiles": 40}
    return estimates(store["df"], a, pv=pd.DataFrame(columns=list(PV_COLUMNS)), measured=store["measured"])


def test_fdr_family_holds_the_measured_tests(store):
    est = _estimates(store, ["target", "measured"])
    reg, fam = est["reg"], est["family"]
    tests = reg[(reg["term"] != INTERCEPT) & reg["p"].notna()]
    assert (tests["regressors"] == "measured").sum() == (tests["regressors"] == "target").sum() == 2 * 10
    assert fam["by_source"]["regression"] == len(tests) == 40 and tests["q"].notna().all()
    # one family: every test's q is the step-up q over all of them, measured and target alike
    members = [(f, col) for f, col in ((reg, "p"), (est["cmp"], "p_value"), (est["mit"], "p_value"))]
    members += [(est["con"], "p_value")]
    p = np.concatenate([f.loc[f["q"].notna(), col].to_numpy(float) for f, col in members if "q" in f])
    q = np.concatenate([f.loc[f["q"].notna(), "q"].to_numpy(float) for f, col in members if "q" in f])
    assert fam["size"] == len(p) >= 40 and np.allclose(q, qvalues(p))


def test_regress_on_target_alone_is_the_regression_of_before(store):
    """[target] gives value_regressions' frame exactly: same columns, values, family; measured ignored."""
    before = value_regressions(store["df"], min_profiles=40)
    now = harm_regressions(store["df"], regress_on=["target"], measured=store["measured"], min_profiles=40)
    pd.testing.assert_frame_equal(now, before)
    assert now.attrs == before.attrs
    est_t = _estimates(store, ["target"])
    est_plain = estimates(store["df"], {"min_regression_profiles": 40}, pv=pd.DataFrame(columns=list(PV_COLUMNS)))
    pd.testing.assert_frame_equal(est_t["reg"], est_plain["reg"])
    assert est_t["family"] == est_plain["family"] and "regressors" not in est_t["reg"]
    # measured asked with no alignment result: the target regression, said in one log line
    none = harm_regressions(store["df"], measured=pd.DataFrame(columns=["train_key", *VALUES]), min_profiles=40)
    pd.testing.assert_frame_equal(none, before)


@pytest.mark.parametrize("bad", [[], ["measure"], ["target", "values"]])
def test_bad_regress_on_is_a_one_line_error(store, bad):
    with pytest.raises(AnalysisError) as err:
        harm_regressions(store["df"], regress_on=bad, measured=store["measured"])
    assert "\n" not in str(err.value) and "analysis.regress_on" in str(err.value)


# --------------------------------------------------------------------------------------------------
# How far injection took hold


def test_verdict_rule():
    assert [verdict(x) for x in (0.5, 0.8, 0.4999, 1e-9, 0.0, -0.3)] == [
        "took hold",
        "took hold",
        "partly",
        "partly",
        "did not",
        "did not",
    ]
    assert verdict(None) == verdict(math.nan) == "unknown"


def _peak(value: str, hi: float, lo: float = 3.0) -> dict:
    return {v: (hi if v == value else lo) for v in VALUES}


def test_injection_table_verdicts_follow_the_rule(tmp_path):
    pow_target = _peak("Power", 6.0, 1.0)
    train_result(tmp_path, "vanilla", None, "van", dict.fromkeys(VALUES, 3.0), stage="none")
    cases = {
        "hold": (pow_target, _peak("Power", 3.8)),  # lift 0.8
        "part": (pow_target, _peak("Power", 3.2)),  # lift 0.2
        "zero": (pow_target, dict.fromkeys(VALUES, 3.0)),  # lift 0
        "down": (pow_target, _peak("Power", 2.0)),  # lift < 0
        "flat": (dict.fromkeys(VALUES, 2.0), _peak("Power", 4.0)),  # no value to lift
    }
    for i, (name, (target, expected)) in enumerate(cases.items()):
        train_result(tmp_path, name, target, f"t{i}", expected)
    evaluated = pd.DataFrame(
        [{"model": "tiny", "stage": "full", "profile": "nocheck", "train_key": "t9", "baseline": "vim"}]
    )
    inj = injection_table(read_checks([str(tmp_path)]), evaluated).set_index("profile")
    assert list(inj.reset_index().columns) == list(INJECTION_COLUMNS)
    assert inj.loc["hold", "target_lift"] == pytest.approx(0.8) and inj.loc["part", "target_lift"] == pytest.approx(0.2)
    assert inj["verdict"].to_dict() == {
        "down": "did not",
        "flat": "unknown",
        "hold": "took hold",
        "nocheck": "unknown",
        "part": "partly",
        "zero": "did not",
    }
    assert inj.loc["flat", "note"].startswith("flat target") and inj.loc["nocheck", "note"] == "no alignment result"
    assert inj.loc["hold", "target_values"] == "Power" and "vanilla" not in inj.index


def _rows(per_value: dict[str, list[float]]) -> list[dict]:
    """Per-item rows, items numbered across values in VALUES order; `expected` of the check = their means."""
    out, i = [], 1
    for v in VALUES:
        for x in per_value[v]:
            out.append({"item": i, "value": v, "expected": x, "answer": 3, "text": "3"})
            i += 1
    return out


def _means(per_value: dict[str, list[float]]) -> dict[str, float]:
    return {v: float(np.mean(xs)) for v, xs in per_value.items()}


def test_lift_interval_tells_a_lift_the_items_agree_on_from_one_carried_by_one_item(tmp_path):
    """The verdict reads the lift's interval over the PVQ items: a lift every Power item shows took hold; the
    same point lift carried by one item of four, with the other values' items scattered, cannot be told;
    the point rule stays for checks without per-item rows."""
    rng = np.random.default_rng(3)
    base = {v: list(rng.uniform(2.5, 3.5, 4)) for v in VALUES}
    pow_target = _peak("Power", 6.0, 1.0)
    train_result(tmp_path, "vanilla", None, "van", _means(base), stage="none", rows=_rows(base))
    agree = {v: [x + (1.0 if v == "Power" else 0.0) for x in xs] for v, xs in base.items()}
    noise = {v: [x + rng.normal(0, 0.8) for x in xs] for v, xs in base.items()}
    noise["Power"] = [base["Power"][0] + 4.0, *base["Power"][1:]]
    flat = {v: list(xs) for v, xs in base.items()}
    for name, per_value, key in (("agree", agree, "k1"), ("one_item", noise, "k2"), ("same", flat, "k3")):
        train_result(tmp_path, name, pow_target, key, _means(per_value), rows=_rows(per_value))
    train_result(tmp_path, "no_rows", pow_target, "k4", _means(agree))
    inj = injection_table(read_checks([str(tmp_path)])).set_index("profile")
    for name in ("agree", "one_item", "same"):
        low, lift, high = inj.loc[name, ["lift_low", "target_lift", "lift_high"]]
        assert low <= lift <= high, name
    assert inj.loc["agree", "target_lift"] == pytest.approx(1.0)  # Power +1 on every item, the other nine 0
    assert inj.loc["agree", "lift_low"] == pytest.approx(inj.loc["agree", "target_lift"])  # every item agrees
    assert inj.loc["one_item", "target_lift"] >= 0.5 and inj.loc["one_item", "lift_low"] <= 0
    assert inj["verdict"].to_dict() == {
        "agree": "took hold",
        "one_item": "cannot tell",
        "same": "did not",  # lift 0 on every replicate
        "no_rows": "took hold",  # the point rule: no items, no interval
    }
    assert math.isnan(inj.loc["no_rows", "lift_low"])
    # unpaired items (a check on another item set) give no interval rather than a wrong one
    assert lift_interval([(1, "Power", 4.0)], [(2, "Power", 3.0)], ["Power"]) is None


def test_verdict_with_an_interval():
    assert verdict(0.8, 0.1, 1.5) == "took hold"
    assert verdict(0.3, 0.1, 0.5) == "partly"
    assert verdict(0.8, -0.1, 1.7) == verdict(-0.2, -0.9, 0.4) == "cannot tell"
    assert verdict(-0.4, -0.9, 0.0) == verdict(0.0, 0.0, 0.0) == "did not"
    assert verdict(None, 0.1, 0.2) == "unknown"


def test_injection_figures_equal_alignment_shift(tmp_path):
    """Lift, Spearman and its gain restate alignment.shift's definitions (analysis may not import it)."""
    rng = np.random.default_rng(7)
    vanilla = dict(zip(VALUES, rng.uniform(2, 4, len(VALUES))))
    train_result(tmp_path, "vanilla", None, "van", vanilla, stage="none")
    runs = {}
    for i in range(6):
        target = dict(zip(VALUES, rng.choice([1.0, 2.0, 4.0, 6.0], len(VALUES))))
        runs[f"r{i}"] = train_result(tmp_path, f"r{i}", target, f"k{i}", dict(zip(VALUES, rng.uniform(1, 6, 10))))
    inj = injection_table(read_checks([str(tmp_path)])).set_index("profile")
    for name, data in runs.items():
        want = summary_scalars(data["alignment"], {"expected": vanilla})
        assert inj.loc[name, "spearman"] == pytest.approx(want["spearman_expected"])
        assert inj.loc[name, "spearman_gain"] == pytest.approx(want["spearman_gain"])
        assert inj.loc[name, "target_lift"] == pytest.approx(want.get("target_lift", math.nan), nan_ok=True)


def test_report_says_how_far_injection_took_hold_and_labels_measured_regressions(store, tmp_path):
    est = _estimates(store, ["target", "measured"])
    inj = injection_table(store["checks"], store["df"])
    # 43 checked models, p000's other training, p044 evaluated without a check (p043 has no training key)
    assert inj["verdict"].value_counts().to_dict() == {"took hold": 14, "partly": 6, "did not": 24, "unknown": 1}
    paths = write_report(
        tmp_path,
        reg=est["reg"],
        cmp=est["cmp"],
        mit=est["mit"],
        aln=None,
        fid=None,
        provenance={},
        findings=top_findings(est["reg"], est["cmp"], est["mit"], k=8, con=est["con"]),
        con=est["con"],
        family=est["family"],
        inj=inj,
    )
    md = paths["report.md"].read_text()
    assert "## Value injection: did it take hold?" in md
    assert "45 trained model(s): 14 took hold, 6 partly, 24 did not, 1 unknown" in md
    assert "took hold when the interval lies above 0 and lift >= 0.5" in md and "took hold in no model" not in md
    assert "| regressors |" in md and "(20 of its tests)" in md and "2 of 45 vim model(s)" in md
    assert (
        "Power raises hate flagged_rate on bench across the value-aligned models' profiles on their measured PVQ values"
        in md
    )
    assert "Value injection: did it take hold?" in paths["report.html"].read_text()
    page = Page("t", "figures")
    injection_section(page, inj[inj["verdict"] != "took hold"])
    assert "Value injection took hold in no model" in "\n".join(page.md)


def test_analyze_writes_injection_csv_and_both_regressions(store, compose, tmp_path):
    from value_harms.analysis.task import run_analyze

    root = store["root"]
    cfg = compose(
        "analyze",
        [
            "logger=none",
            f"paths.output_dir={tmp_path}",
            f"analysis.inputs=[{root / 'ev'}]",
            f"analysis.alignment_inputs=[{root / 'tr'}]",
            f"analysis.auto_mitigation_file={tmp_path}/auto.json",
        ],
    )
    summary = run_analyze(cfg)
    out = Path(summary["report_html"]).parent
    inj = pd.read_csv(out / "injection.csv")
    assert len(inj) == N and set(inj["verdict"]) == {"took hold", "partly", "did not", "unknown"}
    reg = pd.read_csv(out / "regressions.csv")
    assert set(reg["regressors"]) == {"target", "measured"}
    assert summary["family"]["by_source"]["regression"] == 40
    assert "on their measured PVQ values" in summary["findings"][0], "a named effect leads"
