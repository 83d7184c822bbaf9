"""The report's figures (heatmaps, bars, mitigation effects)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from value_harms.analysis.design import design_text
from value_harms.analysis.report.findings import named_mask, significant_mask
from value_harms.analysis.report.format import (
    INTERCEPT_TERMS,
    MITIGATION_ORDER,
    NA,
    REG_IDENT,
    bench_name,
    has_text,
    is_empty,
    is_na,
    normalize_mitigation,
    p_stars,
    varying_columns,
)
from value_harms.analysis.stats import BASELINE_ORDER
from value_harms.core.names import slug
from value_harms.core.values import HIGHER_ORDER, VALUES

log = logging.getLogger(__name__)


DPI = 110


# Above this many benchmark/category/metric columns the heatmap is split into one per metric.
MAX_HEATMAP_COLUMNS = 16


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
    parts = [bench_name(bench)] + ([str(cat)] if has_text(cat) else []) + [str(metric)]
    return " / ".join(parts)


def _heatmap(reg: pd.DataFrame, title: str, path: Path) -> Path | None:
    # size: one matplotlib figure: data, cells, significance marks, labels
    terms = _term_order(reg["term"])
    if not terms:
        return None
    ident = varying_columns(reg, REG_IDENT) + ["benchmark", "category", "metric"]
    keys = list(zip(*(reg[c] for c in ident)))
    cols = list(dict.fromkeys(keys))
    colidx = {c: j for j, c in enumerate(cols)}
    rowidx = {t: i for i, t in enumerate(terms)}
    coef = np.full((len(terms), len(cols)), np.nan)
    pad = np.full_like(coef, np.nan)
    # stars by the rule the regression findings headline with (family q, p_adj on older frames; powered)
    stars = pd.to_numeric(reg["q"] if "q" in reg else reg["p_adj"], errors="coerce").where(significant_mask(reg, 0.05))
    for key, r, star in zip(keys, reg.itertuples(index=False), stars):
        t = str(r.term)
        if t not in rowidx:
            continue
        i, j = rowidx[t], colidx[key]
        coef[i, j] = r.coef if not is_na(r.coef) else np.nan
        pad[i, j] = star
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
            star = p_stars(pad[i, j])
            text = f"{c:.3f}{chr(10) + star if star else ''}" if show_values else star
            if text:
                color = "white" if abs(c) > 0.6 * vmax else "black"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=8 if show_values else 10,
                    color=color,
                    fontweight="bold" if star else "normal",
                    linespacing=0.9,
                )
    ax.set_yticks(range(n_r), labels=terms, fontsize=9)
    ax.set_xticks(
        range(n_c),
        labels=[" / ".join([*map(str, c[:-3]), _column_label(*c[-3:])]) for c in cols],
        fontsize=8,
        rotation=40,
        ha="right",
        rotation_mode="anchor",
    )
    n_basic = sum(t in VALUES for t in terms)
    if 0 < n_basic < n_r:
        ax.axhline(n_basic - 0.5, color="black", lw=1.2)
    ax.set_xticks(np.arange(-0.5, n_c, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n_r, 1), minor=True)
    ax.grid(which="minor", color="white", lw=0.8)
    ax.tick_params(which="minor", length=0)
    cb = fig.colorbar(im, ax=ax, shrink=0.85)
    std = "standardized" in reg and reg["standardized"].fillna(False).astype(bool).all()
    cb.set_label(
        "standardized coefficient (SD units)" if std else "coefficient (per point of value intensity)", fontsize=9
    )
    ax.set_title(
        f"{title}\n* q<0.05  ** <0.01  *** <0.001 where powered (the report's false discovery rate family)\n"
        "grey: not fitted",
        fontsize=10,
    )
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
    d = d.assign(
        _o=[BASELINE_ORDER.index(b) if b in BASELINE_ORDER else 99 for b in d["baseline"].astype(str)],
        _bn=d["baseline"].astype(str),
        **{f"_{c}": d[c].astype(str) for c in keys},
    )
    return d.sort_values(["_o", "_bn", *[f"_{c}" for c in keys]], kind="stable")


def _bar_labels(d: pd.DataFrame, parts: Iterable[str], sep: str) -> list[str]:
    """Bar labels from `parts`; the stage is added where it tells apart rows that would share a label."""
    parts = [c for c in parts if c in d.columns]
    base = [sep.join(str(v) for v in row) for row in zip(*(d[c] for c in parts))]
    if "stage" in d.columns:
        counts = pd.Series(base).value_counts()
        base = [
            (str(st) if str(st).startswith(b) else f"{b} ({st})") if counts[b] > 1 and has_text(st) else b
            for b, st in zip(base, d["stage"])
        ]
    return base


def _bars(cmp_b: pd.DataFrame, bench: Any, path: Path) -> Path | None:
    pkeys = ["metric", *varying_columns(cmp_b, ("model", "category", "mitigation"))]
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
        if "n_prompts" in d.columns:  # the design under each bar (models x prompts x samples)
            labels = [
                f"{lb}\n{design_text(r).replace(' models x ', 'x').replace(' prompts x ', 'x').replace(' samples', '')}"
                for lb, r in zip(labels, d.itertuples(index=False))
            ]
        mean = pd.to_numeric(d["mean"], errors="coerce").to_numpy(dtype=float)
        lo, hi, ok = _ci_err(mean, d["ci_low"], d["ci_high"])
        x = np.arange(len(bases))
        colors = [palette(BASELINE_ORDER.index(b) if b in BASELINE_ORDER else 4 + i) for i, b in enumerate(bases)]
        ax.bar(x, np.nan_to_num(mean), color=colors, edgecolor="black", lw=0.6)
        if ok.any():
            ax.errorbar(x[ok], mean[ok], yerr=[lo[ok], hi[ok]], fmt="none", ecolor="black", capsize=4, lw=1.2)
        stars_by = _star_values(d)
        for xi, m, h, p in zip(x, mean, hi, stars_by):
            label = NA if not np.isfinite(m) else f"{m:.3f}{p_stars(p)}"
            ax.annotate(
                label,
                (xi, (m if np.isfinite(m) else 0) + h),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8,
            )
        rot = 25 if sum(len(lb) for lb in labels) > 40 else 0
        ax.set_xticks(
            x,
            labels=labels,
            fontsize=9,
            rotation=rot,
            ha="right" if rot else "center",
            rotation_mode="anchor" if rot else "default",
        )
        ax.set_title(" · ".join(map(str, panel)), fontsize=10)
        ax.margins(y=0.15)
        ax.axhline(0, color="black", lw=0.6)
    for k in range(len(panels), nrow * ncol):
        axes[k // ncol][k % ncol].set_visible(False)
    design = "; models x prompts x samples under each bar" if "n_prompts" in cmp_b.columns else ""
    stars = _stars_caption(cmp_b)
    fig.suptitle(f"{bench_name(bench)}: mean per baseline\n(95% CI{design})\n({stars} vs reference)", fontsize=11)
    return _save(fig, path)


def _mitigation(mit: pd.DataFrame, path: Path) -> Path | None:
    gkeys = ["benchmark", "metric", *varying_columns(mit, ("model", "category"))]
    groups = list(dict.fromkeys(zip(*(mit[c] for c in gkeys))))
    if not groups:
        return None
    import matplotlib as mpl

    palette = mpl.colormaps["tab10"]
    mits = [m for m in MITIGATION_ORDER if m in set(mit["mitigation"])] + sorted(
        set(map(str, mit["mitigation"])) - set(MITIGATION_ORDER)
    )
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
        ax.barh(
            y, np.nan_to_num(dm), height=0.7, color=[color[str(x)] for x in d["mitigation"]], edgecolor="black", lw=0.5
        )
        if ok.any():
            ax.errorbar(dm[ok], y[ok], xerr=[lo[ok], hi[ok]], fmt="none", ecolor="black", capsize=3, lw=1.2)
        for yi, v, p in zip(y, dm, _star_values(d)):
            if not np.isfinite(v):
                ax.text(0, yi, f" {NA}", va="center", fontsize=8)
            elif p_stars(p):
                ax.text(0, yi, f" {p_stars(p)} ", va="center", ha="left" if v < 0 else "right", fontsize=9)
        ax.axvline(0, color="black", lw=1.0)
        d = d.assign(
            _mlab=[
                f"{mg} [{', '.join(dr) if isinstance(dr, (list, tuple)) else dr}]"
                if "disregard" in d and has_text(dr) and not isinstance(dr, float)
                else str(mg)
                for mg, dr in zip(d["mitigation"], d["disregard"] if "disregard" in d else [None] * len(d))
            ]
        )
        ax.set_yticks(y, labels=_bar_labels(d, ["baseline", "_mlab"], " · "), fontsize=9)
        ax.set_title(" / ".join([bench_name(g[0]), *map(str, g[1:])]), fontsize=10)
        ax.margins(x=0.12)
    stars = _stars_caption(mit)
    axes[-1, 0].set_xlabel(f"change with the mitigation (mitigated − unmitigated; 95% CI; {stars})", fontsize=9)
    fig.suptitle("Mitigation effects (Table 4 analogue)", fontsize=11)
    return _save(fig, path)


def _star_values(frame: pd.DataFrame) -> pd.Series:
    """The value a comparison's or mitigation's stars read: its family q where the report may name it
    (findings.named_mask at 0.05: a one-model group below the design minimum gets no star, whatever its q),
    else p where there is no q. The heatmap reads the regressions' rule (findings.significant_mask)."""
    if "q" in frame.columns:
        q = pd.to_numeric(frame["q"], errors="coerce")
        return q.where(named_mask(frame, 0.05))
    if "p_value" in frame.columns:
        return pd.to_numeric(frame["p_value"], errors="coerce")
    return pd.Series(np.nan, index=frame.index)


def _stars_caption(frame: pd.DataFrame) -> str:
    """What the stars read: the family q-value where the frame has one (the report's multiplicity), else p."""
    return "* family q<0.05 where powered" if "q" in frame.columns else "* p<0.05 unadjusted"


def make_figures(
    reg: pd.DataFrame | None, cmp: pd.DataFrame | None, mit: pd.DataFrame | None, out_dir: str | Path
) -> dict[str, Path]:
    """Write the PNG figures into `out_dir`; returns {name: path}. Empty frames give no figure.

    Names: ``coef_heatmap`` (or ``coef_heatmap__<metric>`` per metric when there are more than
    MAX_HEATMAP_COLUMNS benchmark/category/metric columns), ``baselines__<benchmark>``, ``mitigation``.
    A figure that fails to draw is logged and skipped: the report still gets written.
    """
    out = Path(out_dir)
    figs: dict[str, Path] = {}
    mit = normalize_mitigation(mit)

    def attempt(name: str, fn, *args) -> None:
        try:
            p = fn(*args)
            if p is not None:
                figs[name] = p
        except Exception as exc:  # a figure must never cost the report
            log.warning("figure %s not drawn (%s: %s)", name, type(exc).__name__, exc)

    if not is_empty(reg):
        r = reg.copy()
        if "category" not in r:
            r["category"] = ""
        r["category"] = r["category"].where(r["category"].map(has_text), "")
        r = r[~r["term"].astype(str).str.lower().isin(INTERCEPT_TERMS)]
        ncols = len(set(zip(*(r[c] for c in varying_columns(r, REG_IDENT) + ["benchmark", "category", "metric"]))))
        if ncols <= MAX_HEATMAP_COLUMNS or r["metric"].nunique() <= 1:
            attempt("coef_heatmap", _heatmap, r, "Value → harm regression coefficients", out / "coef_heatmap.png")
        else:
            for metric in dict.fromkeys(r["metric"]):
                attempt(
                    f"coef_heatmap__{slug(metric)}",
                    _heatmap,
                    r[r["metric"] == metric],
                    f"Value → harm regression coefficients: {metric}",
                    out / f"coef_heatmap__{slug(metric)}.png",
                )
    if not is_empty(cmp):
        for bench in dict.fromkeys(cmp["benchmark"]):
            attempt(
                f"baselines__{slug(bench)}",
                _bars,
                cmp[cmp["benchmark"] == bench],
                bench,
                out / f"baselines__{slug(bench)}.png",
            )
    if not is_empty(mit):
        attempt("mitigation", _mitigation, mit, out / "mitigation.png")
    return figs
