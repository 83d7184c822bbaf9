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
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from value_harms.analysis.report.figures import make_figures
from value_harms.analysis.report.findings import _significant_mask
from value_harms.analysis.report.format import (
    ALPHA,
    INTERCEPT_TERMS,
    NA,
    _empty,
    _esc,
    _has_text,
    _isnan,
    _normalize_mit,
    _scorer_text,
    _share_range,
    _slug,
    _varying,
    bench_name,
    fmt_num,
    html_table,
    markdown_table,
)

log = logging.getLogger(__name__)


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
