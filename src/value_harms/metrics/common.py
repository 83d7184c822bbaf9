"""Shared by every measure: what a missing value is, per-text scorer shares, a mean with its interval."""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np
from scipy import stats

# --------------------------------------------------------------------------------------------------
# Missing values


def is_missing(x: Any) -> bool:
    """None or a float NaN."""
    return x is None or (isinstance(x, float) and math.isnan(x)) or (isinstance(x, np.floating) and np.isnan(x))


# --------------------------------------------------------------------------------------------------
# Scorer shares (per-text fallback inside one metric)


def scorer_shares(counts: Mapping[str, int], primary: str | None = None) -> dict[str, Any]:
    """Share of the scored texts each scorer scored, from {Score.scorer tag: count}.

    `primary`: the configured first backend (e.g. "perspective"); a tag belongs to it when it is the
    name or starts with "<name>:". fallback_share = share scored by any other backend (None when
    nothing was scored; 0.0 when there is no primary to fall back from)."""
    counts = {str(k): int(v) for k, v in counts.items() if v}
    total = sum(counts.values())
    if not total:
        return {"shares": {}, "fallback_share": None, "scored": 0}
    shares = {k: v / total for k, v in sorted(counts.items())}
    if primary is None:
        return {"shares": shares, "fallback_share": 0.0, "scored": total}
    own = sum(v for k, v in counts.items() if k == primary or k.startswith(f"{primary}:"))
    return {"shares": shares, "fallback_share": (total - own) / total, "scored": total}


# --------------------------------------------------------------------------------------------------
# Intervals


def mean_ci(values: Iterable[float | None], conf: float = 0.95) -> dict[str, Any]:
    """Mean with a two-sided Student-t confidence interval (sem with ddof=1); missing values excluded and
    counted. With fewer than 2 values the bounds (and sem) are None."""
    vals = list(values)
    a = np.asarray([float(v) for v in vals if not is_missing(v)], dtype=float)
    n = int(a.size)
    out: dict[str, Any] = {
        "mean": float(a.mean()) if n else None,
        "lower": None,
        "upper": None,
        "sem": None,
        "n": n,
        "missing": len(vals) - n,
        "conf": float(conf),
    }
    if n >= 2:
        sem = float(a.std(ddof=1) / math.sqrt(n))
        half = float(stats.t.ppf((1 + conf) / 2, df=n - 1)) * sem
        out.update(sem=sem, lower=out["mean"] - half, upper=out["mean"] + half)
    return out
