"""The power tool: variance components by level, the MDE checked against
simulation, the command on a pilot store, and constant metrics (nothing detectable).

Realised power: studies of the planned design with the true difference set to the MDE the tool
computes, each tested with the two-way estimator analyze.py runs (perf/sim_power.py is the full table).
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from test_missing_data import _store, _write

from value_harms.analysis import compare_baselines, load_results
from value_harms.analysis import inference as I
from value_harms.analysis.design import mde, two_way, variance_components
from value_harms.core.values import VALUES

SD = {"model": 0.04, "cond": 0.03, "inter": 0.1, "sample": 0.15, "prompt": 0.1}


def _truth(k: int) -> dict[str, float]:
    s = SD["sample"] ** 2 / k
    return {"model": SD["model"] ** 2, "prompt": SD["cond"] ** 2, "interaction": SD["inter"] ** 2, "sample": s}


def _studies(rng, n, U, P, k, delta):
    b = rng.normal(0, SD["prompt"], (n, 1, P))
    s = SD["sample"] / np.sqrt(k)
    G = delta + b + rng.normal(0, SD["model"], (n, U, 1)) + rng.normal(0, SD["cond"], (n, 1, P))
    G = G + rng.normal(0, SD["inter"], (n, U, P)) + rng.normal(0, s, (n, U, P))
    return G, b + rng.normal(0, s, (n, 1, P))


@pytest.mark.parametrize("pilot_k,U,P,k", [(3, 3, 30, 3), (2, 10, 60, 25)])
def test_mde_has_the_power_it_claims(pilot_k, U, P, k):
    """3 x 30 (the normal-theory formula gave 72% there) and a 2-sample pilot planned at 25 samples
    (the model x prompt part does not shrink): 4000 studies, realised power 0.80 +- 0.03 (MC sd 0.006)."""
    vc = {**_truth(pilot_k), "ref_cell": SD["sample"] ** 2 / pilot_k, "ref_sample": SD["sample"] ** 2 / pilot_k}
    m = mde(vc, U, P, k, pilot_k)
    G, R = _studies(np.random.default_rng(U * P), 4000, U, P, k, m)
    power = np.mean(two_way(G, R)["p"] < 0.05)
    assert abs(power - 0.80) <= 0.03, (m, power)
    if k != pilot_k:  # more samples shrink only the sampling part: the rest is a floor
        floor = {**vc, "sample": 0.0, "ref_cell": 0.0, "ref_sample": 0.0}
        assert mde(floor, U, P) < m < mde(vc, U, P, pilot_k, pilot_k)
        assert mde(vc, U, P, 10**7, pilot_k) == pytest.approx(mde(floor, U, P), rel=1e-3)


def test_components_by_level_from_a_pilot_with_samples():
    """A 30 x 200 pilot with 4 samples per cell: the sampling part comes from the within-cell variance,
    the model x prompt part is what remains of the residual; both near the truth."""
    rng = np.random.default_rng(5)
    U, P, k = 30, 200, 4
    b = rng.normal(0, SD["prompt"], (1, P))
    gs, rs = rng.normal(0, SD["sample"], (U, P, k)), rng.normal(0, SD["sample"], (1, P, k))
    G = b + rng.normal(0, SD["model"], (U, 1)) + rng.normal(0, SD["cond"], (1, P)) + rng.normal(0, SD["inter"], (U, P))
    vc = variance_components(G + gs.mean(-1), b + rs.mean(-1), gs.var(-1, ddof=1) / k, rs.var(-1, ddof=1) / k)
    truth = _truth(k)
    for key, tol in (("sample", 0.05), ("interaction", 0.15), ("model", 0.6)):
        assert vc[key] == pytest.approx(truth[key], rel=tol), (key, vc[key], truth[key])
    assert vc["ref_sample"] == pytest.approx(truth["sample"], rel=0.2) and vc["ref_cell"] == vc["ref_sample"]


def test_power_command_on_a_pilot_store(tmp_path):
    """flagged_rate is a mean over samples: its sampling variance is known and rescaled by --samples."""
    _store(tmp_path, profiles=4, prompts=15, samples=2, lost={})
    cmd = [sys.executable, "-m", "value_harms.power", str(tmp_path), "--models", "10", "--prompts", "200"]
    out = subprocess.run([*cmd, "--samples", "25", "--target", "0.05"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    head, row = out.stdout.splitlines()[:2]
    for col in (
        "var_model",
        "var_prompt",
        "var_interaction",
        "var_sample",
        "samples_rescaled",
        "mde",
        "prompts_needed",
    ):
        assert col in head
    cells = dict(zip(head.split(), row.split()))
    assert cells["metric"] == "flagged_rate" and cells["samples_rescaled"] == "True" and float(cells["mde"]) > 0
    assert "realised power" in out.stdout


def test_constant_metric_has_no_mde(tmp_path):
    """Every model flags every sample (the demo's BeaverTails 1.000): se 0, constant, no MDE."""
    for u in range(-1, 5):
        name, base = ("vanilla", "vanilla") if u < 0 else (f"p{u}", "vim")
        _write(tmp_path, name, base, np.ones((6, 2)), values=None if u < 0 else dict.fromkeys(VALUES, 3.0))
    df = load_results([tmp_path])
    cmp = I.compare_prompt_level(compare_baselines(df), I.prompt_values(df))
    row = cmp[(cmp["baseline"] == "vim") & (cmp["metric"] == "flagged_rate")].iloc[0]
    assert row["constant"] and row["se"] == 0 and math.isnan(row["mde"]) and not row["powered"]
    assert math.isnan(mde({"model": 0.0, "prompt": 0.0, "interaction": 0.0, "sample": 0.0}, 5, 30))
    tab = I.power_table(I.prompt_values(df), models=10, prompts=100)
    assert tab["constant"].all() and tab["mde"].isna().all()
