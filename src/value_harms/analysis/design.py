"""Design arithmetic of a models x prompts study (issue 14): two-way variance components, the standard error of a
design, its minimum detectable effect, the prompts needed for a target, and the power table."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from scipy import stats as sps

POWER = 0.8


def _side(M: np.ndarray):
    """(unit part of the variance, its df, residual variance) of one side (..., U, P); None when U < 2."""
    U, P = M.shape[-2], M.shape[-1]
    if U < 2:
        return None
    um = M.mean(-1)
    b = um.var(-1, ddof=1) / U
    resid = M - um[..., None] - M.mean(-2)[..., None, :] + M.mean((-2, -1))[..., None, None]
    s2e = (resid**2).sum((-2, -1)) / ((U - 1) * (P - 1))
    return b, U - 1, s2e


def two_way(G: np.ndarray, R: np.ndarray | None = None, conf: float = 0.95) -> dict[str, np.ndarray]:
    """Estimate, SE, df, interval and p-value of mean(G) - mean(R) (or of mean(G) with R None).

    G: (..., U_g, P) and R: (..., U_r, P) on the same P prompts in the same order, no NaN."""
    G = np.asarray(G, dtype=float)
    P = G.shape[-1]
    d = G.mean(-2) if R is None else G.mean(-2) - np.asarray(R, dtype=float).mean(-2)
    est = d.mean(-1)
    if P < 2:
        nan = np.full(np.shape(est), np.nan)
        return {"estimate": est, "se": nan, "df": nan, "ci_low": nan, "ci_high": nan, "p": nan}
    a = d.var(-1, ddof=1) / P
    parts = [(a, P - 1)]
    var = a.copy()
    for M in (G, None if R is None else np.asarray(R, dtype=float)):
        if M is None:
            continue
        side = _side(M)
        if side is None:
            continue
        b, dfb, s2e = side
        var = var + b - s2e / (M.shape[-2] * P)
        parts.append((b, dfb))
    var = np.maximum(var, np.max(np.stack([p for p, _ in parts]), axis=0))  # never below one part
    den = sum(p**2 / dfp for p, dfp in parts)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(den > 0, var**2 / den, float(P - 1))
        se = np.sqrt(var)
        q = sps.t.ppf(0.5 + conf / 2, df)
        t = np.where(se > 0, est / se, np.nan)
        p = 2 * sps.t.sf(np.abs(t), df)
    return {"estimate": est, "se": se, "df": df, "ci_low": est - q * se, "ci_high": est + q * se, "p": p}


def variance_components(G: np.ndarray, R: np.ndarray | None = None) -> dict[str, float]:
    """Moment estimates from one pilot comparison: `model` (between-model variance of a unit's mean),
    `prompt` (variance of the per-prompt difference not due to residual noise: the prompt x condition
    interaction), `residual` (unit x prompt noise incl. generation), NaN where not identified (one unit)."""
    G = np.asarray(G, dtype=float)
    U, P = G.shape
    side = _side(G) if P >= 2 else None
    if side is None:
        return {"model": math.nan, "prompt": math.nan, "residual": math.nan}
    b, _, s2e = side
    d = G.mean(0) - (0.0 if R is None else np.asarray(R, dtype=float).mean(0))
    ur = 0 if R is None else np.asarray(R).shape[0]
    noise = s2e / U + (s2e / ur if ur else 0.0)
    return {
        "model": float(max(0.0, b * U - s2e / P)),
        "prompt": float(max(0.0, d.var(ddof=1) - noise)),
        "residual": float(s2e),
    }


def design_se(
    vc: Mapping[str, float],
    models: int,
    prompts: int,
    samples: int | None = None,
    pilot_samples: int | None = None,
    ref_models: int = 1,
) -> tuple[float, float]:
    """(SE, Satterthwaite df) of a comparison of `models` units against `ref_models` (0: a one-sample
    mean, e.g. a mitigation delta) on `prompts` prompts. The residual variance is scaled by
    pilot_samples / samples (an approximation: a per-prompt mean scales so; a max over samples roughly)."""
    scale = (pilot_samples / samples) if samples and pilot_samples else 1.0
    s2e = vc["residual"] * scale
    a = vc["prompt"] / prompts + s2e / (models * prompts) + (s2e / (ref_models * prompts) if ref_models else 0.0)
    b = vc["model"] / models
    var = a + b
    den = (a**2 / max(prompts - 1, 1)) + (b**2 / max(models - 1, 1) if models > 1 else 0.0)
    df = var**2 / den if den > 0 else float(max(prompts - 1, 1))
    return math.sqrt(var), df


def mde(
    vc: Mapping[str, float],
    models: int,
    prompts: int,
    samples: int | None = None,
    pilot_samples: int | None = None,
    ref_models: int = 1,
    alpha: float = 0.05,
    power: float = POWER,
) -> float:
    """Smallest true difference a two-sided level-alpha test detects with probability `power`."""
    if any(not np.isfinite(vc.get(k, math.nan)) for k in ("model", "prompt", "residual")):
        return math.nan
    se, df = design_se(vc, models, prompts, samples, pilot_samples, ref_models)
    return float((sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(power, df)) * se)


def prompts_needed(
    vc: Mapping[str, float],
    target: float,
    models: int,
    samples: int | None = None,
    pilot_samples: int | None = None,
    ref_models: int = 1,
    alpha: float = 0.05,
    power: float = POWER,
    max_prompts: int = 1_000_000,
) -> int | None:
    """Fewest prompts whose MDE is <= target with `models` models; None when no prompt count reaches it
    (the between-model variance alone is too large: more models are needed)."""
    if not mde(vc, models, max_prompts, samples, pilot_samples, ref_models, alpha, power) <= target:
        return None
    lo, hi = 2, max_prompts
    while lo < hi:
        mid = (lo + hi) // 2
        if mde(vc, models, mid, samples, pilot_samples, ref_models, alpha, power) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def design_text(row: Mapping[str, Any] | Any) -> str:
    """ "6 models x 120 prompts x 25 samples" from a row with n_models / n_prompts / n_samples."""
    get = row.get if isinstance(row, Mapping) else (lambda k, d=None: getattr(row, k, d))

    def num(k: str) -> str:
        v = get(k)
        try:
            return str(int(round(float(v))))
        except (TypeError, ValueError):
            return "?"

    return f"{num('n_models')} models x {num('n_prompts')} prompts x {num('n_samples')} samples"
