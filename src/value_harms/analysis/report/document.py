"""The report document: figures, findings and sections into one markdown + one self-contained HTML page; W&B logging.

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

import html
import logging
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from value_harms.analysis.report.alignment import alignment_section, fidelity_section, injection_section
from value_harms.analysis.report.figures import make_figures
from value_harms.analysis.report.format import (
    is_empty,
    is_na,
    normalize_mitigation,
)
from value_harms.analysis.report.page import CSS, Page
from value_harms.analysis.report.sections import (
    audit_section,
    auto_mitigation_section,
    baseline_section,
    contrast_section,
    mitigation_section,
    provenance_section,
    regression_section,
    summary_section,
)

log = logging.getLogger(__name__)


def write_report(
    out_dir: str | Path,
    *,
    reg: pd.DataFrame | None,
    cmp: pd.DataFrame | None,
    mit: pd.DataFrame | None,
    aln: pd.DataFrame | None,
    fid: pd.DataFrame | None,
    provenance: Mapping[str, Any] | None,
    findings: list[str] | None,
    auto_mitigation: Mapping[str, Any] | None = None,
    con: pd.DataFrame | None = None,
    family: Mapping[str, Any] | None = None,
    inj: pd.DataFrame | None = None,
    title: str = "Unintended harms of value-aligned LLMs: analysis report",
) -> dict[str, Path]:
    """Write `report.md`, `report.html` (self-contained) and `figures/*.png` into `out_dir`.

    con: the value contrasts (analysis.contrasts); family: the multiplicity family summary
    (analysis.multiplicity.apply_fdr; taken from the frames' attrs when not given); inj: how far value
    injection took hold per model (analysis.injection.injection_table).
    Returns {"report.md": path, "report.html": path, <figure name>: path, ...}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    provenance = dict(provenance or {})
    mit = normalize_mitigation(mit)
    figs = make_figures(reg, cmp, mit, out / "figures")
    doc = Page(title, "figures")

    if family is None:
        family = next(
            (f.attrs["family"] for f in (con, reg, cmp, mit) if isinstance(f, pd.DataFrame) and "family" in f.attrs),
            None,
        )
    summary_section(doc, findings, provenance, family)
    doc.h2("Scorers & provenance")
    provenance_section(doc, provenance)
    contrast_section(doc, con)
    regression_section(doc, reg, figs)
    baseline_section(doc, cmp, figs)
    mitigation_section(doc, mit, figs)
    alignment_section(doc, aln)
    injection_section(doc, inj)
    fidelity_section(doc, fid)
    audit_section(doc, provenance.get("audit"))
    auto_mitigation_section(doc, auto_mitigation)

    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text("\n".join(doc.md).rstrip() + "\n", encoding="utf-8")
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body>\n" + "\n".join(doc.html) + "\n</body></html>\n"
    )
    html_path.write_text(page, encoding="utf-8")
    return {"report.md": md_path, "report.html": html_path, **figs}


def _wandb_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Columns W&B can type: object columns as strings, bools as bools, NaN kept for numbers."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object:
            out[c] = out[c].map(lambda x: None if is_na(x) else str(x))
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
        if is_empty(df):
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
