"""Missing (unit, prompt) cells and the two-way estimator: coverage, bias, prompts used.

    .venv/bin/python perf/sim_missing.py              # the table (about 1.5 minutes on one core)
    .venv/bin/python perf/sim_missing.py --studies 500

Each simulated study: `models` value-aligned profiles and one vanilla model on `prompts` prompts,
k = 3 samples per cell, the prompt value a mean over the samples:
    vanilla  R[p]    = 0.3         + b_p             + s_p          b ~ N(0, 0.1)   prompt
    profile  Y[u, p] = 0.3 + delta + b_p + a_u + c_p + i_up + s_up  a ~ N(0, 0.04)  model
                                                                    c ~ N(0, 0.03)  prompt x condition
                                                                    i ~ N(0, 0.05)  model x prompt
                                                                    s ~ N(0, 0.15 / sqrt(3)) samples
A share m of all cells (vanilla's too) is missing: MCAR (every cell alike) or MNAR (a cell's chance of
missing grows with its value: odds ratio e per sd, "content filters drop the toxic ones"). The two-way
estimator on the available cells (design.two_way) is compared with the old complete-case rule (a prompt
is dropped for everyone once one unit lacks it). Printed per design and rate: the coverage of the 95%
interval of delta, the mean bias of the estimate, and the share of prompts each rule uses.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from value_harms.analysis.design import two_way  # noqa: E402

SD = {"prompt": 0.1, "model": 0.04, "cond": 0.03, "inter": 0.05, "sample": 0.15}
SAMPLES = 3
DELTA = 0.05


def simulate(rng, studies: int, models: int, prompts: int):
    """(profiles (studies, U, P), vanilla (studies, 1, P)) of complete cells."""
    b = rng.normal(0, SD["prompt"], (studies, 1, prompts))
    noise = SD["sample"] / np.sqrt(SAMPLES)
    ref = 0.3 + b + rng.normal(0, noise, (studies, 1, prompts))
    grp = (
        0.3
        + DELTA
        + b
        + rng.normal(0, SD["model"], (studies, models, 1))
        + rng.normal(0, SD["cond"], (studies, 1, prompts))
        + rng.normal(0, SD["inter"], (studies, models, prompts))
        + rng.normal(0, noise, (studies, models, prompts))
    )
    return grp, ref


def knock_out(rng, grp, ref, rate: float, mnar: bool):
    """Copies with a share `rate` of cells set missing (MNAR: log-odds of missing + 1 per sd of value)."""
    both = np.concatenate([grp, ref], axis=-2)
    if mnar:
        z = (both - both.mean()) / both.std()
        w = np.exp(z)
        p = np.clip(rate * w / w.mean(), 0, 1)
    else:
        p = np.full(both.shape, rate)
    both = np.where(rng.uniform(size=both.shape) < p, np.nan, both)
    return both[..., :-1, :], both[..., -1:, :]


def complete_case(grp, ref):
    """The old rule: a prompt with any missing cell is dropped for every unit."""
    keep = np.isfinite(grp).all(-2, keepdims=True) & np.isfinite(ref).all(-2, keepdims=True)
    return np.where(keep, grp, np.nan), np.where(keep, ref, np.nan)


def run(rng, studies: int, models: int, prompts: int, rate: float, mnar: bool, chunk: int = 250) -> dict:
    acc: dict[str, list] = {k: [] for k in ("cover", "err", "used", "cc_cover", "cc_err", "cc_used")}
    for start in range(0, studies, chunk):
        grp, ref = knock_out(rng, *simulate(rng, min(chunk, studies - start), models, prompts), rate, mnar)
        for tag, (g, r) in (("", (grp, ref)), ("cc_", complete_case(grp, ref))):
            res = two_way(g, r)
            ok = np.isfinite(res["se"])
            acc[tag + "cover"].append(np.where(ok, (res["ci_low"] <= DELTA) & (DELTA <= res["ci_high"]), False))
            acc[tag + "err"].append(np.where(ok, res["estimate"] - DELTA, np.nan))
            acc[tag + "used"].append(res["n_prompts"] / prompts)
    out = {k: np.concatenate(v) for k, v in acc.items()}

    def bias(err: np.ndarray) -> float:  # NaN where the old rule kept no prompt at all in any study
        return float(np.nanmean(err)) if np.isfinite(err).any() else float("nan")

    return {
        "cover": float(out["cover"].mean()),
        "bias": bias(out["err"]),
        "used": float(out["used"].mean()),
        "cc_cover": float(out["cc_cover"].mean()),
        "cc_bias": bias(out["cc_err"]),
        "cc_used": float(out["cc_used"].mean()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=21)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    designs = [(10, 100), (40, 40), (40, 100), (154, 100)]
    print(
        f"{args.studies} studies per row; delta {DELTA}; 95% intervals; MC sd of a 95% coverage "
        f"{np.sqrt(0.95 * 0.05 / args.studies):.3f}"
    )
    print(f"{'design':>10} {'missing':>12} | {'cover':>6} {'bias':>8} {'prompts':>7} | old rule: ", end="")
    print(f"{'cover':>6} {'bias':>8} {'prompts':>7}")
    t0 = time.perf_counter()
    for models, prompts in designs:
        for rate in (0.0, 0.01, 0.02, 0.05):
            for mnar in (False, True) if rate else (False,):
                r = run(rng, args.studies, models, prompts, rate, mnar)
                kind = "MNAR" if mnar else "MCAR"
                print(
                    f"{models:>4} x {prompts:<4} {rate:>5.0%} {kind:>6} | {r['cover']:6.3f} {r['bias']:+8.4f} "
                    f"{r['used']:7.1%} |           {r['cc_cover']:6.3f} {r['cc_bias']:+8.4f} {r['cc_used']:7.1%}"
                )
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
