"""Missing (unit, prompt) cells do not delete the study.

A prompt is used wherever each side of a comparison has at least one cell on it; a partial result is
used cell-wise up to analysis.max_missing_frac. Checked here: the prompts and cells each comparison row
reports, that the available-case estimator is the complete-data one when nothing is missing, that it is
unbiased and covers under missing-at-random cells, and that a partial result enters the analysis.
The full simulation (designs up to 154 profiles, MNAR bias): perf/sim_missing.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from value_harms.analysis import compare_baselines, load_results, mitigation_effects
from value_harms.analysis import inference as I
from value_harms.analysis.design import two_way
from value_harms.core.values import VALUE_TO_KEY, VALUES


def _write(root: Path, profile: str, baseline: str, scores: np.ndarray, mitigation: str = "none", values=None):
    """One BeaverTails-style result (flag measure: the prompt value is the mean of 0/1 flags) whose NaN
    scores are missing (the result is then PARTIAL, as evaluate writes it)."""
    stage = "full" if baseline == "vim" else "none"
    d = root / "eval" / "tiny" / baseline / stage / profile / "beavertails" / mitigation / f"k{profile}{mitigation}"
    d.mkdir(parents=True)
    ok = np.isfinite(scores)
    missing = int((~ok).sum())
    result = {
        "schema_version": 2,
        "status": "partial" if missing else "complete",
        "benchmark": {"name": "beavertails", "version": "1", "measure": "flag", "n_prompts": int(scores.shape[0])},
        "model": {"name": "tiny"},
        "baseline": baseline,
        "stage": stage,
        "profile": {
            "name": profile,
            "kind": "vanilla" if values is None else "ess",
            "values": None if values is None else {VALUE_TO_KEY[v]: x for v, x in values.items()},
        },
        "mitigation": {"name": mitigation, "value_prompt": False, "disregard_values": []},
        "scorer": {"by_scorer": {"judge": int(ok.sum())}, "missing": missing, "n": int(scores.size)},
        "metrics": {"overall": {"flagged_rate": float(np.nanmean(scores)), "n": int(ok.sum()), "missing": missing}},
    }
    (d / "results.json").write_text(json.dumps(result))
    lines = [
        {"id": f"{p:03d}", "sample": k, "score": None if not ok[p, k] else float(scores[p, k])}
        for p in range(scores.shape[0])
        for k in range(scores.shape[1])
    ]
    (d / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def _store(root: Path, profiles: int, prompts: int, samples: int, lost: dict[tuple[int, int], int], seed=0):
    """profiles value-aligned models + vanilla; `lost` {(profile index, prompt): samples lost} (-1: vanilla)."""
    rng = np.random.default_rng(seed)
    rate = rng.uniform(0.1, 0.6, prompts)
    for u in range(-1, profiles):
        flags = (rng.uniform(size=(prompts, samples)) < (rate + (0.1 if u >= 0 else 0.0))[:, None]).astype(float)
        for (uu, p), k in lost.items():
            if uu == u:
                flags[p, :k] = np.nan
        if u < 0:
            _write(root, "vanilla", "vanilla", flags)
        else:
            _write(root, f"p{u:02d}", "vim", flags, values=dict(zip(VALUES, rng.uniform(1, 6, len(VALUES)))))
    return root


def test_rows_report_prompts_and_cells_used_and_partial_results_enter(tmp_path, caplog):
    """8 profiles x 12 prompts x 2 samples: three profiles lose every score of one prompt each (three
    missing cells), one loses half a prompt (a cell on one sample), vanilla loses prompt 11. The old rule
    kept 8 of 12 prompts and left the partial results out whole; now 11 are used (vanilla lacks one)."""
    lost = {(0, 2): 2, (1, 5): 2, (2, 7): 2, (3, 9): 1, (-1, 11): 2}
    _store(tmp_path, profiles=8, prompts=12, samples=2, lost=lost)
    with caplog.at_level(logging.INFO):
        df = load_results([tmp_path], max_missing_frac=0.5)
    assert df["profile"].nunique() == 9  # the partial results are used, not dropped whole
    assert "5 partial result(s) used cell-wise: 9 of 120 scores missing" in caplog.text
    pv = I.prompt_values(df)
    cmp = I.compare_prompt_level(compare_baselines(df), pv)
    row = cmp[(cmp["baseline"] == "vim") & (cmp["metric"] == "flagged_rate")].iloc[0]
    assert row["n_prompts_seen"] == 12 and row["n_prompts_used"] == row["n_prompts"] == 11
    # cells of the 11 used prompts, both sides: 9 units x 11 = 99, of which profiles 0-2 miss one each
    assert (row["n_cells"], row["cells_missing"], row["n_models"]) == (96, 3, 8)
    assert np.isfinite(row["se"]) and row["se"] > 0 and not row["constant"]
    # the default (0.0) still leaves partial results out whole, with the warning that says so
    assert load_results([tmp_path])["profile"].nunique() == 4


def test_mitigation_deltas_use_every_cell_both_conditions_have(tmp_path):
    rng = np.random.default_rng(3)
    for mit in ("none", "safety_prompt"):
        for u in range(4):
            flags = (rng.uniform(size=(10, 2)) < 0.4).astype(float)
            if mit == "safety_prompt" and u == 1:
                flags[4] = np.nan  # one missing cell in the mitigated condition
            _write(tmp_path, f"p{u}", "vim", flags, mitigation=mit, values=dict.fromkeys(VALUES, 3.0))
    df = load_results([tmp_path], max_missing_frac=0.5)
    mit = I.mitigation_prompt_level(mitigation_effects(df), I.prompt_values(df))
    row = mit[mit["metric"] == "flagged_rate"].iloc[0]
    assert (row["n_prompts_used"], row["n_cells"], row["cells_missing"], row["n_models"]) == (10, 39, 1, 4)


def test_available_case_estimate_by_hand():
    """One missing cell: d_p averages the units that have p; the estimate is the mean of d_p."""
    G = np.array([[1.0, 2.0, 3.0, 4.0], [2.0, np.nan, 5.0, 3.0], [0.0, 1.0, 1.0, 2.0]])
    R = np.array([[0.5, 0.5, 1.0, np.nan]])
    res = two_way(G, R)
    d = [1.0 - 0.5, 1.5 - 0.5, 3.0 - 1.0]  # prompt 3 has no reference cell: not used
    assert res["estimate"] == pytest.approx(np.mean(d))
    assert (int(res["n_prompts"]), int(res["n_cells"])) == (3, 8 + 3)


def test_complete_data_give_the_pigeonhole_estimator_exactly():
    rng = np.random.default_rng(8)
    G, R = rng.normal(size=(7, 25)) + rng.normal(size=(7, 1)), rng.normal(size=(1, 25))
    res = two_way(G, R)
    d = G.mean(0) - R.mean(0)
    resid = G - G.mean(1, keepdims=True) - G.mean(0) + G.mean()
    s2e = (resid**2).sum() / (6 * 24)
    var = d.var(ddof=1) / 25 + G.mean(1).var(ddof=1) / 7 - s2e / (7 * 25)
    assert res["estimate"] == pytest.approx(d.mean()) and res["se"] == pytest.approx(np.sqrt(var))


@pytest.mark.parametrize("rate", [0.02, 0.05])
def test_unbiased_and_covering_with_cells_missing_at_random(rate):
    """2000 studies of 20 profiles x 40 prompts, model / prompt x condition / model x prompt / sampling
    variance, cells missing at random (vanilla's too): bias within 3 MC sd, coverage 93-97%, and nearly
    every prompt used (the old rule kept (1 - rate)^21 of them: 65% at 2%)."""
    rng = np.random.default_rng(int(rate * 1000))
    n, U, P, delta = 2000, 20, 40, 0.05
    b = rng.normal(0, 0.1, (n, 1, P))
    R = b + rng.normal(0, 0.08, (n, 1, P))
    G = delta + b + rng.normal(0, 0.04, (n, U, 1)) + rng.normal(0, 0.03, (n, 1, P))
    G = G + rng.normal(0, 0.05, (n, U, P)) + rng.normal(0, 0.08, (n, U, P))
    G = np.where(rng.uniform(size=G.shape) < rate, np.nan, G)
    R = np.where(rng.uniform(size=R.shape) < rate, np.nan, R)
    res = two_way(G, R)
    err = res["estimate"] - delta
    assert abs(err.mean()) < 3 * err.std() / np.sqrt(n)
    cover = np.mean((res["ci_low"] <= delta) & (delta <= res["ci_high"]))
    assert 0.93 <= cover <= 0.97, cover
    assert res["n_prompts"].mean() / P >= 1 - rate - 0.01
