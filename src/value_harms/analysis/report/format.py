"""Number and table formatting for the report (markdown and HTML)."""

from __future__ import annotations

import html
import logging
import math
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


ALPHA = 0.05


NA = "–"


INTERCEPT_TERMS = {"const", "intercept", "(intercept)"}


BASELINE_LABELS = {
    "vanilla": "Vanilla models",
    "vim": "Value-aligned models",
    "control": "Fine-tuning control (flat profile)",
    "benign": "Benign fine-tuned models",
    "icl": "In-context persona models",
}


MITIGATION_ORDER = ("safety_prompt", "value_prompt", "both", "auto")


BENCHMARK_NAMES = {
    "rtp": "RealToxicityPrompts",
    "realtoxicityprompts": "RealToxicityPrompts",
    "holisticbiasr": "HolisticBiasR",
    "hex_phi": "HEx-PHI",
    "hex-phi": "HEx-PHI",
    "hexphi": "HEx-PHI",
    "beavertails": "BeaverTails",
}


P_COLUMNS = {"p", "p_adj", "p_value"}


INT_COLUMNS = {"n", "n_pairs", "failures", "n_results", "n_models", "n_prompts", "n_samples"}


def is_empty(df: pd.DataFrame | None) -> bool:
    return df is None or not isinstance(df, pd.DataFrame) or df.empty


def is_na(x: Any) -> bool:
    if x is None:
        return True
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def fmt_num(x: Any, *, p: bool = False, signed: bool = False) -> str:
    """3 decimals; NaN/None -> "–"; p-values under 0.001 -> "<0.001"; bools -> yes/no."""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if is_na(x):
        return NA
    if isinstance(x, (int, np.integer)):
        return f"{int(x):+d}" if signed else str(int(x))
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isinf(x):
            return "∞" if x > 0 else "-∞"
        if p and 0 <= x < 0.0005:
            return "<0.001"
        return f"{x:+.3f}" if signed else f"{x:.3f}"
    return str(x)


def _fmt_cell(col: str, x: Any) -> str:
    if (
        col in INT_COLUMNS
        and not is_na(x)
        and isinstance(x, (int, float, np.integer, np.floating))
        and not isinstance(x, (bool, np.bool_))
        and float(x).is_integer()
    ):
        return str(int(x))
    return fmt_num(x, p=col in P_COLUMNS)


def format_frame(df: pd.DataFrame, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """A copy of `df` (selected columns, in order, those present) with every cell a display string."""
    cols = [c for c in (columns or df.columns) if c in df.columns]
    out = pd.DataFrame({c: [_fmt_cell(c, v) for v in df[c].tolist()] for c in cols}, columns=cols)
    return out


def bench_name(key: Any) -> str:
    s = str(key)
    return BENCHMARK_NAMES.get(s.lower(), s)


def has_text(x: Any) -> bool:
    return not is_na(x) and str(x).strip() not in ("", "nan", "None", "all", "overall")


# identity columns a regression table names when they vary (regressors: target or measured values,
# analysis.injection.harm_regressions)
REG_IDENT: tuple[str, ...] = ("model", "stage", "regressors")


def varying_columns(df: pd.DataFrame, candidates: Iterable[str] = ("model", "stage")) -> list[str]:
    """The identity columns among `candidates` that take more than one value in `df`."""
    return [c for c in candidates if c in df.columns and df[c].astype(str).nunique() > 1]


def normalize_mitigation(mit: pd.DataFrame | None) -> pd.DataFrame | None:
    """stats.mitigation_effects names its columns mean_delta / n; the report's contract says
    delta_mean / n_pairs: accept both."""
    if is_empty(mit):
        return mit
    ren = {}
    if "delta_mean" not in mit.columns and "mean_delta" in mit.columns:
        ren["mean_delta"] = "delta_mean"
    if "n_pairs" not in mit.columns and "n" in mit.columns:
        ren["n"] = "n_pairs"
    return mit.rename(columns=ren) if ren else mit


def markdown_table(df: pd.DataFrame, columns: Iterable[str] | None = None) -> str:
    f = format_frame(df, columns)
    if f.empty and not len(f.columns):
        return ""

    def esc(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(c) for c in f.columns) + " |", "| " + " | ".join("---" for _ in f.columns) + " |"]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in f.itertuples(index=False, name=None)]
    return "\n".join(lines)


def html_table(df: pd.DataFrame, columns: Iterable[str] | None = None) -> str:
    f = format_frame(df, columns)
    head = "".join(f"<th>{escape_html(c)}</th>" for c in f.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape_html(v)}</td>" for v in row) + "</tr>"
        for row in f.itertuples(index=False, name=None)
    )
    return f'<div class="tbl"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def p_stars(p: Any) -> str:
    if is_na(p):
        return ""
    p = float(p)
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def escape_html(text: Any) -> str:
    """Escape element text (quotes stay readable; attributes use html.escape)."""
    return html.escape(str(text), quote=False)


def share_range(r: Any) -> str:
    """A [min, max] fallback share as "0.0%" or "2.0%-9.5%"; NA when unknown."""
    if not isinstance(r, (list, tuple)) or len(r) != 2 or any(is_na(x) for x in r):
        return NA
    lo, hi = (f"{float(x):.1%}" for x in r)
    return lo if lo == hi else f"{lo}-{hi}"


def scorer_text(s: Any) -> str:
    if isinstance(s, Mapping):
        name = s.get("scorer") or s.get("name") or s.get("package") or str(dict(s))
        return f"{name}{' (stand-in)' if s.get('stand_in') and 'stand-in' not in str(name) else ''}"
    return str(s)
