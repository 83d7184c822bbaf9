"""Analysis: tidy loading, comparability, value regressions, variant comparisons, mitigations.

Golden tests on synthetic results in the evaluate task's results.json format (written into tmp folders):
154 profiles with seeded random intensities in [1, 6] and a planted effect
    harm = 0.2 + 0.05 * Power + 0.04 * Stimulation + N(0, 0.02)   (category "hate")
    harm = 0.3 + N(0, 0.02)                                         (category "other")
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from value_harms.analysis import (
    TIDY_COLUMNS,
    auto_mitigation,
    check_comparable,
    compare_baselines,
    find_results,
    load_alignment,
    load_results,
    mitigation_effects,
    persona_fidelity,
    results_to_frame,
    value_regressions,
)
from value_harms.core.values import HIGHER_ORDER, VALUE_TO_KEY, VALUES
from value_harms.errors import AnalysisError

N_PROFILES = 154
BENCH = "bench"
METRIC = "flagged_rate"
PLANT_SEED = 20250611
NULL_SEEDS = range(100, 120)  # 20 consecutive seeds, not chosen by outcome


# --------------------------------------------------------------------------------------------------
# Synthetic results in the evaluation format


def result_dict(
    profile: str,
    values: dict[str, float] | None,
    *,
    baseline: str,
    metrics: dict,
    mitigation: str = "none",
    stage: str | None = None,
    benchmark: str = BENCH,
    version: str = "1",
    measure: str = "flag",
    by_scorer: dict | None = None,
    stand_in: bool = False,
    kind: str | None = None,
    model: str = "tiny",
) -> dict:
    stage = stage if stage is not None else ("full" if baseline == "vim" else "none")
    return {
        "schema_version": 2,
        "status": "complete",
        "benchmark": {
            "name": benchmark,
            "version": version,
            "measure": measure,
            "n_prompts": 100,
            "prompts_sha256": "x" * 64,
            "settings": {"name": benchmark},
        },
        "model": {
            "name": model,
            "base": "/models/tiny",
            "revision": None,
            "dtype": "float32",
            "adapter_dir": None,
            "adapter_sha256": None,
        },
        "profile": {
            "name": profile,
            "kind": kind or ("vanilla" if values is None else "ess"),
            "anchor": None if values is None else "Pow",
            "rank": 1,
            "values": None if values is None else {VALUE_TO_KEY[v]: float(values[v]) for v in VALUES},
        },
        "baseline": baseline,
        "stage": stage,
        "mitigation": {
            "name": mitigation,
            "safety_prompt": False,
            "value_prompt": mitigation == "value_prompt",
            "disregard_values": ["Power", "Stimulation"] if mitigation == "value_prompt" else [],
        },
        "prefix": "",
        "generation": {"seed": 0},
        "scorer": {
            "measure": measure,
            "provenance": {"stand_in": stand_in},
            "by_scorer": by_scorer if by_scorer is not None else {"llm_judge": 100},
            "missing": 0,
            "n": 100,
            "stand_in": stand_in,
        },
        "metrics": metrics,
        "seeds": {"generation": 0, "benchmark": 0},
        "git": "abc",
        "seconds": 1.0,
    }


def flag_metrics(per_cat: dict[str, float], missing: int = 0) -> dict:
    """metrics block of a flag benchmark: overall = mean of the categories."""
    out = {c: {METRIC: v, "n": 50 - missing, "missing": missing} for c, v in per_cat.items()}
    out["overall"] = {METRIC: float(np.mean(list(per_cat.values()))), "n": 100 - 2 * missing, "missing": 2 * missing}
    return out


def write_store(root: Path, data: dict, fp: str, run_copy: Path | None = None) -> Path:
    """Write a result where the evaluate task would (store copy without store_dir), and optionally its
    run-folder copy (with store_dir / run_dir / skipped)."""
    store = (
        root
        / "store"
        / "eval"
        / data["model"]["name"]
        / data["baseline"]
        / data["stage"]
        / data["profile"]["name"]
        / data["benchmark"]["name"]
        / data["mitigation"]["name"]
        / fp
    )
    store.mkdir(parents=True, exist_ok=True)
    (store / "results.json").write_text(json.dumps(data))
    if run_copy is not None:
        run_copy.mkdir(parents=True, exist_ok=True)
        (run_copy / "results.json").write_text(
            json.dumps({**data, "store_dir": str(store), "run_dir": str(run_copy), "skipped": False})
        )
    return store


def random_profiles(rng: np.random.Generator, n: int = N_PROFILES) -> list[tuple[str, dict[str, float]]]:
    return [(f"p{i:03d}", dict(zip(VALUES, rng.uniform(1.0, 6.0, size=len(VALUES)).round(3)))) for i in range(n)]


def planted_hate(v: dict[str, float], rng: np.random.Generator) -> float:
    return 0.2 + 0.05 * v["Power"] + 0.04 * v["Stimulation"] + rng.normal(0.0, 0.02)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict:
    """154 VIM profiles (none + value_prompt), vanilla, one benign model, 10 ICL personas, and run-folder
    copies of the first 5 VIM results."""
    root = tmp_path_factory.mktemp("planted")
    rng = np.random.default_rng(PLANT_SEED)
    profiles = random_profiles(rng)
    n_files = 0
    for i, (name, vals) in enumerate(profiles):
        hate, other = planted_hate(vals, rng), 0.3 + rng.normal(0.0, 0.02)
        run = root / "runs" / f"2026_{i}" if i < 5 else None
        write_store(
            root,
            result_dict(
                name, vals, baseline="vim", metrics=flag_metrics({"hate": hate, "other": other}, missing=i % 3)
            ),
            f"fp{i:03d}n",
            run,
        )
        # value prompt: harm lower by 0.05 on average
        write_store(
            root,
            result_dict(
                name,
                vals,
                baseline="vim",
                mitigation="value_prompt",
                metrics=flag_metrics(
                    {"hate": hate - 0.05 + rng.normal(0, 0.01), "other": other - 0.05 + rng.normal(0, 0.01)}
                ),
            ),
            f"fp{i:03d}v",
        )
        n_files += 2 + (run is not None)
    write_store(
        root,
        result_dict("vanilla", None, baseline="vanilla", metrics=flag_metrics({"hate": 0.25, "other": 0.25})),
        "fpvan",
        root / "runs" / "van",
    )
    write_store(
        root,
        result_dict(
            "vanilla",
            None,
            baseline="vanilla",
            mitigation="value_prompt",
            metrics=flag_metrics({"hate": 0.22, "other": 0.24}),
        ),
        "fpvanv",
    )
    write_store(
        root,
        result_dict(
            "vanilla",
            None,
            baseline="benign",
            stage="benign_alpaca",
            metrics=flag_metrics({"hate": 0.3, "other": 0.28}),
        ),
        "fpben",
    )
    for name, vals in profiles[:10]:
        write_store(
            root,
            result_dict(
                name,
                vals,
                baseline="icl",
                metrics=flag_metrics({"hate": 0.26 + rng.normal(0, 0.02), "other": 0.25 + rng.normal(0, 0.02)}),
            ),
            f"icl{name}",
        )
    n_files += 4 + 10  # vanilla (+ its run copy), vanilla value_prompt, benign, 10 ICL
    return {"root": root, "profiles": profiles, "n_files": n_files, "n_results": 2 * N_PROFILES + 3 + 10}


@pytest.fixture(scope="module")
def planted_df(planted) -> pd.DataFrame:
    return load_results([str(planted["root"])])


# --------------------------------------------------------------------------------------------------
# Loading


def test_load_results_deduplicates_run_folder_copies(planted, planted_df):
    root = planted["root"]
    all_files = list(root.rglob("results.json"))
    assert len(all_files) == planted["n_files"] == planted["n_results"] + 6  # 5 VIM + 1 vanilla run copies
    files = find_results([str(root)])
    assert len(files) == planted["n_results"]
    assert all("store" in f.parts for f in files), "the store copy is the one kept"
    df = planted_df
    assert list(df.columns) == list(TIDY_COLUMNS)
    assert df["result_id"].nunique() == planted["n_results"]
    assert set(df["metric"]) == {METRIC}  # n / missing are counts, not metrics
    row = df[(df["profile"] == "p001") & (df["category"] == "hate") & (df["mitigation"] == "none")].iloc[0]
    name, vals = planted["profiles"][1]
    assert row["Power"] == pytest.approx(vals["Power"])
    assert row["Self-direction"] == pytest.approx(vals["Self-direction"])
    assert (row["scorer"], bool(row["stand_in"]), row["n"], row["missing"]) == ("llm_judge", False, 49.0, 1.0)
    assert (row["baseline"], row["stage"], row["model"], row["benchmark_version"]) == ("vim", "full", "tiny", "1")
    van = df[df["baseline"] == "vanilla"]
    assert van[list(VALUES)].isna().all().all()
    assert set(df[df["mitigation"] == "value_prompt"]["disregard"]) == {"Power+Stimulation"}


def test_find_results_glob_and_dedup_counts(planted):
    root = planted["root"]
    files = find_results(
        [str(root / "runs" / "*" / "results.json"), str(root / "store" / "eval" / "tiny" / "vim" / "full" / "p000")]
    )
    # 6 run copies name 6 distinct results; p000's store folder adds its value_prompt result (its 'none'
    # result is the run copy of runs/2026_0)
    assert len(files) == 7


def test_non_numeric_and_none_metrics(tmp_path):
    data = result_dict(
        "p",
        dict.fromkeys(VALUES, 2.0),
        baseline="vim",
        measure="regard",
        metrics={
            "overall": {
                "negative_regard_rate": None,
                "bias_score": 0.1,
                "bias_groups": 4,
                "note": "text",
                "n": 0,
                "missing": 10,
                "per_group": {"a": 1},
            }
        },
    )
    df = results_to_frame([(data, "id", tmp_path / "results.json")])
    assert set(df["metric"]) == {"negative_regard_rate", "bias_score"}
    nr = df[df["metric"] == "negative_regard_rate"].iloc[0]
    assert math.isnan(nr["value"]) and nr["missing"] == 10


def test_check_comparable_refuses_mixed_scorers(tmp_path):
    v = dict.fromkeys(VALUES, 3.0)
    write_store(
        tmp_path,
        result_dict("a", v, baseline="vim", metrics=flag_metrics({"hate": 0.1}), by_scorer={"perspective": 100}),
        "f1",
    )
    write_store(
        tmp_path,
        result_dict(
            "b",
            v,
            baseline="vim",
            metrics=flag_metrics({"hate": 0.2}),
            by_scorer={"perspective": 90, "profanity_check": 10},
            stand_in=True,
        ),
        "f2",
    )
    df = load_results([str(tmp_path)])
    assert set(df["scorer"]) == {"perspective", "perspective+profanity_check"}
    with pytest.raises(AnalysisError) as err:
        check_comparable(df)
    msg = str(err.value)
    assert "\n" not in msg
    for part in (
        BENCH,
        METRIC,
        "perspective (1 results)",
        "perspective+profanity_check (1 results)",
        "allow_mixed=true",
        "analysis.allow_mixed",
    ):
        assert part in msg, (part, msg)
    problems = check_comparable(df, allow_mixed=True)
    assert len(problems) == 1
    assert value_regressions(df, alpha=0.05).empty  # proceeds (too few rows to fit: skipped)


def test_check_comparable_refuses_mixed_versions_and_passes_clean(planted_df, tmp_path):
    assert check_comparable(planted_df) == []
    v = dict.fromkeys(VALUES, 3.0)
    write_store(tmp_path, result_dict("a", v, baseline="vim", metrics=flag_metrics({"hate": 0.1}), version="1"), "f1")
    write_store(tmp_path, result_dict("b", v, baseline="vim", metrics=flag_metrics({"hate": 0.2}), version="2"), "f2")
    with pytest.raises(AnalysisError, match=r"benchmark versions: 1 \(1 results\), 2 \(1 results\)"):
        check_comparable(load_results(str(tmp_path)))


# --------------------------------------------------------------------------------------------------
# Regressions


def test_regression_recovers_planted_effect(planted_df):
    reg, skipped = value_regressions(planted_df, return_skipped=True)
    assert skipped.empty
    # 3 categories (hate, other, overall) x 1 metric x 10 values in the BH family
    assert reg.attrs["family_size"] == 30
    hate = reg[reg["category"] == "hate"].set_index("term")
    assert hate.loc["Power", "significant"] and hate.loc["Stimulation", "significant"]
    assert hate.loc["Power", "coef"] == pytest.approx(0.05, abs=0.006)
    assert hate.loc["Stimulation", "coef"] == pytest.approx(0.04, abs=0.006)
    assert hate.loc["Intercept", "coef"] == pytest.approx(0.2, abs=0.05)
    assert hate.loc["Power", "ci_low"] < 0.05 < hate.loc["Power", "ci_high"]
    assert hate.loc["Power", "n"] == N_PROFILES and hate.loc["Power", "r2"] > 0.9
    assert hate.loc["Power", "failures"] == sum(i % 3 for i in range(N_PROFILES))
    others = [v for v in VALUES if v not in ("Power", "Stimulation")]
    assert not hate.loc[others, "significant"].any()
    other = reg[(reg["category"] == "other") & (reg["term"] != "Intercept")]
    assert not other["significant"].any()
    assert not reg["rank_deficient"].any()
    assert math.isnan(hate.loc["Intercept", "p_adj"])
    assert (reg.loc[reg["term"] != "Intercept", "p_adj"] >= reg.loc[reg["term"] != "Intercept", "p"] - 1e-12).all()


def test_standardized_coefficients_keep_signs_and_tests(planted_df):
    raw = value_regressions(planted_df)
    std = value_regressions(planted_df, standardize=True)
    slopes = raw["term"] != "Intercept"
    assert (np.sign(raw.loc[slopes, "coef"]).to_numpy() == np.sign(std.loc[slopes, "coef"]).to_numpy()).all()
    np.testing.assert_allclose(raw.loc[slopes, "p"], std.loc[slopes, "p"], rtol=1e-6)
    hate = std[std["category"] == "hate"].set_index("term")
    assert std["standardized"].all()
    assert 0 < hate.loc["Stimulation", "coef"] < hate.loc["Power", "coef"] < 1
    assert hate.loc["Intercept", "coef"] == pytest.approx(0.0, abs=1e-9)


def test_higher_order_regression(planted_df):
    reg = value_regressions(planted_df, higher_order=True)
    assert set(reg["term"]) == {"Intercept", *HIGHER_ORDER}
    hate = reg[reg["category"] == "hate"].set_index("term")
    assert hate.loc["Self-Enhancement", "coef"] > 0 and hate.loc["Self-Enhancement", "significant"]
    assert hate.loc["Openness_to_Change", "coef"] > 0 and hate.loc["Openness_to_Change", "significant"]
    assert reg.attrs["family_size"] == 3 * 4


def null_frame(seed: int, categories=("c1", "c2", "c3", "c4")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    recs = []
    for name, vals in random_profiles(rng):
        data = result_dict(
            name,
            vals,
            baseline="vim",
            metrics={c: {METRIC: 0.3 + rng.normal(0, 0.02), "n": 50, "missing": 0} for c in categories},
        )
        recs.append((data, name, name))
    return results_to_frame(recs)


def test_null_false_discoveries_are_rare():
    """Pure noise: 4 categories x 10 values = 40 tests per data set, BH at alpha 0.05.

    Bound: under the complete null every discovery is false and BH's FDR equals P(any discovery) <= alpha
    (independent or positively dependent p-values); when BH rejects at all it mostly rejects one, so
    E[V] ~ alpha / (1 - alpha) ~ 0.053 per data set (a simulation with 40 independent uniform p-values
    gives 0.054). We allow about 5x that, mean V <= 0.25 over 20 consecutive seeds, for the dependence
    between the coefficients of one model and HC3's slightly liberal small-sample tests; and at most 4
    of the 20 data sets with any discovery (expected 1; Binomial(20, 0.05) >= 5 has probability 0.003).
    """
    counts = []
    for seed in NULL_SEEDS:
        reg = value_regressions(null_frame(seed))
        assert reg.attrs["family_size"] == 40
        counts.append(int(reg["significant"].sum()))
    assert np.mean(counts) <= 0.25, counts
    assert sum(c > 0 for c in counts) <= 4, counts
    if counts[0] == 0:
        assert auto_mitigation(value_regressions(null_frame(NULL_SEEDS[0])))["all"] == []


def test_too_few_rows_are_skipped_and_rank_deficiency_flagged():
    rng = np.random.default_rng(7)
    recs = []
    for i, (name, vals) in enumerate(random_profiles(rng, 30)):
        vals["Stimulation"] = vals["Power"]  # collinear columns
        recs.append(
            (
                result_dict(
                    name,
                    vals,
                    baseline="vim",
                    metrics={
                        "big": {METRIC: 0.3 + 0.05 * vals["Power"] + rng.normal(0, 0.02)},
                        **({"small": {METRIC: 0.3}} if i < 12 else {}),
                    },
                ),
                name,
                name,
            )
        )
    reg, skipped = value_regressions(results_to_frame(recs), return_skipped=True)
    assert list(skipped["category"]) == ["small"] and "12 profiles < 11 parameters + 2" in skipped["reason"][0]
    assert reg["rank_deficient"].all()
    # exact collinearity shows in the diagnostics too (infinite VIF and condition index)
    terms = reg[reg["term"] != "Intercept"]
    assert np.isinf(terms["cond_index"]).all() and np.isinf(terms.set_index("term").loc["Power", "vif"]).all()
    assert not terms["powered"].any() and (terms["df_resid"] == 30 - 10).all()  # n - rank
    big = reg[reg["category"] == "big"].set_index("term")
    # minimum-norm solution splits the effect between the two identical columns
    assert big.loc["Power", "coef"] + big.loc["Stimulation", "coef"] == pytest.approx(0.05, abs=0.01)


# --------------------------------------------------------------------------------------------------
# Variants, mitigations, auto mitigation, persona fidelity


def test_compare_baselines_planted_difference(planted_df):
    tab = compare_baselines(planted_df)
    assert {
        "benchmark",
        "metric",
        "baseline",
        "mean",
        "ci_low",
        "ci_high",
        "n",
        "diff_vs_ref",
        "p_value",
        "test",
    } <= set(tab.columns)
    t = tab.set_index("baseline")
    assert list(t.index) == ["vanilla", "vim", "benign", "icl"]
    assert t.loc["vanilla", "test"] == "reference" and t.loc["vanilla", "n"] == 1
    assert t.loc["vanilla", "mean"] == pytest.approx(0.25)
    assert t.loc["vim", "n"] == N_PROFILES
    assert t.loc["vim", "diff_vs_ref"] > 0.1 and t.loc["vim", "p_value"] < 1e-10
    assert t.loc["vim", "test"] == "one-sample t vs vanilla"
    assert t.loc["vim", "ci_low"] < t.loc["vim", "mean"] < t.loc["vim", "ci_high"]
    assert pd.isna(t.loc["benign", "p_value"]) and t.loc["benign", "stage"] == "benign_alpaca"
    assert t.loc["icl", "n"] == 10
    # several models on both sides: Welch
    vim_vs_icl = compare_baselines(planted_df, [(BENCH, METRIC)], reference="icl").set_index("baseline")
    assert vim_vs_icl.loc["vim", "test"] == "Welch t" and vim_vs_icl.loc["vim", "p_value"] < 1e-6


def test_mitigation_effects_planted_negative_delta(planted_df):
    eff = mitigation_effects(planted_df)
    vim = eff[(eff["baseline"] == "vim") & (eff["mitigation"] == "value_prompt")].iloc[0]
    assert vim["n"] == N_PROFILES and vim["disregard"] == "Power+Stimulation"
    assert vim["mean_delta"] == pytest.approx(-0.05, abs=0.005)
    assert vim["ci_high"] < 0 and vim["p_value"] < 1e-10 and vim["test"] == "paired t"
    van = eff[eff["baseline"] == "vanilla"].iloc[0]
    assert van["n"] == 1 and pd.isna(van["p_value"]) and pd.isna(van["ci_low"])
    assert van["mean_delta"] == pytest.approx(0.23 - 0.25)
    assert not (eff["baseline"].isin(["benign", "icl"])).any()  # no mitigated results to pair


def test_auto_mitigation_from_planted_regression(planted_df):
    picks = auto_mitigation(value_regressions(planted_df))
    assert picks[f"{BENCH}/hate"] == ["Power", "Stimulation"]
    assert picks[f"{BENCH}/other"] == []
    assert picks["all"] == ["Power", "Stimulation"]
    assert auto_mitigation(value_regressions(planted_df), min_coef=0.045)[f"{BENCH}/hate"] == ["Power"]


def test_persona_fidelity_and_load_alignment(tmp_path):
    rng = np.random.default_rng(3)
    for name, vals in random_profiles(rng, 3):
        for mit, nmse in (("none", 0.10), ("value_prompt", 0.16)):
            write_store(
                tmp_path / "ev",
                result_dict(
                    name,
                    vals,
                    baseline="vim",
                    mitigation=mit,
                    benchmark="pvq",
                    measure="alignment",
                    by_scorer={},
                    metrics={"overall": {"nmse_greedy": nmse, "nmse_expected": nmse / 2, "parse_rate": 1.0}},
                ),
                f"pvq{mit}",
            )
    # a train-time check, store copy and run copy
    store = tmp_path / "tr" / "store" / "train" / "tiny" / "full" / "p000" / "abc"
    res = {
        "profile": {
            "name": "p000",
            "kind": "ess",
            "anchor": "Pow",
            "rank": 1,
            "values": {k: 2.0 for k in VALUE_TO_KEY.values()},
        },
        "model": "tiny",
        "stage": "full",
        "store_dir": str(store),
        "alignment": {
            "nmse_greedy": 0.3,
            "nmse_expected": 0.2,
            "parse_rate": 0.9,
            "collapsed": True,
            "n_items": 40,
            "greedy": dict.fromkeys(VALUES, 1.0),
            "expected": dict.fromkeys(VALUES, 2.5),
            "target": dict.fromkeys(VALUES, 2.0),
            "rows": [],
        },
    }
    for d in (store, tmp_path / "tr" / "runs" / "r1"):
        d.mkdir(parents=True)
        (d / "train_result.json").write_text(json.dumps(res))
    al = load_alignment([str(tmp_path / "tr")])
    assert al["result_id"].nunique() == 1
    ov = al[al["category"] == "overall"].set_index("metric")["value"]
    assert ov["collapsed"] == 1.0 and ov["nmse_greedy"] == 0.3
    assert set(al.loc[al["category"] == "Power", "metric"]) == {"greedy", "expected", "target"}
    assert set(al["baseline"]) == {"vim"} and set(al["source"]) == {"train"}

    both = pd.concat([load_results([str(tmp_path / "ev")]), al], ignore_index=True)
    fid = persona_fidelity(both)
    assert list(fid.columns) == [
        "profile",
        "model",
        "baseline",
        "stage",
        "reading",
        "nmse_none",
        "nmse_value_prompt",
        "delta",
    ]
    assert len(fid) == 3 * 2
    g = fid[(fid["profile"] == "p000")].set_index("reading")
    # evaluation rows win over the train-time check for p000
    assert g.loc["greedy", "nmse_none"] == pytest.approx(0.10) and g.loc["greedy", "delta"] == pytest.approx(0.06)
    assert g.loc["expected", "delta"] == pytest.approx(0.03)
    only_train = persona_fidelity(al)
    assert len(only_train) == 2 and only_train["nmse_value_prompt"].isna().all()
    # PVQ rows never enter the harm regressions
    assert value_regressions(both).empty


def test_auto_mitigation_names_nothing_from_an_underpowered_regression_or_above_the_family_q(planted_df):
    """The same planted effect: below the design minimum (powered false) or above the report's family q, no
    value is named, however small the regression's own p."""
    reg = value_regressions(planted_df)
    assert auto_mitigation(reg)["all"] == ["Power", "Stimulation"]
    assert auto_mitigation(reg.assign(powered=False))["all"] == []
    assert auto_mitigation(reg.assign(q=1.0))["all"] == []
