"""Figures, a Markdown + self-contained HTML report, plain-sentence findings and W&B logging.

Built on the frames of `analysis.stats` / `analysis.tidy` (column contracts in the module docs
there); every function accepts empty or missing frames and simply leaves the part out.

    figs = make_figures(reg, cmp, mit, out_dir / "figures")
    paths = write_report(out_dir, reg=reg, cmp=cmp, mit=mit, aln=aln, fid=fid,
                         provenance=prov, findings=top_findings(reg, cmp, mit), auto_mitigation=None)
    log_report_to_wandb(run, figs, {"regressions": reg, "baselines": cmp, ...})

Figures use Matplotlib's object API with the Agg canvas (no pyplot, no global backend change).
Numbers are printed with 3 decimals, p-values below 0.001 as "<0.001", missing values as "–".
W&B is optional: logging failures are warnings, never errors.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from value_harms.values import HIGHER_ORDER, VALUES

log = logging.getLogger(__name__)

__all__ = ["make_figures", "write_report", "top_findings", "log_report_to_wandb", "fmt_num", "markdown_table",
           "html_table", "format_frame", "bench_name"]

DPI = 110
ALPHA = 0.05
NA = "–"
# Above this many benchmark/category/metric columns the heatmap is split into one per metric.
MAX_HEATMAP_COLUMNS = 16
INTERCEPT_TERMS = {"const", "intercept", "(intercept)"}
BASELINE_ORDER = ("vanilla", "vim", "benign", "icl")
BASELINE_LABELS = {
    "vanilla": "Vanilla models",
    "vim": "Value-aligned models",
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


# ----------------------------------------------------------------------------------------------
# formatting helpers
# ----------------------------------------------------------------------------------------------

def _empty(df: pd.DataFrame | None) -> bool:
    return df is None or not isinstance(df, pd.DataFrame) or df.empty


def _isnan(x: Any) -> bool:
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
    if _isnan(x):
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
    if col in INT_COLUMNS and not _isnan(x) and isinstance(x, (int, float, np.integer, np.floating)) \
            and not isinstance(x, (bool, np.bool_)) and float(x).is_integer():
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


def _has_text(x: Any) -> bool:
    return not _isnan(x) and str(x).strip() not in ("", "nan", "None", "all", "overall")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "x"


def _varying(df: pd.DataFrame, candidates: Iterable[str] = ("model", "stage")) -> list[str]:
    """The identity columns among `candidates` that take more than one value in `df`."""
    return [c for c in candidates if c in df.columns and df[c].astype(str).nunique() > 1]


def _normalize_mit(mit: pd.DataFrame | None) -> pd.DataFrame | None:
    """stats.mitigation_effects names its columns mean_delta / n; the report's contract says
    delta_mean / n_pairs: accept both."""
    if _empty(mit):
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

    lines = ["| " + " | ".join(esc(c) for c in f.columns) + " |",
             "| " + " | ".join("---" for _ in f.columns) + " |"]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in f.itertuples(index=False, name=None)]
    return "\n".join(lines)


def html_table(df: pd.DataFrame, columns: Iterable[str] | None = None) -> str:
    f = format_frame(df, columns)
    head = "".join(f"<th>{_esc(c)}</th>" for c in f.columns)
    body = "".join("<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in row) + "</tr>"
                   for row in f.itertuples(index=False, name=None))
    return f'<div class="tbl"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _stars(p: Any) -> str:
    if _isnan(p):
        return ""
    p = float(p)
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


# ----------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------

def _new_figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=DPI, layout="constrained")


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _term_order(terms: Iterable[str]) -> list[str]:
    present = [t for t in dict.fromkeys(str(t) for t in terms) if t.lower() not in INTERCEPT_TERMS]
    known = [t for t in (*VALUES, *HIGHER_ORDER) if t in present]
    return known + sorted(t for t in present if t not in known)


def _column_label(bench: Any, cat: Any, metric: Any) -> str:
    parts = [bench_name(bench)] + ([str(cat)] if _has_text(cat) else []) + [str(metric)]
    return " / ".join(parts)


def _heatmap(reg: pd.DataFrame, title: str, path: Path) -> Path | None:
    terms = _term_order(reg["term"])
    if not terms:
        return None
    ident = _varying(reg) + ["benchmark", "category", "metric"]
    keys = list(zip(*(reg[c] for c in ident)))
    cols = list(dict.fromkeys(keys))
    colidx = {c: j for j, c in enumerate(cols)}
    rowidx = {t: i for i, t in enumerate(terms)}
    coef = np.full((len(terms), len(cols)), np.nan)
    pad = np.full_like(coef, np.nan)
    for key, r in zip(keys, reg.itertuples(index=False)):
        t = str(r.term)
        if t not in rowidx:
            continue
        i, j = rowidx[t], colidx[key]
        coef[i, j] = r.coef if not _isnan(r.coef) else np.nan
        pad[i, j] = r.p_adj if not _isnan(r.p_adj) else np.nan
    finite = np.abs(coef[np.isfinite(coef)])
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0

    import matplotlib as mpl
    from matplotlib.colors import TwoSlopeNorm

    n_r, n_c = len(terms), len(cols)
    show_values = n_c <= 12
    fig = _new_figure(max(6.0, 0.85 * n_c + 3.5), max(3.5, 0.42 * n_r + 2.6))
    ax = fig.add_subplot()
    cmap = mpl.colormaps["RdBu_r"].with_extremes(bad="#d9d9d9")
    norm = TwoSlopeNorm(vmin=-vmax, vcenter=0.0, vmax=vmax)
    im = ax.imshow(np.ma.masked_invalid(coef), cmap=cmap, norm=norm, aspect="auto")
    for i in range(n_r):
        for j in range(n_c):
            c = coef[i, j]
            if not np.isfinite(c):
                ax.text(j, i, NA, ha="center", va="center", fontsize=8, color="#555555")
                continue
            star = _stars(pad[i, j])
            text = f"{c:.3f}{chr(10) + star if star else ''}" if show_values else star
            if text:
                color = "white" if abs(c) > 0.6 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=8 if show_values else 10,
                        color=color, fontweight="bold" if star else "normal", linespacing=0.9)
    ax.set_yticks(range(n_r), labels=terms, fontsize=9)
    ax.set_xticks(range(n_c), labels=[" / ".join([*map(str, c[:-3]), _column_label(*c[-3:])]) for c in cols],
                  fontsize=8,
                  rotation=40, ha="right", rotation_mode="anchor")
    n_basic = sum(t in VALUES for t in terms)
    if 0 < n_basic < n_r:
        ax.axhline(n_basic - 0.5, color="black", lw=1.2)
    ax.set_xticks(np.arange(-0.5, n_c, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n_r, 1), minor=True)
    ax.grid(which="minor", color="white", lw=0.8)
    ax.tick_params(which="minor", length=0)
    cb = fig.colorbar(im, ax=ax, shrink=0.85)
    std = "standardized" in reg and reg["standardized"].fillna(False).astype(bool).all()
    cb.set_label("standardized coefficient (SD units)" if std else "coefficient (per point of value intensity)",
                 fontsize=9)
    ax.set_title(f"{title}\n* p_adj<0.05  ** <0.01  *** <0.001 (Benjamini-Hochberg); grey: not fitted",
                 fontsize=10)
    return _save(fig, path)


def _ci_err(mean: np.ndarray, ci_low, ci_high):
    """Error-bar lengths below/above the mean and the mask of rows with a finite mean and CI."""
    low = pd.to_numeric(pd.Series(list(ci_low)), errors="coerce").to_numpy(dtype=float)
    high = pd.to_numeric(pd.Series(list(ci_high)), errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(mean) & np.isfinite(low) & np.isfinite(high)
    lo = np.where(ok, np.clip(mean - np.where(ok, low, 0), 0, None), 0.0)
    hi = np.where(ok, np.clip(np.where(ok, high, 0) - mean, 0, None), 0.0)
    return lo, hi, ok


def _order_rows(d: pd.DataFrame, extra: Iterable[str] = ()) -> pd.DataFrame:
    """Rows by baseline (vanilla, vim, benign, icl, others), then stage and `extra` columns."""
    keys = [c for c in ("stage", *extra) if c in d.columns]
    d = d.assign(_o=[BASELINE_ORDER.index(b) if b in BASELINE_ORDER else 99 for b in d["baseline"].astype(str)],
                 _bn=d["baseline"].astype(str), **{f"_{c}": d[c].astype(str) for c in keys})
    return d.sort_values(["_o", "_bn", *[f"_{c}" for c in keys]], kind="stable")


def _bar_labels(d: pd.DataFrame, parts: Iterable[str], sep: str) -> list[str]:
    """Bar labels from `parts`; the stage is added where it tells apart rows that would share a label."""
    parts = [c for c in parts if c in d.columns]
    base = [sep.join(str(v) for v in row) for row in zip(*(d[c] for c in parts))]
    if "stage" in d.columns:
        counts = pd.Series(base).value_counts()
        base = [(str(st) if str(st).startswith(b) else f"{b} ({st})") if counts[b] > 1 and _has_text(st) else b
                for b, st in zip(base, d["stage"])]
    return base


def _bars(cmp_b: pd.DataFrame, bench: Any, path: Path) -> Path | None:
    pkeys = ["metric", *_varying(cmp_b, ("model", "category", "mitigation"))]
    panels = list(dict.fromkeys(zip(*(cmp_b[c] for c in pkeys))))
    if not panels:
        return None
    ncol = min(3, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig = _new_figure(max(5.5, 3.8 * ncol), 3.4 * nrow + 0.6)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    import matplotlib as mpl

    palette = mpl.colormaps["tab10"]
    for k, panel in enumerate(panels):
        ax = axes[k // ncol][k % ncol]
        sel = np.logical_and.reduce([(cmp_b[c] == v).to_numpy() for c, v in zip(pkeys, panel)])
        d = _order_rows(cmp_b[sel])
        bases = d["baseline"].astype(str).tolist()
        labels = _bar_labels(d, ["baseline"], " ")
        if "n_prompts" in d.columns:  # issue 14: the design under each bar (models x prompts x samples)
            labels = [f"{lb}\n{_design(r).replace(' models x ', 'x').replace(' prompts x ', 'x').replace(' samples', '')}"
                      for lb, r in zip(labels, d.itertuples(index=False))]
        mean = pd.to_numeric(d["mean"], errors="coerce").to_numpy(dtype=float)
        lo, hi, ok = _ci_err(mean, d["ci_low"], d["ci_high"])
        x = np.arange(len(bases))
        colors = [palette(BASELINE_ORDER.index(b) if b in BASELINE_ORDER else 4 + i) for i, b in enumerate(bases)]
        ax.bar(x, np.nan_to_num(mean), color=colors, edgecolor="black", lw=0.6)
        if ok.any():
            ax.errorbar(x[ok], mean[ok], yerr=[lo[ok], hi[ok]], fmt="none", ecolor="black", capsize=4, lw=1.2)
        for xi, m, h, p in zip(x, mean, hi, d["p_value"] if "p_value" in d else [np.nan] * len(x)):
            label = NA if not np.isfinite(m) else f"{m:.3f}{_stars(p)}"
            ax.annotate(label, (xi, (m if np.isfinite(m) else 0) + h), xytext=(0, 3),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8)
        rot = 25 if sum(len(lb) for lb in labels) > 40 else 0
        ax.set_xticks(x, labels=labels, fontsize=9, rotation=rot, ha="right" if rot else "center",
                      rotation_mode="anchor" if rot else "default")
        ax.set_title(" · ".join(map(str, panel)), fontsize=10)
        ax.margins(y=0.15)
        ax.axhline(0, color="black", lw=0.6)
    for k in range(len(panels), nrow * ncol):
        axes[k // ncol][k % ncol].set_visible(False)
    design = "; models x prompts x samples under each bar" if "n_prompts" in cmp_b.columns else ""
    fig.suptitle(f"{bench_name(bench)}: mean per baseline\n(95% CI; * p<0.05 vs reference{design})", fontsize=11)
    return _save(fig, path)


def _mitigation(mit: pd.DataFrame, path: Path) -> Path | None:
    gkeys = ["benchmark", "metric", *_varying(mit, ("model", "category"))]
    groups = list(dict.fromkeys(zip(*(mit[c] for c in gkeys))))
    if not groups:
        return None
    import matplotlib as mpl

    palette = mpl.colormaps["tab10"]
    mits = [m for m in MITIGATION_ORDER if m in set(mit["mitigation"])] + \
        sorted(set(map(str, mit["mitigation"])) - set(MITIGATION_ORDER))
    color = {m: palette(i) for i, m in enumerate(mits)}
    masks = [np.logical_and.reduce([(mit[c] == v).to_numpy() for c, v in zip(gkeys, g)]) for g in groups]
    sizes = [int(m.sum()) for m in masks]
    fig = _new_figure(8.0, 0.32 * sum(sizes) + 0.9 * len(groups) + 0.8)
    axes = fig.subplots(len(groups), 1, squeeze=False, gridspec_kw={"height_ratios": [s + 1.2 for s in sizes]})
    for ax, g, mask in zip(axes[:, 0], groups, masks):
        d = mit[mask]
        d = _order_rows(d.assign(_mi=[mits.index(str(x)) for x in d["mitigation"]]), ["_mi"])
        y = np.arange(len(d))[::-1]
        dm = pd.to_numeric(d["delta_mean"], errors="coerce").to_numpy(dtype=float)
        lo, hi, ok = _ci_err(dm, d["ci_low"], d["ci_high"])
        ax.barh(y, np.nan_to_num(dm), height=0.7,
                color=[color[str(x)] for x in d["mitigation"]], edgecolor="black", lw=0.5)
        if ok.any():
            ax.errorbar(dm[ok], y[ok], xerr=[lo[ok], hi[ok]], fmt="none", ecolor="black", capsize=3, lw=1.2)
        for yi, v, p in zip(y, dm, d["p_value"]):
            if not np.isfinite(v):
                ax.text(0, yi, f" {NA}", va="center", fontsize=8)
            elif _stars(p):
                ax.text(0, yi, f" {_stars(p)} ", va="center", ha="left" if v < 0 else "right", fontsize=9)
        ax.axvline(0, color="black", lw=1.0)
        d = d.assign(_mlab=[f"{mg} [{', '.join(dr) if isinstance(dr, (list, tuple)) else dr}]"
                            if "disregard" in d and _has_text(dr) and not isinstance(dr, float) else str(mg)
                            for mg, dr in zip(d["mitigation"], d["disregard"] if "disregard" in d
                                              else [None] * len(d))])
        ax.set_yticks(y, labels=_bar_labels(d, ["baseline", "_mlab"], " · "), fontsize=9)
        ax.set_title(" / ".join([bench_name(g[0]), *map(str, g[1:])]), fontsize=10)
        ax.margins(x=0.12)
    axes[-1, 0].set_xlabel("change with the mitigation (mitigated − unmitigated; 95% CI; * p<0.05)", fontsize=9)
    fig.suptitle("Mitigation effects (Table 4 analogue)", fontsize=11)
    return _save(fig, path)


def make_figures(reg: pd.DataFrame | None, cmp: pd.DataFrame | None, mit: pd.DataFrame | None,
                 out_dir: str | Path) -> dict[str, Path]:
    """Write the PNG figures into `out_dir`; returns {name: path}. Empty frames give no figure.

    Names: ``coef_heatmap`` (or ``coef_heatmap__<metric>`` per metric when there are more than
    MAX_HEATMAP_COLUMNS benchmark/category/metric columns), ``baselines__<benchmark>``, ``mitigation``.
    A figure that fails to draw is logged and skipped: the report still gets written.
    """
    out = Path(out_dir)
    figs: dict[str, Path] = {}
    mit = _normalize_mit(mit)

    def attempt(name: str, fn, *args) -> None:
        try:
            p = fn(*args)
            if p is not None:
                figs[name] = p
        except Exception as exc:  # a figure must never cost the report
            log.warning("figure %s not drawn (%s: %s)", name, type(exc).__name__, exc)

    if not _empty(reg):
        r = reg.copy()
        if "category" not in r:
            r["category"] = ""
        r["category"] = r["category"].where(r["category"].map(_has_text), "")
        r = r[~r["term"].astype(str).str.lower().isin(INTERCEPT_TERMS)]
        ncols = len(set(zip(*(r[c] for c in _varying(r) + ["benchmark", "category", "metric"]))))
        if ncols <= MAX_HEATMAP_COLUMNS or r["metric"].nunique() <= 1:
            attempt("coef_heatmap", _heatmap, r, "Value → harm regression coefficients", out / "coef_heatmap.png")
        else:
            for metric in dict.fromkeys(r["metric"]):
                attempt(f"coef_heatmap__{_slug(metric)}", _heatmap, r[r["metric"] == metric],
                        f"Value → harm regression coefficients: {metric}",
                        out / f"coef_heatmap__{_slug(metric)}.png")
    if not _empty(cmp):
        for bench in dict.fromkeys(cmp["benchmark"]):
            attempt(f"baselines__{_slug(bench)}", _bars, cmp[cmp["benchmark"] == bench], bench,
                    out / f"baselines__{_slug(bench)}.png")
    if not _empty(mit):
        attempt("mitigation", _mitigation, mit, out / "mitigation.png")
    return figs


# ----------------------------------------------------------------------------------------------
# findings
# ----------------------------------------------------------------------------------------------

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
        return [f"No value coefficient is significant after Benjamini-Hochberg correction "
                f"(N models = {n_txt}, {len(r)} coefficients tested)."]
    sig = sig.assign(_p=sig["p_adj"].astype(float), _a=-sig["coef"].astype(float).abs())
    out = []
    vary = _varying(r)
    for row in sig.sort_values(["_p", "_a"]).itertuples(index=False):
        what = (f"{row.category} " if _has_text(getattr(row, "category", None)) else "") + str(row.metric)
        verb = "raises" if float(row.coef) > 0 else "lowers"
        who = f" for {', '.join(str(getattr(row, c)) for c in vary)}" if vary else ""
        out.append(f"{row.term} {verb} {what} on {bench_name(row.benchmark)}{who} "
                   f"(coef {fmt_num(row.coef)}, p_adj {fmt_num(row.p_adj, p=True)}).")
    return out


def _design(row: Any) -> str:
    from value_harms.analysis.inference import design_text

    return design_text(row)


def _underpowered(row: Any, what: str) -> str:
    """The sentence of a comparison whose design is below the stated minimum (issue 14)."""
    mm, mp = getattr(row, "min_models", None), getattr(row, "min_prompts", None)
    need = (f"; a finding needs >= {int(mm)} models x {int(mp)} prompts" if not _isnan(mm) and not _isnan(mp)
            else "")
    m = getattr(row, "mde", None)
    bounded = str(getattr(row, "metric", "")) != "harmfulness_score"  # rates and probabilities lie in [0, 1]
    mde_txt = ("minimum detectable effect unknown (no prompt-level data)" if _isnan(m) else
               f"minimum detectable effect {fmt_num(m)} (80% power)" if not (bounded and float(m) >= 1) else
               f"minimum detectable effect {fmt_num(m)} (80% power): no effect on this 0-1 scale is detectable")
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
        ci = (f", 95% CI {fmt_num(row.diff_low, signed=True)} to {fmt_num(row.diff_high, signed=True)}, "
              f"{_design(row)}" if "diff_low" in cmp.columns and not _isnan(getattr(row, "diff_low", None)) else "")
        out.append(f"{who}: {bench_name(row.benchmark)} {row.metric} {fmt_num(row.mean)} vs vanilla "
                   f"{fmt_num(ref_mean)} (diff {fmt_num(row.diff_vs_ref, signed=True)}{ci}, "
                   f"p {fmt_num(row.p_value, p=True)}).")
    return out


def _mit_findings(mit: pd.DataFrame | None) -> list[str]:
    if _empty(mit):
        return []
    powered, notes = _split_powered(mit, pd.Series(False, index=mit.index))
    if notes is None:
        return _mit_findings_named(mit)
    for row in mit[~mit.index.isin(powered.index)].itertuples(index=False):
        notes.append(_underpowered(row, f"{row.mitigation} on {bench_name(row.benchmark)} {row.metric} "
                                        f"for {row.baseline} models"))
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
        out.append(f"{name} {verb} {bench_name(row.benchmark)} {row.metric} by {fmt_num(abs(v))} "
                   f"for {row.baseline} models{who} (95% CI {fmt_num(row.ci_low)} to {fmt_num(row.ci_high)}, "
                   + (f"{_design(row)}, " if "n_prompts" in mit.columns else "")
                   + f"p {fmt_num(row.p_value, p=True)}).")
    return out


def top_findings(reg: pd.DataFrame | None, cmp: pd.DataFrame | None, mit: pd.DataFrame | None,
                 k: int = 5) -> list[str]:
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


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------

def _esc(text: Any) -> str:
    """Escape element text (quotes stay readable; attributes use html.escape)."""
    return html.escape(str(text), quote=False)


class _Doc:
    """Writes the same content as Markdown and as HTML."""

    def __init__(self, title: str, fig_dir_rel: str):
        self.md: list[str] = [f"# {title}", ""]
        self.html: list[str] = [f"<h1>{_esc(title)}</h1>"]
        self.fig_dir_rel = fig_dir_rel

    def h2(self, text: str) -> None:
        anchor = _slug(text.lower())
        self.md += [f"## {text}", ""]
        self.html.append(f'<h2 id="{anchor}">{_esc(text)}</h2>')

    def h3(self, text: str) -> None:
        self.md += [f"### {text}", ""]
        self.html.append(f"<h3>{_esc(text)}</h3>")

    def p(self, text: str) -> None:
        self.md += [text, ""]
        self.html.append(f"<p>{_esc(text)}</p>")

    def bullets(self, items: Iterable[str]) -> None:
        items = list(items)
        if not items:
            return
        self.md += [f"- {t}" for t in items] + [""]
        self.html.append("<ul>" + "".join(f"<li>{_esc(t)}</li>" for t in items) + "</ul>")

    def warn(self, text: str) -> None:
        self.md += [f"> **⚠ Warning:** {text}", ""]
        self.html.append(f'<div class="warn"><strong>⚠ Warning:</strong> {_esc(text)}</div>')

    def table(self, df: pd.DataFrame, columns: Iterable[str] | None = None, *, details: str | None = None) -> None:
        if df is None or not len(df.columns):
            return
        cols = list(columns) if columns is not None else None
        if details is None:
            self.md += [markdown_table(df, cols), ""]
            self.html.append(html_table(df, cols))
        else:  # long tables: collapsed in HTML, under a heading line in Markdown
            self.md += [f"<details><summary>{details}</summary>", "", markdown_table(df, cols), "",
                        "</details>", ""]
            self.html.append(f"<details><summary>{_esc(details)}</summary>{html_table(df, cols)}</details>")

    def figure(self, path: Path, caption: str) -> None:
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        self.md += [f"![{caption}]({self.fig_dir_rel}/{Path(path).name})", ""]
        self.html.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}"/>'
                         f"<figcaption>{_esc(caption)}</figcaption></figure>")


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1150px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #333}h2{border-bottom:1px solid #bbb;margin-top:2em}
.tbl{overflow-x:auto;margin:0.8em 0}
table{border-collapse:collapse;font-size:0.85em}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}tr:nth-child(even){background:#fafafa}
.warn{background:#fff3cd;border:2px solid #d39e00;border-left:8px solid #d39e00;padding:0.8em 1em;
margin:1em 0;font-size:1.05em}
figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:0.85em;color:#555}
code{background:#f4f4f4;padding:0 3px}details{margin:0.6em 0}
"""


def _stand_in_warning(provenance: Mapping[str, Any]) -> str | None:
    flagged = [b for b, v in (provenance.get("stand_in") or {}).items() if v]
    if not flagged:
        return None
    scorers = provenance.get("scorers") or {}
    used = [str(s) for b in flagged for s in (scorers.get(b) or [])]
    names = ", ".join(bench_name(b) for b in flagged)
    if not used or any("profanity" in s.lower() for s in used):
        return (f"Scores for {names} come from a stand-in classifier (alt-profanity-check), not the paper's "
                f"Perspective API / Detoxify: compare shapes, not values, with the paper.")
    return (f"Scores for {names} come from a stand-in scorer ({', '.join(dict.fromkeys(used))}), not the "
            f"paper's scorer: compare shapes, not values, with the paper.")


def _provenance_section(doc: _Doc, provenance: Mapping[str, Any]) -> None:
    warning = _stand_in_warning(provenance)
    if warning:
        doc.warn(warning)
    results = [str(p) for p in (provenance.get("results") or [])]
    n = provenance.get("n_results", len(results))
    doc.p(f"Built from {n} result file(s) at git {provenance.get('git') or 'unknown'}.")
    benches = list(dict.fromkeys([*(provenance.get("scorers") or {}), *(provenance.get("stand_in") or {}),
                                  *(provenance.get("benchmark_versions") or {}), *(provenance.get("failures") or {})]))
    if benches:
        rows = []
        for b in benches:
            ver = (provenance.get("benchmark_versions") or {}).get(b)
            rows.append({
                "benchmark": bench_name(b),
                "scorers": "; ".join(map(str, (provenance.get("scorers") or {}).get(b) or [])) or NA,
                "stand_in": bool((provenance.get("stand_in") or {}).get(b, False)),
                "version": (", ".join(f"{k}={v}" for k, v in ver.items()) if isinstance(ver, Mapping)
                            else (NA if ver is None else str(ver))),
                "failures": (provenance.get("failures") or {}).get(b, 0),
                # issue 10: per-text fallback share range, content-filtered judge answers, prompt sets
                "fallback share": _share_range((provenance.get("fallback_share") or {}).get(b)),
                "filtered": (provenance.get("filtered") or {}).get(b, 0),
                "prompt sets": " | ".join(map(str, (provenance.get("prompt_sets") or {}).get(b) or [])) or NA,
            })
        doc.table(pd.DataFrame(rows))
        for b in benches:
            sets = (provenance.get("prompt_sets") or {}).get(b) or []
            if len(sets) > 1:
                doc.warn(f"{bench_name(b)}: results pool different prompt sets ({' | '.join(map(str, sets))}); "
                         f"its overall scores are not comparable across them (compare per category).")
        if any((provenance.get("filtered") or {}).values()):
            doc.p("filtered = judge answers the provider's content filter withheld: left out of the harm "
                  "scores and rates (neither scored nor counted as failures), so a rate may be an underestimate.")
    cal_rows = [{"benchmark": bench_name(b), "backend": name, "texts": c.get("n"),
                 "data sha256": str(c.get("data_sha256", ""))[:16],
                 **{f"held-out {k}": (c.get("heldout") or {}).get(k) for k in ("spearman", "auroc", "mae", "agreement")},
                 "raw mean": (c.get("raw") or {}).get("mean"), "calibrated mean": (c.get("heldout") or {}).get("mean"),
                 "Perspective mean": c.get("target_mean")}
                for b, per in (provenance.get("calibration") or {}).items() for name, c in per.items()]
    if cal_rows:
        doc.p("Offline toxicity scores calibrated to Perspective TOXICITY (isotonic regression; figures of "
              "k-fold held-out predictions; AUROC and agreement at 0.5). Calibrated scores are still stand-ins; "
              "each sample keeps its raw score.")
        doc.table(pd.DataFrame(cal_rows))
    if results:
        shown = results[:30]
        extra = [f"… and {len(results) - len(shown)} more"] if len(results) > len(shown) else []
        doc.md += ["<details><summary>Result files</summary>", ""] + [f"- `{r}`" for r in shown] + \
            [f"- {e}" for e in extra] + ["", "</details>", ""]
        doc.html.append("<details><summary>Result files</summary><ul>"
                        + "".join(f"<li><code>{_esc(r)}</code></li>" for r in shown)
                        + "".join(f"<li>{_esc(e)}</li>" for e in extra) + "</ul></details>")


def _share_range(r: Any) -> str:
    """A [min, max] fallback share as "0.0%" or "2.0%-9.5%"; NA when unknown."""
    if not isinstance(r, (list, tuple)) or len(r) != 2 or any(_isnan(x) for x in r):
        return NA
    lo, hi = (f"{float(x):.1%}" for x in r)
    return lo if lo == hi else f"{lo}-{hi}"


def _scorer_text(s: Any) -> str:
    if isinstance(s, Mapping):
        name = s.get("scorer") or s.get("name") or s.get("package") or str(dict(s))
        return f"{name}{' (stand-in)' if s.get('stand_in') and 'stand-in' not in str(name) else ''}"
    return str(s)


def _auto_rows(auto: Mapping[str, Any]) -> pd.DataFrame:
    rows = []
    for cat, chosen in auto.items():
        if isinstance(chosen, Mapping):
            text = "; ".join(f"{k}: {', '.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                             for k, v in chosen.items())
        elif isinstance(chosen, (list, tuple, set)):
            text = ", ".join(map(str, chosen))
        else:
            text = str(chosen)
        rows.append({"category": str(cat), "values chosen": text or "none"})
    return pd.DataFrame(rows, columns=["category", "values chosen"])


DESIGN_COLUMNS = ("n_models", "n_prompts", "n_samples", "mde", "powered")


def _method_note(doc: "_Doc", frame: pd.DataFrame) -> None:
    """State how the intervals were computed and the design minimum (issue 14)."""
    if "method" not in frame.columns:
        return
    methods = sorted(set(map(str, frame["method"].dropna())))
    mm = frame["min_models"].iloc[0] if "min_models" in frame else None
    mp = frame["min_prompts"].iloc[0] if "min_prompts" in frame else None
    doc.p("Intervals and p-values: " + "; ".join(methods) + ". Design = models x prompts x samples per prompt "
          "(columns n_models, n_prompts, n_samples); mde = minimum detectable effect at 80% power"
          + (f"; a comparison names an effect only with >= {int(mm)} models (vanilla: one fixed model) and "
             f">= {int(mp)} prompts, else it is reported as underpowered (column powered)."
             if not _isnan(mm) and not _isnan(mp) else "."))


def write_report(out_dir: str | Path, *, reg: pd.DataFrame | None, cmp: pd.DataFrame | None,
                 mit: pd.DataFrame | None, aln: pd.DataFrame | None, fid: pd.DataFrame | None,
                 provenance: Mapping[str, Any] | None, findings: list[str] | None,
                 auto_mitigation: Mapping[str, Any] | None = None,
                 title: str = "Unintended harms of value-aligned LLMs: analysis report") -> dict[str, Path]:
    """Write `report.md`, `report.html` (self-contained) and `figures/*.png` into `out_dir`.

    Returns {"report.md": path, "report.html": path, <figure name>: path, ...}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    provenance = dict(provenance or {})
    mit = _normalize_mit(mit)
    figs = make_figures(reg, cmp, mit, out / "figures")
    doc = _Doc(title, "figures")

    # Summary
    doc.h2("Summary")
    if findings:
        doc.bullets(findings)
    else:
        doc.p("No findings were produced (no result frames).")
    flagged = [bench_name(b) for b, v in (provenance.get("stand_in") or {}).items() if v]
    if flagged:
        doc.p(f"⚠ Stand-in scorers were used for {', '.join(flagged)}: see Scorers & provenance.")

    # Provenance
    doc.h2("Scorers & provenance")
    _provenance_section(doc, provenance)

    # Regressions
    doc.h2("Value → harm regressions")
    if _empty(reg):
        doc.p("No regression results.")
    else:
        for name, path in figs.items():
            if name.startswith("coef_heatmap"):
                doc.figure(path, "Regression coefficients of each value on each harm metric "
                                 "(stars: Benjamini-Hochberg adjusted p).")
        r = reg[~reg["term"].astype(str).str.lower().isin(INTERCEPT_TERMS)]
        sig = r[_significant_mask(r)]
        cols = [*_varying(r), "benchmark", "category", "metric", "term", "coef", "se", "ci_low", "ci_high", "t",
                "p", "p_adj", "n", "r2"]
        if "rank_deficient" in r and r["rank_deficient"].fillna(False).astype(bool).any():
            cols.append("rank_deficient")
            n_rd = r[r["rank_deficient"].fillna(False).astype(bool)].groupby(
                [c for c in ("model", "stage", "benchmark", "category", "metric") if c in r], dropna=False).ngroups
            doc.warn(f"{n_rd} regression(s) are rank deficient (collinear value profiles): their individual "
                     f"coefficients are not identified; read them with care (column rank_deficient).")
        skipped = list(reg.attrs.get("skipped") or [])
        if skipped:
            doc.p(f"{len(skipped)} regression(s) were not fitted: "
                  + "; ".join(f"{bench_name(k.get('benchmark'))} {k.get('category', '')} {k.get('metric', '')}: "
                              f"{k.get('reason', '?')}" for k in skipped[:10])
                  + (f"; … and {len(skipped) - 10} more" if len(skipped) > 10 else "") + ".")
        n_fail = 0
        if "failures" in r:  # one count per fit (repeated on each of its terms): max per fit, summed
            fails = r.assign(_f=pd.to_numeric(r["failures"], errors="coerce").fillna(0))
            n_fail = int(fails.groupby([c for c in ("benchmark", "category", "metric") if c in r], dropna=False)["_f"].max().sum())
        if sig.empty:
            doc.p(f"No coefficient of the {len(r)} tested is significant after Benjamini-Hochberg correction "
                  f"(alpha {ALPHA}). The smallest adjusted p-values:")
            doc.table(r.assign(_p=r["p_adj"].astype(float)).sort_values("_p").head(10), cols)
        else:
            doc.p(f"{len(sig)} of {len(r)} coefficients are significant after Benjamini-Hochberg correction "
                  f"(alpha {ALPHA}):")
            doc.table(sig.assign(_p=sig["p_adj"].astype(float)).sort_values("_p"), cols)
        if n_fail:
            doc.p(f"{n_fail} failure(s) recorded across the fits (column failures, one count per "
                  f"benchmark/category/metric).")
        doc.table(r, cols + ["failures"], details=f"All {len(r)} coefficients")

    # Baselines
    doc.h2("Baselines (Table 3 analogue)")
    if _empty(cmp):
        doc.p("No baseline comparison.")
    else:
        for name, path in figs.items():
            if name.startswith("baselines__"):
                doc.figure(path, f"Mean per baseline with 95% CI: {name.split('__', 1)[1]}.")
        _method_note(doc, cmp)
        doc.table(cmp, [*_varying(cmp, ("model", "category", "mitigation")), "benchmark", "metric", "baseline",
                        *(["stage"] if "stage" in cmp else []), "mean", "ci_low", "ci_high", "n", "diff_vs_ref",
                        "diff_low", "diff_high", "p_value", "test", *DESIGN_COLUMNS])

    # Mitigation
    doc.h2("Mitigation (Table 4 analogue)")
    if _empty(mit):
        doc.p("No mitigation results.")
    else:
        if "mitigation" in figs:
            doc.figure(figs["mitigation"], "Change of each metric under each mitigation, per baseline (95% CI).")
        has_dis = "disregard" in mit and mit["disregard"].map(_has_text).any()
        doc.table(mit, [*_varying(mit, ("model", "category")), "benchmark", "metric", "baseline",
                        *(["stage"] if "stage" in mit else []), "mitigation", *(["disregard"] if has_dis else []),
                        "mean_reference", "mean_mitigated", "delta_mean", "ci_low", "ci_high", "n_pairs",
                        "p_value", "test", *DESIGN_COLUMNS])
        _method_note(doc, mit)

    # Alignment
    doc.h2("Value alignment (PVQ)")
    if _empty(aln):
        doc.p("No value-alignment results.")
    else:
        collapsed = aln[aln["collapsed"].fillna(False).astype(bool)] if "collapsed" in aln else aln.iloc[:0]
        if len(collapsed):
            runs = ", ".join(f"{r.profile} ({r.model}, {r.stage})" for r in collapsed.itertuples(index=False))
            doc.warn(f"{len(collapsed)} of {len(aln)} run(s) collapsed: every greedy PVQ answer is the same digit, "
                     f"so their greedy NMSE says nothing about value alignment (read nmse_expected instead): "
                     f"{runs}.")
        else:
            doc.p(f"No run collapsed to a single greedy answer ({len(aln)} run(s)).")
        doc.table(aln, ["profile", "model", "stage", "nmse_greedy", "nmse_expected", "parse_rate", "collapsed"])

    # Fidelity
    if not _empty(fid):
        doc.h2("Persona fidelity under the value prompt")
        d = pd.to_numeric(fid.get("delta"), errors="coerce")
        worse = int((d > 0).sum())
        doc.p(f"NMSE against the target profile without and with the value prompt; delta > 0 means the prompt "
              f"moves the model away from its profile ({worse} of {len(fid)} row(s); mean delta "
              f"{fmt_num(d.mean(), signed=True)}).")
        doc.table(fid, ["profile", *_varying(fid, ("model", "baseline", "stage")), "reading", "nmse_none",
                        "nmse_value_prompt", "delta"])

    # Audit
    audit = provenance.get("audit")
    if audit:
        doc.h2("Training-data audit")
        scorer = _scorer_text(audit.get("scorer"))
        doc.p(f"{fmt_num(audit.get('flagged'))} of {fmt_num(audit.get('scored'))} scored training texts "
              f"({fmt_num(audit.get('texts'))} distinct) reach the toxicity threshold "
              f"{fmt_num(audit.get('threshold'))} with {scorer}. The paper reports 5 of 8K+ with Perspective.")

    # Auto mitigation
    if auto_mitigation:
        doc.h2("Automatic mitigation")
        doc.p("Values the automatic value prompt asks the model to disregard, per harm category:")
        doc.table(_auto_rows(auto_mitigation))

    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text("\n".join(doc.md).rstrip() + "\n", encoding="utf-8")
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(doc.html) + "\n</body></html>\n")
    html_path.write_text(page, encoding="utf-8")
    return {"report.md": md_path, "report.html": html_path, **figs}


# ----------------------------------------------------------------------------------------------
# W&B
# ----------------------------------------------------------------------------------------------

def _wandb_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Columns W&B can type: object columns as strings, bools as bools, NaN kept for numbers."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object:
            out[c] = out[c].map(lambda x: None if _isnan(x) else str(x))
    return out.reset_index(drop=True)


def log_report_to_wandb(run, figures: Mapping[str, Path], tables: Mapping[str, pd.DataFrame | None]) -> list[str]:
    """Log each figure as wandb.Image and each non-empty frame as wandb.Table; returns the keys logged.

    Failures are warnings (W&B must never cost local results); with `run=None` nothing happens.
    """
    if run is None:
        return []
    try:
        import wandb
    except Exception as exc:
        log.warning("W&B not importable (%s); report not logged", exc)
        return []
    payload: dict[str, Any] = {}
    for name, path in (figures or {}).items():
        try:
            payload[f"report/figure/{name}"] = wandb.Image(str(path), caption=name)
        except Exception as exc:
            log.warning("W&B image %s not built (%s: %s)", name, type(exc).__name__, exc)
    for name, df in (tables or {}).items():
        if _empty(df):
            continue
        try:
            payload[f"report/table/{name}"] = wandb.Table(dataframe=_wandb_frame(df))
        except Exception as exc:
            log.warning("W&B table %s not built (%s: %s)", name, type(exc).__name__, exc)
    if not payload:
        return []
    try:
        run.log(payload)
        return list(payload)
    except Exception as exc:
        log.warning("W&B report logging failed (%s: %s); retrying item by item", type(exc).__name__, exc)
    logged = []
    for key, obj in payload.items():
        try:
            run.log({key: obj})
            logged.append(key)
        except Exception as exc:
            log.warning("W&B %s not logged (%s: %s); local report is unaffected", key, type(exc).__name__, exc)
    return logged
