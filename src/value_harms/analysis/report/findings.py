"""The report's top findings, in sentences (one multiplicity family, each estimand named).

An effect is named only when its test is in the report's family (analysis.multiplicity), its q-value is
<= alpha and its design meets the stated minimum; every other test is summarised, reported as
underpowered with its minimum detectable effect, or as a constant metric that cannot be estimated.
Every sentence says what it compares with: "vs this vanilla model" (the one fixed model every variant is
compared with), a fine-tuning control, the same profiles as in-context personas, the same models without
the mitigation, or the slope across the value-aligned profiles.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
import pandas as pd

from value_harms.analysis.design import design_text
from value_harms.analysis.multiplicity import apply_fdr
from value_harms.analysis.report.format import (
    ALPHA,
    BASELINE_LABELS,
    INTERCEPT_TERMS,
    NA,
    bench_name,
    fmt_num,
    has_text,
    is_empty,
    is_na,
    normalize_mitigation,
    varying_columns,
)
from value_harms.metrics import unit_interval

log = logging.getLogger(__name__)

VANILLA = "this vanilla model"
# (sentence, names an effect) per source; top_findings interleaves the sources in this order so that the
# contrasts that isolate values lead.
SOURCE_ORDER = ("contrast", "regression", "comparison", "mitigation")


def significant_mask(reg: pd.DataFrame, alpha: float = ALPHA) -> pd.Series:
    """Coefficients headlined: q <= alpha (the family q-value; p_adj on frames without one) and powered."""
    q = reg["q"] if "q" in reg else reg["p_adj"]
    sig = pd.to_numeric(q, errors="coerce").le(alpha)
    if "powered" in reg:
        sig &= reg["powered"].fillna(False).astype(bool)
    return sig


def _q(row: Any) -> float:
    q = getattr(row, "q", None)
    return float(q) if not is_na(q) else float("nan")


def _stats(row: Any, family: Mapping[str, Any], p: str = "p_value") -> str:
    """ "p 0.003, q 0.021 over 26 tests" (p-values as fmt_num prints them)."""
    return f"p {fmt_num(getattr(row, p), p=True)}, q {fmt_num(_q(row), p=True)} over {family.get('size', NA)} tests"


def _none_q(alpha: float, family: Mapping[str, Any]) -> str:
    return (
        f"every q > {alpha:g} among the tests whose design meets the minimum; family of {family.get('size', NA)} tests"
    )


def constant_row(row: Any) -> bool:
    """A test without variance: the `constant` flag of inference, or a zero se / minimum detectable effect."""
    flag = getattr(row, "constant", None)
    if isinstance(flag, (bool, np.bool_)) and flag:
        return True
    return any(not is_na(getattr(row, c, None)) and float(getattr(row, c)) == 0 for c in ("se", "mde"))


def _constant_text(what: str, row: Any, value: str = "mean") -> str:
    v = getattr(row, value, None)
    at = f" ({fmt_num(v)} everywhere)" if not is_na(v) else ""
    return f"{what}: the metric is constant here{at}; nothing can be estimated."


def _underpowered(row: Any, what: str, fixed_reference: bool = False) -> str:
    """The sentence of a test whose design is below the stated minimum. A fixed reference (the
    vanilla model's own mitigation delta) is one model by design: only the prompt minimum applies."""
    mm, mp = getattr(row, "min_models", None), getattr(row, "min_prompts", None)
    if fixed_reference and not is_na(mp):
        need = f"; a finding needs >= {int(mp)} prompts (one fixed model)"
    elif not is_na(mm) and not is_na(mp):
        need = f"; a finding needs >= {int(mm)} models x {int(mp)} prompts"
    else:
        need = ""
    m = getattr(row, "mde", None)
    bounded = unit_interval(getattr(row, "metric", ""))  # its declared scale (metrics.MetricSpec) is [0, 1]
    mde_txt = (
        "minimum detectable effect unknown (no prompt-level data)"
        if is_na(m)
        else f"minimum detectable effect {fmt_num(m)} (80% power)"
        if not (bounded and float(m) >= 1)
        else f"minimum detectable effect {fmt_num(m)} (80% power): no effect on this 0-1 scale is detectable"
    )
    return f"{what}: underpowered ({design_text(row)}{need}); {mde_txt}."


def _powered(frame: pd.DataFrame) -> pd.Series:
    if "powered" not in frame.columns:
        return pd.Series(True, index=frame.index)
    return frame["powered"].fillna(False).astype(bool)


def _constant_mask(frame: pd.DataFrame) -> pd.Series:
    """constant_row over a frame, vectorised."""
    out = pd.Series(False, index=frame.index)
    if "constant" in frame.columns:
        out |= frame["constant"].map(lambda x: isinstance(x, (bool, np.bool_)) and bool(x)).astype(bool)
    for c in ("se", "mde"):
        if c in frame.columns:
            out |= pd.to_numeric(frame[c], errors="coerce").eq(0)
    return out


def named_mask(frame: pd.DataFrame, alpha: float) -> pd.Series:
    """The rows the report may name as effects: family q <= alpha, a design that meets the minimum (powered), not
    constant. The findings and the figures' stars both read it."""
    q = pd.to_numeric(frame["q"], errors="coerce") if "q" in frame else pd.Series(np.nan, index=frame.index)
    return q.le(alpha) & _powered(frame) & ~_constant_mask(frame)


# --------------------------------------------------------------------------------------------------
# Value regressions


# how a sentence says what the regressors were (column regressors, analysis.injection.harm_regressions)
REGRESSORS_TEXT = {"target": "on their target values", "measured": "on their measured PVQ values"}


def _reg_findings(
    reg: pd.DataFrame | None, family: Mapping[str, Any], alpha: float, skipped: list[Mapping[str, Any]]
) -> list[tuple[str, bool]]:
    """Regression sentences; with target- and measured-value fits, each set labelled, named effects first."""
    if isinstance(reg, pd.DataFrame) and len(reg) and "regressors" in reg:
        out: list[tuple[str, bool]] = []
        for kind, g in reg.groupby("regressors", sort=False):
            label = REGRESSORS_TEXT.get(str(kind), f"on {kind}")
            out += _reg_findings_of(g.drop(columns="regressors"), family, alpha, [], label)
        return sorted(out, key=lambda sentence: not sentence[1])  # stable: each set keeps its order
    return _reg_findings_of(reg, family, alpha, skipped)


def _reg_findings_of(
    reg: pd.DataFrame | None,
    family: Mapping[str, Any],
    alpha: float,
    skipped: list[Mapping[str, Any]],
    label: str = "",
) -> list[tuple[str, bool]]:
    if reg is None or not isinstance(reg, pd.DataFrame):
        return []
    if reg.empty:
        if not skipped:
            return []
        why = "; ".join(dict.fromkeys(str(s.get("reason", "?")) for s in skipped))
        return [(f"No value regression was fitted ({len(skipped)} skipped: {why}).", False)]
    r = reg[~reg["term"].astype(str).str.lower().isin(INTERCEPT_TERMS)]
    who = BASELINE_LABELS.get(str(r["baseline"].iloc[0]), "value-aligned") if "baseline" in r else None
    across = f"across the {(who or 'Value-aligned models').lower()}' profiles" + (f" {label}" if label else "")
    sig = r[significant_mask(r, alpha)]
    out: list[tuple[str, bool]] = []
    vary = varying_columns(r)
    sig = sig.assign(qv=pd.to_numeric(sig["q"] if "q" in sig else sig["p_adj"], errors="coerce"))
    for row in sig.assign(_a=-sig["coef"].astype(float).abs()).sort_values(["qv", "_a"]).itertuples(index=False):
        what = (f"{row.category} " if has_text(getattr(row, "category", None)) else "") + str(row.metric)
        verb = "raises" if float(row.coef) > 0 else "lowers"
        by = f" for {', '.join(str(getattr(row, c)) for c in vary)}" if vary else ""
        out.append(
            (
                f"{row.term} {verb} {what} on {bench_name(row.benchmark)} {across}{by} "
                f"(slope {fmt_num(row.coef)} per intensity point, {int(row.n)} profiles, "
                f"p {fmt_num(row.p, p=True)}, q {fmt_num(row.qv, p=True)} over {family.get('size', NA)} tests).",
                True,
            )
        )
    powered = r[_powered(r) & pd.to_numeric(r["p"], errors="coerce").notna()]
    if sig.empty and len(powered):
        n = pd.to_numeric(powered.get("n"), errors="coerce").max() if "n" in powered else np.nan
        out.append(
            (
                f"No value coefficient is significant {across} (q <= {alpha:g}; N models = "
                f"{int(n) if not is_na(n) else NA}, {len(powered)} coefficients in a family of "
                f"{family.get('size', NA)} tests).",
                False,
            )
        )
    weak = r[~_powered(r)]
    if len(weak):
        out.append((_reg_underpowered(weak, across), False))
    return out


def _reg_underpowered(weak: pd.DataFrame, across: str) -> str:
    keys = [c for c in ("benchmark", "category", "metric") if c in weak.columns]
    fits = weak.drop_duplicates(keys)
    names = [
        f"{bench_name(f.benchmark)} " + (f"{f.category} " if has_text(getattr(f, "category", None)) else "") + f.metric
        for f in fits.itertuples(index=False)
    ]
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    n = pd.to_numeric(weak["n"], errors="coerce")
    dfr = pd.to_numeric(weak.get("df_resid"), errors="coerce") if "df_resid" in weak else pd.Series(dtype=float)
    mde = pd.to_numeric(weak.get("mde"), errors="coerce").dropna() if "mde" in weak else pd.Series(dtype=float)
    need = weak["min_profiles"].iloc[0] if "min_profiles" in weak else None
    design = f"{int(n.min())}" + (f"-{int(n.max())}" if n.max() != n.min() else "") + " profiles"
    if len(dfr.dropna()):
        design += f", {int(dfr.min())} residual df"
    mde_txt = (
        f"minimum detectable slope {fmt_num(mde.min())} to {fmt_num(mde.max())} per intensity point (80% power)"
        if len(mde)
        else "minimum detectable slope unknown"
    )
    return (
        f"Value regressions {across} ({shown}): underpowered ({design}"
        + (f"; a finding needs >= {int(need)} profiles" if not is_na(need) else "")
        + f"); {mde_txt}."
    )


# --------------------------------------------------------------------------------------------------
# Comparisons with the vanilla model


def _who(row: Any, stages: bool = False, vary: list[str] | None = None) -> str:
    who = BASELINE_LABELS.get(str(row.baseline), f"{row.baseline} models")
    if stages and has_text(getattr(row, "stage", None)):
        who += f" ({row.stage})"
    if vary:
        who += f" ({', '.join(str(getattr(row, c)) for c in vary)})"
    return who


def _cmp_findings(cmp: pd.DataFrame | None, family: Mapping[str, Any], alpha: float) -> list[tuple[str, bool]]:
    if is_empty(cmp):
        return []
    test = cmp[cmp["baseline"].astype(str) != "vanilla"]
    if test.empty:
        return []
    named = test[named_mask(test, alpha)]
    out = _cmp_named(cmp, named, family)
    const = _constant_mask(test)
    testable = test[_powered(test) & ~const]
    if named.empty and len(testable):
        others = sorted(set(map(str, testable["baseline"])))
        out.append((f"No variant ({', '.join(others)}) differs from {VANILLA} ({_none_q(alpha, family)}).", False))
    for row in test[const].itertuples(index=False):
        what = f"{_who(row)} vs {VANILLA} on {bench_name(row.benchmark)} {row.metric}"
        out.append((_constant_text(what, row), False))
    for row in test[~_powered(test) & ~const].itertuples(index=False):
        out.append((_underpowered(row, f"{_who(row)} vs {VANILLA} on {bench_name(row.benchmark)} {row.metric}"), False))
    return out


def _cmp_named(cmp: pd.DataFrame, named: pd.DataFrame, family: Mapping[str, Any]) -> list[tuple[str, bool]]:
    out = []
    same = [c for c in ("model", "benchmark", "metric", "category", "mitigation") if c in cmp.columns]
    stages = "stage" in cmp.columns and cmp[cmp["baseline"].astype(str) == "benign"]["stage"].nunique() > 1
    vary = varying_columns(cmp, ("model",))
    for row in named.assign(_q=pd.to_numeric(named["q"], errors="coerce")).sort_values("_q").itertuples(index=False):
        sel = cmp["baseline"].astype(str) == "vanilla"
        for c in same:
            sel &= cmp[c] == getattr(row, c)
        ref = cmp[sel]
        ref_mean = float(ref["mean"].iloc[0]) if len(ref) else float(row.mean) - float(row.diff_vs_ref)
        ci = (
            f", 95% CI {fmt_num(row.diff_low, signed=True)} to {fmt_num(row.diff_high, signed=True)}, "
            f"{design_text(row)}"
            if not is_na(getattr(row, "diff_low", None))
            else ""
        )
        who = _who(row, stages and str(row.baseline) == "benign", vary)
        out.append(
            (
                f"{who}: {bench_name(row.benchmark)} {row.metric} {fmt_num(row.mean)} vs {VANILLA} "
                f"{fmt_num(ref_mean)} (diff {fmt_num(row.diff_vs_ref, signed=True)}{ci}, {_stats(row, family)}).",
                True,
            )
        )
    return out


# --------------------------------------------------------------------------------------------------
# Mitigation deltas


def _mit_findings(mit: pd.DataFrame | None, family: Mapping[str, Any], alpha: float) -> list[tuple[str, bool]]:
    if is_empty(mit):
        return []
    named = mit[named_mask(mit, alpha)]
    out: list[tuple[str, bool]] = []
    vary = varying_columns(mit, ("model", "stage"))
    for row in named.assign(_q=pd.to_numeric(named["q"], errors="coerce")).sort_values("_q").itertuples(index=False):
        v = float(row.delta_mean)
        name = str(row.mitigation)
        dis = getattr(row, "disregard", None)
        if has_text(dis) and not isinstance(dis, float):
            name += f" (disregard: {', '.join(dis) if isinstance(dis, (list, tuple)) else dis})"
        who = f" ({', '.join(str(getattr(row, c)) for c in vary)})" if vary else ""
        design = f"{design_text(row)}, " if not is_na(getattr(row, "n_prompts", None)) else ""
        out.append(
            (
                f"{name} {'lowers' if v < 0 else 'raises'} {bench_name(row.benchmark)} {row.metric} by "
                f"{fmt_num(abs(v))} within {_models(row)}{who} (the same models and prompts without it; "
                f"95% CI {fmt_num(row.ci_low)} to {fmt_num(row.ci_high)}, {design}{_stats(row, family)}).",
                True,
            )
        )
    const = _constant_mask(mit)
    if named.empty and (_powered(mit) & ~const).any():
        out.append((f"No mitigation changes any metric within the same models ({_none_q(alpha, family)}).", False))
    for row in mit[const].itertuples(index=False):
        what = f"{row.mitigation} on {bench_name(row.benchmark)} {row.metric} within {_models(row)}"
        out.append((_constant_text(what, row, "mean_reference"), False))
    for row in mit[~_powered(mit) & ~const].itertuples(index=False):
        what = f"{row.mitigation} on {bench_name(row.benchmark)} {row.metric} within {_models(row)}"
        out.append((_underpowered(row, what, fixed_reference=str(row.baseline) == "vanilla"), False))
    return out


def _models(row: Any) -> str:
    if str(row.baseline) == "vanilla":
        return VANILLA
    return f"the {BASELINE_LABELS.get(str(row.baseline), f'{row.baseline} models').lower()}"


# --------------------------------------------------------------------------------------------------
# Contrasts that isolate values (analysis.contrasts)

CONTRAST_LABELS = {
    "vim_vs_control": "Value-aligned models vs a fine-tuning control",
    "vim_vs_icl": "Value-aligned models vs the same profiles as in-context personas",
}


def _con_findings(con: pd.DataFrame | None, family: Mapping[str, Any], alpha: float) -> list[tuple[str, bool]]:
    if is_empty(con):
        return []
    named = con[named_mask(con, alpha)]
    out: list[tuple[str, bool]] = []
    for row in named.assign(_q=pd.to_numeric(named["q"], errors="coerce")).sort_values("_q").itertuples(index=False):
        ci = f", 95% CI {fmt_num(row.ci_low, signed=True)} to {fmt_num(row.ci_high, signed=True)}"
        out.append(
            (
                f"{_con_label(row)}: {bench_name(row.benchmark)} {row.metric} {fmt_num(row.mean_group)} vs "
                f"{fmt_num(row.mean_control)} (diff {fmt_num(row.estimate, signed=True)}: {row.estimand}"
                f"{ci if not is_na(row.ci_low) else ''}, {design_text(row)}, {_stats(row, family)}).",
                True,
            )
        )
    const = _constant_mask(con)
    if named.empty and (_powered(con) & ~const).any():
        kinds = ", ".join(sorted(set(map(str, con["contrast"]))))
        out.append((f"No value contrast ({kinds}) is significant ({_none_q(alpha, family)}).", False))
    for row in con[const].itertuples(index=False):
        out.append(
            (_constant_text(f"{_con_label(row)} on {bench_name(row.benchmark)} {row.metric}", row, "mean_group"), False)
        )
    for row in con[~_powered(con) & ~const].itertuples(index=False):
        out.append((_underpowered(row, f"{_con_label(row)} on {bench_name(row.benchmark)} {row.metric}"), False))
    return out


def _con_label(row: Any) -> str:
    base = CONTRAST_LABELS.get(str(row.contrast), str(row.contrast))
    return f"{base} ({row.group} vs {row.control})"


# --------------------------------------------------------------------------------------------------


def _bare(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    if not isinstance(frame, pd.DataFrame):
        return frame
    out = frame.copy(deep=False)
    out.attrs = {}
    return out


def findings_detail(
    reg: pd.DataFrame | None,
    cmp: pd.DataFrame | None,
    mit: pd.DataFrame | None,
    con: pd.DataFrame | None = None,
    *,
    k: int = 5,
    alpha: float = ALPHA,
    fdr_method: str = "bh",
) -> list[dict[str, Any]]:
    """Up to k findings as {"text", "named" (the sentence names an effect), "source"}, taken in turn from
    the value contrasts, regressions, comparisons with the vanilla model and mitigations; within a
    source, named effects first (by q), then the summaries and the underpowered / constant notes.
    Frames without a family q-value (column q) are corrected together here (analysis.multiplicity)."""
    mit = normalize_mitigation(mit)
    frames = {"contrast": con, "regression": reg, "comparison": cmp, "mitigation": mit}
    have = {s: f for s, f in frames.items() if isinstance(f, pd.DataFrame) and len(f)}
    family = next((f.attrs.get("family") for f in have.values() if "family" in f.attrs), None)
    if not have or any("q" not in f.columns for f in have.values()) or family is None:
        corrected, family = apply_fdr(frames, alpha=alpha, method=fdr_method)
        frames.update(corrected)
    reg = frames["regression"]
    skipped = list(reg.attrs.get("skipped") or []) if isinstance(reg, pd.DataFrame) else []
    # pandas deep-copies attrs (the skip list, the family) into every derived frame: work on bare copies
    bare = {s: _bare(f) for s, f in frames.items()}
    sources = {
        "contrast": _con_findings(bare["contrast"], family, alpha),
        "regression": _reg_findings(bare["regression"], family, alpha, skipped),
        "comparison": _cmp_findings(bare["comparison"], family, alpha),
        "mitigation": _mit_findings(bare["mitigation"], family, alpha),
    }
    out: list[dict[str, Any]] = []
    i = 0
    while len(out) < k and any(i < len(s) for s in sources.values()):
        for name in SOURCE_ORDER:
            s = sources[name]
            if i < len(s) and len(out) < k:
                out.append({"text": s[i][0], "named": s[i][1], "source": name})
        i += 1
    return out


def top_findings(
    reg: pd.DataFrame | None,
    cmp: pd.DataFrame | None,
    mit: pd.DataFrame | None,
    k: int = 5,
    con: pd.DataFrame | None = None,
    *,
    alpha: float = ALPHA,
    fdr_method: str = "bh",
) -> list[str]:
    """Up to k plain sentences (findings_detail). Sources without a named effect say so in one sentence."""
    return [f["text"] for f in findings_detail(reg, cmp, mit, con, k=k, alpha=alpha, fdr_method=fdr_method)]
