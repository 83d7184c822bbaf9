"""Design arithmetic of a models x prompts study: the two-way estimator on every available
(unit, prompt) cell, variance components by level, the standard error of a planned design, its minimum
detectable effect (by the estimator's own sampling distribution), and the prompts needed for a target.

Model of one cell (unit u, prompt p) of a compared group and of the reference:
    Y[u, p] = mu + a_u + b_p + c_p + i_up + s_up      a: model, b: prompt (cancels in the pairing),
    R[p]    = mu_r     + b_p       + s'_p             c: prompt x condition, i: model x prompt,
                                                      s: sampling noise of a value over k samples
Only s shrinks with more samples (as 1/k where the value is a mean over samples); i shrinks with more
models, c with more prompts, a with more models. The one vanilla model is a fixed reference: its own
prompt-level quirks are part of c.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping

import numpy as np
from scipy import stats as sps

POWER = 0.8
# Draws of the estimator's sampling distribution behind each MDE: Monte-Carlo sd of a power of 0.8 is
# sqrt(0.8 * 0.2 / 20000) = 0.003, so the MDE is exact to well under 1% of its value.
DRAWS = 20_000
# Backfitting rounds of the additive (unit + prompt) fit on the available cells: with a few % missing
# it converges to 1e-12 in a handful of rounds; complete data need exactly one.
FIT_ROUNDS = 200


# --------------------------------------------------------------------------------------------------
# The two-way estimator on the available cells (vectorised over leading axes: one call runs a simulation)


def _masked_mean(M: np.ndarray, obs: np.ndarray, axis: int) -> np.ndarray:
    n = obs.sum(axis)
    return np.where(n > 0, np.where(obs, M, 0.0).sum(axis) / np.maximum(n, 1), 0.0)


def _additive_fit(M: np.ndarray, obs: np.ndarray):
    """Unit effects, residual variance and its df of Y = mu + a_u + b_p + e on the observed cells obs
    (least squares by backfitting; with complete data: the row means and the double-centred residual)."""
    Y = np.where(obs, M, 0.0)
    n_u, n_p = obs.sum(-1), obs.sum(-2)
    mu = Y.sum((-2, -1)) / np.maximum(obs.sum((-2, -1)), 1)
    a = np.zeros(M.shape[:-1])
    b = np.zeros(M.shape[:-2] + M.shape[-1:])
    for _ in range(FIT_ROUNDS):
        a_new = _masked_mean(M - mu[..., None, None] - b[..., None, :], obs, -1)
        b = _masked_mean(M - mu[..., None, None] - a_new[..., :, None], obs, -2)
        done = np.max(np.abs(a_new - a), initial=0.0) < 1e-12
        a = a_new
        if done:
            break
    resid = np.where(obs, M - mu[..., None, None] - a[..., :, None] - b[..., None, :], 0.0)
    units, prompts = (n_u > 0).sum(-1), (n_p > 0).sum(-1)
    dfe = obs.sum((-2, -1)) - units - prompts + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        s2e = np.where(dfe > 0, (resid**2).sum((-2, -1)) / np.maximum(dfe, 1), np.nan)
    return a, n_u, units, s2e


def _unit_part(M: np.ndarray, obs: np.ndarray, used: np.ndarray, P: np.ndarray):
    """The model (unit) part of one side's variance on the used prompts: (b, correction, df, parts) with
    b - correction its contribution; None when the side has one unit. See `two_way`."""
    if M.shape[-2] < 2:
        return None
    n_p = obs.sum(-2)
    c = np.where(obs, 1.0 / np.maximum(n_p, 1)[..., None, :], 0.0)  # d_p's weight of each unit's effect
    w = c.sum(-1) / np.maximum(P, 1)[..., None]  # the estimate's weight of each unit's effect
    spread = (((c - w[..., None]) ** 2) * used[..., None, :]).sum((-2, -1)) / np.maximum(P - 1, 1)
    W = (w**2).sum(-1) - spread / np.maximum(P, 1)  # the model part counted in s2(d_p) / P is spread / P of it
    a, n_u, units, s2e = _additive_fit(M, obs)
    present = n_u > 0
    am = np.where(present, a, 0.0).sum(-1) / np.maximum(units, 1)
    s2a = np.where(present, (a - am[..., None]) ** 2, 0.0).sum(-1) / np.maximum(units - 1, 1)
    inv_pu = np.where(present, 1.0 / np.maximum(n_u, 1), 0.0).sum(-1) / np.maximum(units, 1)
    ok = units >= 2
    b = np.where(ok, s2a * W, 0.0)
    corr = np.where(ok, np.nan_to_num(s2e) * inv_pu * W, 0.0)
    return b, corr, np.maximum(units - 1, 1), {"s2a": s2a, "s2e": s2e, "inv_pu": inv_pu, "spread": spread}


def _pair(G: np.ndarray, R: np.ndarray | None):
    """Observed masks restricted to the prompts both sides have, the per-prompt differences and counts."""
    OG = np.isfinite(G)
    used = OG.sum(-2) > 0
    if R is not None:
        OR = np.isfinite(R)
        used = used & (OR.sum(-2) > 0)
        OR = OR & used[..., None, :]
    OG = OG & used[..., None, :]
    d = _masked_mean(G, OG, -2) - (0.0 if R is None else _masked_mean(R, OR, -2))
    return OG, (None if R is None else OR), used, np.where(used, d, 0.0), used.sum(-1)


def two_way(G: np.ndarray, R: np.ndarray | None = None, conf: float = 0.95) -> dict[str, np.ndarray]:
    """Estimate, SE, df, interval and p-value of mean(G) - mean(R) (or of mean(G) with R None) on every
    available cell. G: (..., U_g, P), R: (..., U_r, P) on the same P prompts; NaN marks a missing cell.

    A prompt is used when each side has at least one cell on it. d_p = mean over G's units that have p
    minus the same of R; estimate = mean of d_p over the used prompts. Variance: s2(d_p) / P (prompts,
    with the noise of the cells each prompt has) plus, per side with >= 2 units, the model part
    s2a * W - s2e * mean(1 / P_u) * W, where a_u are the unit effects of an additive (unit + prompt) fit
    on the available cells, s2e its residual variance, P_u the prompts unit u has, and W = sum w_u^2 -
    spread / P the weight of the model effects in the estimate (w_u: that weight per unit) less what
    s2(d_p) already counts. With complete data this is the two-way pigeonhole estimator exactly:
    s2(d)/P + s2(unit means)/U - s2e/(U P). Degrees of freedom: Welch-Satterthwaite over the prompt part
    (P - 1) and each model part (units - 1). Also returns n_prompts, n_cells (cells used, both sides)."""
    G = np.asarray(G, dtype=float)
    R = None if R is None else np.asarray(R, dtype=float)
    OG, OR, used, d, P = _pair(G, R)
    with np.errstate(divide="ignore", invalid="ignore"):
        est = np.where(P > 0, d.sum(-1) / np.maximum(P, 1), np.nan)
        a = (((d - est[..., None]) ** 2) * used).sum(-1) / np.maximum(P - 1, 1) / np.maximum(P, 1)
    var, parts = a.copy(), [(a, np.maximum(P - 1, 1))]
    for M, obs in ((G, OG), (R, OR)):
        side = None if M is None else _unit_part(M, obs, used, P)
        if side is not None:
            b, corr, dfb, _ = side
            var = var + b - corr
            parts.append((b, dfb))
    var = np.maximum(var, np.max(np.stack([p for p, _ in parts]), axis=0))  # never below one part
    den = sum(p**2 / dfp for p, dfp in parts)
    cells = OG.sum((-2, -1)) + (0 if OR is None else OR.sum((-2, -1)))
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(den > 0, var**2 / den, np.maximum(P - 1, 1).astype(float))
        se = np.where(P >= 2, np.sqrt(var), np.nan)
        q = sps.t.ppf(0.5 + conf / 2, df)
        t = np.where(se > 0, est / se, np.nan)
        p = np.where(np.isfinite(t), 2 * sps.t.sf(np.abs(t), df), np.nan)
    lo, hi = est - q * se, est + q * se
    return {"estimate": est, "se": se, "df": df, "ci_low": lo, "ci_high": hi, "p": p, "n_prompts": P, "n_cells": cells}


# --------------------------------------------------------------------------------------------------
# Variance components by level (from a pilot) and the design of a planned study


def _mean_finite(x: np.ndarray | None, mask: np.ndarray | None) -> float:
    if x is None:
        return math.nan
    v = np.asarray(x, dtype=float)[mask] if mask is not None else np.asarray(x, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def variance_components(
    G: np.ndarray, R: np.ndarray | None = None, SG: np.ndarray | None = None, SR: np.ndarray | None = None
) -> dict[str, float]:
    """Moment estimates by level from one pilot comparison (NaN cells allowed), per the module's model:
    `model` (var of a_u), `prompt` (var of c_p: prompt x condition, incl. the fixed reference's own
    prompt quirks), `interaction` (var of i_up), `sample` (the cell's sampling variance at the pilot's k:
    mean of SG, the per-cell sampling variances; 0 where unknown, e.g. a maximum over samples, so all the
    residual counts as interaction and nothing shrinks with samples), `ref_cell` / `ref_sample` (the
    reference's cell noise per model and its sampling part), `residual` = interaction + sample.
    NaN where not identified (one unit or one prompt)."""
    G = np.asarray(G, dtype=float)
    R = None if R is None else np.asarray(R, dtype=float)
    nan = dict.fromkeys(("model", "prompt", "interaction", "sample", "ref_cell", "ref_sample", "residual"), math.nan)
    OG, OR, used, d, P = _pair(G, R)
    side = _unit_part(G, OG, used, P) if P >= 2 else None
    if side is None or not np.isfinite(side[3]["s2e"]):
        return nan
    st = side[3]
    s2e, s2a = float(st["s2e"]), float(st["s2a"])
    model = max(0.0, s2a - s2e * float(st["inv_pu"]))
    sample = _mean_finite(SG, OG) if SG is not None else math.nan
    sample = 0.0 if not np.isfinite(sample) else min(sample, s2e)
    ref_sample = _mean_finite(SR, OR) if SR is not None else math.nan
    ref_sample = 0.0 if not np.isfinite(ref_sample) else ref_sample
    ref_cell = 0.0
    if R is not None:
        rside = _unit_part(R, OR, used, P)
        ref_cell = float(rside[3]["s2e"]) if rside is not None else ref_sample
    inv_n = float((1.0 / np.maximum(OG.sum(0), 1))[used].mean())
    inv_r = float((1.0 / np.maximum(OR.sum(0), 1))[used].mean()) if OR is not None else 0.0
    s2d = float(d[used].var(ddof=1))
    prompt = s2d - s2e * inv_n - ref_cell * inv_r - model * float(st["spread"])
    return {
        "model": model,
        "prompt": max(0.0, prompt),
        "interaction": max(0.0, s2e - sample),
        "sample": sample,
        "ref_cell": ref_cell,
        "ref_sample": min(ref_sample, ref_cell) if R is not None else 0.0,
        "residual": s2e,
    }


def _cells(vc: Mapping[str, float], samples: int | None, pilot_samples: int | None) -> tuple[float, float]:
    """(a compared model's cell variance, the reference's) at `samples` per prompt: only the sampling
    parts scale, by pilot_samples / samples. Components without the split (only `residual`) scale nothing."""
    scale = (pilot_samples / samples) if samples and pilot_samples else 1.0
    if "interaction" not in vc:
        return float(vc["residual"]), float(vc["residual"])
    s, rs = float(vc.get("sample", 0.0)), float(vc.get("ref_sample", 0.0))
    return float(vc["interaction"]) + s * scale, float(vc.get("ref_cell", 0.0)) - rs + rs * scale


def design_se(
    vc: Mapping[str, float],
    models: int,
    prompts: int,
    samples: int | None = None,
    pilot_samples: int | None = None,
    ref_models: int = 1,
) -> tuple[float, float]:
    """(SE, Satterthwaite df) of a complete design: `models` sampled units against `ref_models` fixed
    reference models (0: a one-sample mean, e.g. a mitigation delta) on `prompts` prompts."""
    cell, ref = _cells(vc, samples, pilot_samples)
    a = vc["prompt"] / prompts + cell / (models * prompts) + (ref / (ref_models * prompts) if ref_models else 0.0)
    b = vc["model"] / models
    var = a + b
    den = (a**2 / max(prompts - 1, 1)) + (b**2 / (models - 1) if models > 1 else 0.0)
    df = var**2 / den if den > 0 else float(max(prompts - 1, 1))
    return math.sqrt(var), df


@functools.lru_cache(maxsize=1)
def _uniforms() -> np.ndarray:
    """Fixed draws (seeded): every MDE uses the same ones, so MDEs of nearby designs are smooth in the design."""
    return np.random.default_rng(20_21).uniform(size=(4, DRAWS))


@functools.lru_cache(maxsize=1)
def _standard_normal() -> np.ndarray:
    return sps.norm.ppf(_uniforms()[3])


@functools.lru_cache(maxsize=512)
def _chi2_mean(df: int, row: int) -> np.ndarray:
    """chi2(df) / df at the fixed uniforms of `row`: exact quantiles up to df 100, beyond it the
    Wilson-Hilferty cube (within 0.3% of the exact quantile at df 101, at the extreme draws): exact
    quantiles cost 25 ms a call, and a report computes hundreds of MDEs."""
    u = _uniforms()[row]
    if df <= 100:
        return sps.chi2.ppf(u, df) / df
    c = 2.0 / (9.0 * df)
    return (1.0 - c + sps.norm.ppf(u) * math.sqrt(c)) ** 3


def _null_draws(vc: Mapping[str, float], models: int, prompts: int, samples, pilot_samples, ref_models, alpha):
    """(noise of the estimate, its estimated SE, the two-sided critical t) over DRAWS studies of the design
    under the components, drawn from the exact sampling distribution of the complete-data estimator's
    statistics (normal model: the estimate, s2(d), s2(unit means) and s2e are independent; the last three
    scaled chi-squares). Seeded: the same inputs give the same MDE."""
    U, P = int(models), int(prompts)
    cell, ref = _cells(vc, samples, pilot_samples)
    ref_part = ref / ref_models if ref_models else 0.0
    noise = _standard_normal() * math.sqrt(vc["prompt"] / P + vc["model"] / U + cell / (U * P) + ref_part / P)
    a = (vc["prompt"] + cell / U + ref_part) * _chi2_mean(P - 1, 0) / P
    var, parts = a, [(a, P - 1)]
    if U >= 2:
        b = (vc["model"] + cell / P) * _chi2_mean(U - 1, 1) / U
        s2e = cell * _chi2_mean((U - 1) * (P - 1), 2)
        var = np.maximum(a + b - s2e / (U * P), np.maximum(a, b))
        parts.append((b, U - 1))
    den = sum(p**2 / dfp for p, dfp in parts)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(den > 0, var**2 / den, float(P - 1))
    return noise, np.sqrt(var), sps.t.ppf(1 - alpha / 2, df)


def power_at(vc, delta: float, models: int, prompts: int, samples=None, pilot_samples=None, ref_models=1, alpha=0.05):
    """Probability that the two-way test of the design rejects (two-sided, level alpha) at true effect delta."""
    noise, se, q = _null_draws(vc, models, prompts, samples, pilot_samples, ref_models, alpha)
    return float(np.mean(np.abs(delta + noise) > q * se))


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
    """Smallest true difference the design's two-way t test (level alpha, two-sided) detects with
    probability `power`, solved on the test's own sampling distribution (`_null_draws`): the t quantile's
    estimated df and the estimated SE's spread count, which matter at small model counts (3 x 30: the
    normal-theory formula (t_a + t_b) * SE gives 72% real power). NaN when a component is unknown or the
    design has no variance at all (a constant metric: nothing can be detected)."""
    keys = ("model", "prompt", "interaction") if "interaction" in vc else ("model", "prompt", "residual")
    if any(not np.isfinite(vc.get(k, math.nan)) for k in keys):
        return math.nan
    se, _ = design_se(vc, models, prompts, samples, pilot_samples, ref_models)
    if not se > 0:
        return math.nan
    noise, se_hat, q = _null_draws(vc, models, prompts, samples, pilot_samples, ref_models, alpha)
    lo, hi = 0.0, 4.0 * se
    while np.mean(np.abs(hi + noise) > q * se_hat) < power and hi < 1e6 * se:
        lo, hi = hi, 2 * hi
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.mean(np.abs(mid + noise) > q * se_hat) < power else (lo, mid)
    return float(hi)


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
