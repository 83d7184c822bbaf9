"""The report's top findings, in sentences."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from value_harms.analysis.report.format import (
    ALPHA,
    BASELINE_LABELS,
    INTERCEPT_TERMS,
    NA,
    _design,
    _empty,
    _has_text,
    _isnan,
    _normalize_mit,
    _varying,
    bench_name,
    fmt_num,
)

log = logging.getLogger(__name__)


def _significant_mask(reg: pd.DataFrame) -> pd.Series:
    if "significant" in reg:
        return reg["significant"].fillna(False).astype(bool)
    return reg["p_adj"].astype(float) < ALPHA


def _reg_findings(reg: pd.DataFrame | None) -> list[str]:
    if _empty(reg):
        return []
    r = reg[~reg["term"].astype(str).str.lower().isin(INTERCEPT_TERMS)]
    sig = r[_significant_mask(r)]
    if sig.empty:
        n = pd.to_numeric(r.get("n"), errors="coerce").max() if "n" in r else np.nan
        n_txt = str(int(n)) if not _isnan(n) else NA
        return [
            f"No value coefficient is significant after Benjamini-Hochberg correction "
            f"(N models = {n_txt}, {len(r)} coefficients tested)."
        ]
    sig = sig.assign(_p=sig["p_adj"].astype(float), _a=-sig["coef"].astype(float).abs())
    out = []
    vary = _varying(r)
    for row in sig.sort_values(["_p", "_a"]).itertuples(index=False):
        what = (f"{row.category} " if _has_text(getattr(row, "category", None)) else "") + str(row.metric)
        verb = "raises" if float(row.coef) > 0 else "lowers"
        who = f" for {', '.join(str(getattr(row, c)) for c in vary)}" if vary else ""
        out.append(
            f"{row.term} {verb} {what} on {bench_name(row.benchmark)}{who} "
            f"(coef {fmt_num(row.coef)}, p_adj {fmt_num(row.p_adj, p=True)})."
        )
    return out


def _underpowered(row: Any, what: str) -> str:
    """The sentence of a comparison whose design is below the stated minimum (issue 14)."""
    mm, mp = getattr(row, "min_models", None), getattr(row, "min_prompts", None)
    need = f"; a finding needs >= {int(mm)} models x {int(mp)} prompts" if not _isnan(mm) and not _isnan(mp) else ""
    m = getattr(row, "mde", None)
    bounded = str(getattr(row, "metric", "")) != "harmfulness_score"  # rates and probabilities lie in [0, 1]
    mde_txt = (
        "minimum detectable effect unknown (no prompt-level data)"
        if _isnan(m)
        else f"minimum detectable effect {fmt_num(m)} (80% power)"
        if not (bounded and float(m) >= 1)
        else f"minimum detectable effect {fmt_num(m)} (80% power): no effect on this 0-1 scale is detectable"
    )
    return f"{what}: underpowered ({_design(row)}{need}); {mde_txt}."


def _split_powered(frame: pd.DataFrame, reference_mask: pd.Series) -> tuple[pd.DataFrame, list[str] | None]:
    """Rows whose design meets the minimum, and the underpowered rows' sentences (None: no design columns)."""
    if "powered" not in frame.columns:
        return frame, None
    ok = frame["powered"].fillna(False).astype(bool) | reference_mask
    return frame[ok], []


def _cmp_findings(cmp: pd.DataFrame | None) -> list[str]:
    if _empty(cmp):
        return []
    is_ref = cmp["baseline"].astype(str) == "vanilla"
    powered, notes = _split_powered(cmp, is_ref)
    if notes is not None:
        for row in cmp[~cmp.index.isin(powered.index)].itertuples(index=False):
            who = BASELINE_LABELS.get(str(row.baseline), f"{row.baseline} models")
            notes.append(_underpowered(row, f"{who} vs vanilla on {bench_name(row.benchmark)} {row.metric}"))
        if powered[powered["baseline"].astype(str) != "vanilla"].empty:
            return notes
        return _cmp_findings_named(powered) + notes
    return _cmp_findings_named(cmp)


def _cmp_findings_named(cmp: pd.DataFrame) -> list[str]:
    d = cmp[(cmp["baseline"].astype(str) != "vanilla") & (pd.to_numeric(cmp["p_value"], errors="coerce") < ALPHA)]
    if d.empty:
        others = sorted(set(map(str, cmp["baseline"])) - {"vanilla"})
        if not others:
            return []
        return [f"No baseline ({', '.join(others)}) differs significantly from vanilla (p < {ALPHA})."]
    out = []
    same = [c for c in ("model", "benchmark", "metric", "category", "mitigation") if c in cmp.columns]
    stages = "stage" in cmp.columns and cmp[cmp["baseline"].astype(str) == "benign"]["stage"].nunique() > 1
    vary = _varying(cmp, ("model",))
    for row in d.assign(_p=pd.to_numeric(d["p_value"], errors="coerce")).sort_values("_p").itertuples(index=False):
        who = BASELINE_LABELS.get(str(row.baseline), f"{row.baseline} models")
        if stages and str(row.baseline) == "benign" and _has_text(row.stage):
            who += f" ({row.stage})"
        if vary:
            who += f" ({', '.join(str(getattr(row, c)) for c in vary)})"
        sel = cmp["baseline"].astype(str) == "vanilla"
        for c in same:
            sel &= cmp[c] == getattr(row, c)
        ref = cmp[sel]
        ref_mean = float(ref["mean"].iloc[0]) if len(ref) else float(row.mean) - float(row.diff_vs_ref)
        ci = (
            f", 95% CI {fmt_num(row.diff_low, signed=True)} to {fmt_num(row.diff_high, signed=True)}, {_design(row)}"
            if "diff_low" in cmp.columns and not _isnan(getattr(row, "diff_low", None))
            else ""
        )
        out.append(
            f"{who}: {bench_name(row.benchmark)} {row.metric} {fmt_num(row.mean)} vs vanilla "
            f"{fmt_num(ref_mean)} (diff {fmt_num(row.diff_vs_ref, signed=True)}{ci}, "
            f"p {fmt_num(row.p_value, p=True)})."
        )
    return out


def _mit_findings(mit: pd.DataFrame | None) -> list[str]:
    if _empty(mit):
        return []
    powered, notes = _split_powered(mit, pd.Series(False, index=mit.index))
    if notes is None:
        return _mit_findings_named(mit)
    for row in mit[~mit.index.isin(powered.index)].itertuples(index=False):
        notes.append(
            _underpowered(
                row, f"{row.mitigation} on {bench_name(row.benchmark)} {row.metric} for {row.baseline} models"
            )
        )
    return (_mit_findings_named(powered) if not powered.empty else []) + notes


def _mit_findings_named(mit: pd.DataFrame) -> list[str]:
    d = mit[pd.to_numeric(mit["p_value"], errors="coerce") < ALPHA]
    if d.empty:
        return [f"No mitigation changes any metric significantly (p < {ALPHA})."]
    out = []
    vary = _varying(d, ("model", "stage"))
    for row in d.assign(_p=pd.to_numeric(d["p_value"], errors="coerce")).sort_values("_p").itertuples(index=False):
        v = float(row.delta_mean)
        verb = "lowers" if v < 0 else "raises"
        name = str(row.mitigation)
        dis = getattr(row, "disregard", None)
        if _has_text(dis) and not isinstance(dis, float):
            name += f" (disregard: {', '.join(dis) if isinstance(dis, (list, tuple)) else dis})"
        who = f" ({', '.join(str(getattr(row, c)) for c in vary)})" if vary else ""
        out.append(
            f"{name} {verb} {bench_name(row.benchmark)} {row.metric} by {fmt_num(abs(v))} "
            f"for {row.baseline} models{who} (95% CI {fmt_num(row.ci_low)} to {fmt_num(row.ci_high)}, "
            + (f"{_design(row)}, " if "n_prompts" in mit.columns else "")
            + f"p {fmt_num(row.p_value, p=True)})."
        )
    return out


def top_findings(reg: pd.DataFrame | None, cmp: pd.DataFrame | None, mit: pd.DataFrame | None, k: int = 5) -> list[str]:
    """Up to k plain sentences, taken in turn from regressions, baselines and mitigations (each by p).

    Non-significant sources say so in one sentence ("No value coefficient is significant ...").
    """
    sources = [_reg_findings(reg), _cmp_findings(cmp), _mit_findings(_normalize_mit(mit))]
    out: list[str] = []
    i = 0
    while len(out) < k and any(i < len(s) for s in sources):
        for s in sources:
            if i < len(s) and len(out) < k:
                out.append(s[i])
        i += 1
    return out
