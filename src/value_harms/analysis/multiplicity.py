"""Multiplicity: one false-discovery-rate family over every test the report can headline.

The report names an effect from four sources: value-regression coefficients, comparisons of each variant
with the vanilla model, mitigation deltas and the value contrasts (analysis.contrasts), per benchmark,
category and metric. Corrected source by source (or not at all), a null study names some effect in
21-24% of runs. Here the family is every test whose p-value the report prints (a finite p;
intercepts and reference rows have none), one q-value per test over the whole family:

- Benjamini-Hochberg (default): controls the FDR for independent or positively dependent (PRDS) tests.
  Comparisons share one vanilla reference and mitigation deltas share their unmitigated side, which makes
  their statistics positively correlated; regression coefficients of one fit may correlate either way.
  Measured with perf/sim_null_studies.py (docs), BH keeps the share of null studies that name any
  effect at or below alpha, which is what the report promises.
- Benjamini-Yekutieli (`analysis.fdr_method=by`): valid under any dependence, more conservative by a
  factor sum(1/i) (about 4.5 for 50 tests).

Under the complete null every rejection is false, so FDR control at alpha is also the chance that a study
headlines anything. An underpowered test stays in the family (its p is printed) but is never headlined.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from value_harms.errors import AnalysisError

__all__ = ["FDR_METHODS", "SOURCES", "qvalues", "apply_fdr", "family_text"]

FDR_METHODS = {"bh": "Benjamini-Hochberg", "by": "Benjamini-Yekutieli"}
# source name -> (the p-value column, the columns that are never in the family)
SOURCES: dict[str, str] = {"regression": "p", "comparison": "p_value", "mitigation": "p_value", "contrast": "p_value"}
INTERCEPT_TERMS = {"const", "intercept", "(intercept)"}


def qvalues(p: Any, method: str = "bh") -> np.ndarray:
    """Step-up adjusted p-values (q-values) of `p`; NaN stays NaN and is not counted in the family."""
    if method not in FDR_METHODS:
        raise AnalysisError(f"analysis.fdr_method={method!r} is not one of {sorted(FDR_METHODS)}")
    p = np.asarray(p, dtype=float).ravel()
    q = np.full(p.shape, math.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if not m:
        return q
    if ((p[ok] < 0) | (p[ok] > 1)).any():
        raise AnalysisError("a p-value outside [0, 1] reached the multiplicity correction")
    order = np.argsort(p[ok], kind="mergesort")
    ranked = p[ok][order] * m / np.arange(1, m + 1)
    if method == "by":
        ranked = ranked * float(np.sum(1.0 / np.arange(1, m + 1)))
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]  # step-up: q_i = min over j >= i
    out = np.empty(m)
    out[order] = np.minimum(ranked, 1.0)
    q[ok] = out
    return q


def _members(source: str, frame: pd.DataFrame) -> np.ndarray:
    """Rows of `frame` in the family: a finite p, not an intercept, not a constant metric."""
    col = SOURCES[source]
    if col not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    ok = np.isfinite(pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float))
    if source == "regression" and "term" in frame.columns:
        ok &= ~frame["term"].astype(str).str.lower().isin(INTERCEPT_TERMS).to_numpy()
    if "constant" in frame.columns:
        ok &= ~frame["constant"].fillna(False).astype(bool).to_numpy()
    return ok


def apply_fdr(
    frames: Mapping[str, pd.DataFrame | None], *, alpha: float = 0.05, method: str = "bh"
) -> tuple[dict[str, pd.DataFrame | None], dict[str, Any]]:
    """Copies of the frames ({source: frame}, sources as SOURCES) with a `q` column: the q-value of each
    row's test over the family of all rows of all frames (NaN outside the family). A regression frame's
    `p_adj` and `significant` become that family q and q <= alpha. Returns (frames, family summary:
    method, alpha, size, by_source). Attributes of each frame (e.g. the regressions' skip list) are kept."""
    if not 0 < float(alpha) < 1:
        raise AnalysisError(f"analysis.alpha={alpha} must lie strictly between 0 and 1")
    unknown = set(frames) - set(SOURCES)
    if unknown:
        raise AnalysisError(f"unknown multiplicity source(s) {sorted(unknown)}; known: {sorted(SOURCES)}")
    out: dict[str, pd.DataFrame | None] = {}
    pieces: list[tuple[str, np.ndarray, np.ndarray]] = []
    for source, frame in frames.items():
        if frame is None or not isinstance(frame, pd.DataFrame):
            out[source] = frame
            continue
        f = frame.copy()
        f.attrs = dict(frame.attrs)
        mask = _members(source, f) if len(f) else np.zeros(0, dtype=bool)
        p = pd.to_numeric(f[SOURCES[source]], errors="coerce").to_numpy(dtype=float) if mask.any() else np.zeros(0)
        pieces.append((source, mask, p[mask] if mask.any() else np.zeros(0)))
        out[source] = f
    allp = np.concatenate([p for _, _, p in pieces]) if pieces else np.zeros(0)
    q = qvalues(allp, method)
    summary = {
        "method": FDR_METHODS[method],
        "alpha": float(alpha),
        "size": int(allp.size),
        "by_source": {s: int(m.sum()) for s, m, _ in pieces},
    }
    start = 0
    for source, mask, p in pieces:
        f = out[source]
        col = np.full(len(f), math.nan)
        col[mask] = q[start : start + p.size]
        start += p.size
        f["q"] = col
        if source == "regression" and len(f):
            f["p_adj"] = col
            f["significant"] = np.nan_to_num(col, nan=1.0) <= alpha
        f.attrs["family"] = summary
    return out, summary


def family_text(summary: Mapping[str, Any] | None) -> str:
    """ "Benjamini-Hochberg false discovery rate at 0.05 over 26 tests (10 regression coefficients, ...)"."""
    if not summary:
        return "no multiplicity family (no tests)"
    names = {
        "regression": "value-regression coefficients",
        "comparison": "comparisons with this vanilla model",
        "mitigation": "mitigation deltas",
        "contrast": "value contrasts",
    }
    parts = [f"{n} {names[s]}" for s, n in summary.get("by_source", {}).items() if n]
    return (
        f"{summary['method']} false discovery rate at {summary['alpha']:g} over a family of {summary['size']} "
        f"test(s)" + (f" ({', '.join(parts)})" if parts else "")
    )
