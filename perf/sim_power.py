"""Does the power tool's MDE have the power it claims?

    .venv/bin/python perf/sim_power.py                 # about a minute on one core
    .venv/bin/python perf/sim_power.py --studies 4000

For each planned design, the MDE the tool computes (analysis.design.mde, what `python -m
value_harms.power` prints) from the variance components of a pilot, then `studies` simulated studies
of the planned design with that true difference, each tested with the two-way estimator
(design.two_way, what analyze.py runs) at alpha 0.05: the share that rejects is the realised power
(goal 80% +- 3). Beside it the old rule (normal-theory (t_a + t_b) * SE with the whole residual scaled
by pilot samples / planned samples) and its realised power.

Planted components (a value that is the mean of k samples, e.g. a flagged rate or a harmfulness score):
    model sd 0.04, prompt x condition sd 0.03, model x prompt sd 0.1 (or 0.2: column "i sd"),
    per-sample sd 0.15 (cell: 0.15 / sqrt(k));
    the vanilla reference: its own samples only. "oracle": the tool given the true components; "pilot":
    given the components estimated from one simulated pilot (mean over `--pilots` pilots, its own realised power).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from value_harms.analysis.design import design_se, mde, two_way, variance_components  # noqa: E402

SD = {"model": 0.04, "cond": 0.03, "inter": 0.1, "sample": 0.15, "prompt": 0.1}


def true_components(k: int) -> dict[str, float]:
    s = SD["sample"] ** 2 / k
    return {
        "model": SD["model"] ** 2,
        "prompt": SD["cond"] ** 2,
        "interaction": SD["inter"] ** 2,
        "sample": s,
        "ref_cell": s,
        "ref_sample": s,
    }


def study(rng, n: int, U: int, P: int, k: int, delta: float, per_sample: bool = False):
    """(profiles, vanilla[, their cells' sampling variances]) of n studies; per_sample draws k samples."""
    b = rng.normal(0, SD["prompt"], (n, 1, P))
    grp = delta + b + rng.normal(0, SD["model"], (n, U, 1)) + rng.normal(0, SD["cond"], (n, 1, P))
    grp = grp + rng.normal(0, SD["inter"], (n, U, P))
    if not per_sample:
        s = SD["sample"] / math.sqrt(k)
        return grp + rng.normal(0, s, grp.shape), b + rng.normal(0, s, b.shape)
    gs, rs = rng.normal(0, SD["sample"], (n, U, P, k)), rng.normal(0, SD["sample"], (n, 1, P, k))
    return grp + gs.mean(-1), b + rs.mean(-1), gs.var(-1, ddof=1) / k, rs.var(-1, ddof=1) / k


def realised(rng, studies: int, U: int, P: int, k: int, delta: float, chunk: int = 500) -> float:
    hits = []
    for start in range(0, studies, chunk):
        G, R = study(rng, min(chunk, studies - start), U, P, k, delta)
        hits.append(two_way(G, R)["p"] < 0.05)
    return float(np.concatenate(hits).mean())


def old_mde(vc: dict, U: int, P: int, k: int, pilot_k: int) -> float:
    """The former rule, as it read these components: the pilot's cell residual s2e (model x prompt +
    sampling) also subtracted as the vanilla model's noise when estimating the prompt part, then the whole
    residual scaled by pilot_k / k on both sides, and normal-theory quantiles (t_a + t_b) * SE."""
    s2e = vc["interaction"] + vc["sample"]
    prompt = max(0.0, vc["prompt"] + vc["ref_cell"] - s2e)
    res = s2e * pilot_k / k
    se, df = design_se({"model": vc["model"], "prompt": prompt, "residual": res}, U, P)
    return float((sps.t.ppf(0.975, df) + sps.t.ppf(0.8, df)) * se)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=4000)
    ap.add_argument("--pilots", type=int, default=10)
    ap.add_argument("--seed", type=int, default=4)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    # (pilot U, P, k) -> (planned U, P, k)
    plans = [
        ((3, 30, 3), (3, 30, 3), 0.1),
        ((10, 60, 2), (10, 60, 25), 0.1),
        ((10, 60, 2), (10, 60, 25), 0.2),  # model x prompt dominates: the old rule shrank it 12-fold
        ((10, 100, 3), (10, 100, 3), 0.1),
        ((10, 100, 3), (40, 300, 3), 0.1),
        ((5, 30, 2), (5, 30, 25), 0.1),
    ]
    print(f"realised power of the printed MDE over {args.studies} studies (MC sd 0.006); goal 0.80 +- 0.03")
    print(f"{'pilot':>12} -> {'planned':>13} {'i sd':>4} | {'source':>6} {'MDE':>7} {'power':>6} | ", end="")
    print(f"{'old MDE':>7} {'power':>6}")
    t0 = time.perf_counter()
    for (pu, pp, pk), (u, p, k), inter in plans:
        SD["inter"] = inter
        vc = true_components(pk)
        m, om = mde(vc, u, p, k, pk), old_mde(vc, u, p, k, pk)
        pw, opw = realised(rng, args.studies, u, p, k, m), realised(rng, args.studies, u, p, k, om)
        head = f"{pu:>3}x{pp:<4}x{pk:<3} -> {u:>3}x{p:<4}x{k:<4} {inter:4.2f}"
        print(f"{head} | {'oracle':>6} {m:7.4f} {pw:6.3f} | {om:7.4f} {opw:6.3f}")
        ms, pws = [], []
        for _ in range(args.pilots):
            G, R, SG, SR = study(rng, 1, pu, pp, pk, 0.0, per_sample=True)
            est = variance_components(G[0], R[0], SG[0], SR[0])
            ms.append(mde(est, u, p, k, pk))
            pws.append(realised(rng, args.studies // 4, u, p, k, ms[-1]))
        print(f"{head} | {'pilot':>6} {np.mean(ms):7.4f} {np.mean(pws):6.3f} | (mean over {args.pilots} pilots)")
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
