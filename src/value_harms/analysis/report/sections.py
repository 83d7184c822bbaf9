"""The report's sections, each a function that writes its headings, figures and tables into a Page."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from value_harms.analysis.report.findings import _significant_mask
from value_harms.analysis.report.format import (
    ALPHA,
    INTERCEPT_TERMS,
    NA,
    _empty,
    _esc,
    _has_text,
    _isnan,
    _scorer_text,
    _share_range,
    _varying,
    bench_name,
    fmt_num,
)
from value_harms.analysis.report.page import Page


def _stand_in_warning(provenance: Mapping[str, Any]) -> str | None:
    flagged = [b for b, v in (provenance.get("stand_in") or {}).items() if v]
    if not flagged:
        return None
    scorers = provenance.get("scorers") or {}
    used = [str(s) for b in flagged for s in (scorers.get(b) or [])]
    names = ", ".join(bench_name(b) for b in flagged)
    if not used or any("profanity" in s.lower() for s in used):
        return (
            f"Scores for {names} come from a stand-in classifier (alt-profanity-check), not the paper's "
            f"Perspective API / Detoxify: compare shapes, not values, with the paper."
        )
    return (
        f"Scores for {names} come from a stand-in scorer ({', '.join(dict.fromkeys(used))}), not the "
        f"paper's scorer: compare shapes, not values, with the paper."
    )


def provenance_section(doc: Page, provenance: Mapping[str, Any]) -> None:
    # size: one report section, written in reading order
    warning = _stand_in_warning(provenance)
    if warning:
        doc.warn(warning)
    results = [str(p) for p in (provenance.get("results") or [])]
    n = provenance.get("n_results", len(results))
    doc.p(f"Built from {n} result file(s) at git {provenance.get('git') or 'unknown'}.")
    benches = list(
        dict.fromkeys(
            [
                *(provenance.get("scorers") or {}),
                *(provenance.get("stand_in") or {}),
                *(provenance.get("benchmark_versions") or {}),
                *(provenance.get("failures") or {}),
            ]
        )
    )
    if benches:
        rows = []
        for b in benches:
            ver = (provenance.get("benchmark_versions") or {}).get(b)
            rows.append(
                {
                    "benchmark": bench_name(b),
                    "scorers": "; ".join(map(str, (provenance.get("scorers") or {}).get(b) or [])) or NA,
                    "stand_in": bool((provenance.get("stand_in") or {}).get(b, False)),
                    "version": (
                        ", ".join(f"{k}={v}" for k, v in ver.items())
                        if isinstance(ver, Mapping)
                        else (NA if ver is None else str(ver))
                    ),
                    "failures": (provenance.get("failures") or {}).get(b, 0),
                    # issue 10: per-text fallback share range, content-filtered judge answers, prompt sets
                    "fallback share": _share_range((provenance.get("fallback_share") or {}).get(b)),
                    "filtered": (provenance.get("filtered") or {}).get(b, 0),
                    "prompt sets": " | ".join(map(str, (provenance.get("prompt_sets") or {}).get(b) or [])) or NA,
                }
            )
        doc.table(pd.DataFrame(rows))
        for b in benches:
            sets = (provenance.get("prompt_sets") or {}).get(b) or []
            if len(sets) > 1:
                doc.warn(
                    f"{bench_name(b)}: results pool different prompt sets ({' | '.join(map(str, sets))}); "
                    f"its overall scores are not comparable across them (compare per category)."
                )
        if any((provenance.get("filtered") or {}).values()):
            doc.p(
                "filtered = judge answers the provider's content filter withheld: left out of the harm "
                "scores and rates (neither scored nor counted as failures), so a rate may be an underestimate."
            )
    cal_rows = [
        {
            "benchmark": bench_name(b),
            "backend": name,
            "texts": c.get("n"),
            "data sha256": str(c.get("data_sha256", ""))[:16],
            **{f"held-out {k}": (c.get("heldout") or {}).get(k) for k in ("spearman", "auroc", "mae", "agreement")},
            "raw mean": (c.get("raw") or {}).get("mean"),
            "calibrated mean": (c.get("heldout") or {}).get("mean"),
            "Perspective mean": c.get("target_mean"),
        }
        for b, per in (provenance.get("calibration") or {}).items()
        for name, c in per.items()
    ]
    if cal_rows:
        doc.p(
            "Offline toxicity scores calibrated to Perspective TOXICITY (isotonic regression; figures of "
            "k-fold held-out predictions; AUROC and agreement at 0.5). Calibrated scores are still stand-ins; "
            "each sample keeps its raw score."
        )
        doc.table(pd.DataFrame(cal_rows))
    if results:
        shown = results[:30]
        extra = [f"… and {len(results) - len(shown)} more"] if len(results) > len(shown) else []
        doc.md += (
            ["<details><summary>Result files</summary>", ""]
            + [f"- `{r}`" for r in shown]
            + [f"- {e}" for e in extra]
            + ["", "</details>", ""]
        )
        doc.html.append(
            "<details><summary>Result files</summary><ul>"
            + "".join(f"<li><code>{_esc(r)}</code></li>" for r in shown)
            + "".join(f"<li>{_esc(e)}</li>" for e in extra)
            + "</ul></details>"
        )


def _auto_rows(auto: Mapping[str, Any]) -> pd.DataFrame:
    rows = []
    for cat, chosen in auto.items():
        if isinstance(chosen, Mapping):
            text = "; ".join(
                f"{k}: {', '.join(map(str, v)) if isinstance(v, (list, tuple)) else v}" for k, v in chosen.items()
            )
        elif isinstance(chosen, (list, tuple, set)):
            text = ", ".join(map(str, chosen))
        else:
            text = str(chosen)
        rows.append({"category": str(cat), "values chosen": text or "none"})
    return pd.DataFrame(rows, columns=["category", "values chosen"])


DESIGN_COLUMNS = ("n_models", "n_prompts", "n_samples", "mde", "powered")


def _method_note(doc: "Page", frame: pd.DataFrame) -> None:
    """State how the intervals were computed and the design minimum (issue 14)."""
    if "method" not in frame.columns:
        return
    methods = sorted(set(map(str, frame["method"].dropna())))
    mm = frame["min_models"].iloc[0] if "min_models" in frame else None
    mp = frame["min_prompts"].iloc[0] if "min_prompts" in frame else None
    doc.p(
        "Intervals and p-values: " + "; ".join(methods) + ". Design = models x prompts x samples per prompt "
        "(columns n_models, n_prompts, n_samples); mde = minimum detectable effect at 80% power"
        + (
            f"; a comparison names an effect only with >= {int(mm)} models (vanilla: one fixed model) and "
            f">= {int(mp)} prompts, else it is reported as underpowered (column powered)."
            if not _isnan(mm) and not _isnan(mp)
            else "."
        )
    )


def summary_section(doc: Page, findings: list[str] | None, provenance: Mapping[str, Any]) -> None:
    """Top findings, and a warning when stand-in scorers were used."""
    doc.h2("Summary")
    if findings:
        doc.bullets(findings)
    else:
        doc.p("No findings were produced (no result frames).")
    flagged = [bench_name(b) for b, v in (provenance.get("stand_in") or {}).items() if v]
    if flagged:
        doc.p(f"⚠ Stand-in scorers were used for {', '.join(flagged)}: see Scorers & provenance.")


def regression_section(doc: Page, reg: pd.DataFrame | None, figs: Mapping[str, Path]) -> None:
    """Value -> harm regressions: heatmap, significant coefficients (BH), rank deficiency, skipped fits."""
    # size: one report section, written in reading order
    doc.h2("Value → harm regressions")
    if _empty(reg):
        doc.p("No regression results.")
    else:
        for name, path in figs.items():
            if name.startswith("coef_heatmap"):
                doc.figure(
                    path,
                    "Regression coefficients of each value on each harm metric (stars: Benjamini-Hochberg adjusted p).",
                )
        r = reg[~reg["term"].astype(str).str.lower().isin(INTERCEPT_TERMS)]
        sig = r[_significant_mask(r)]
        cols = [
            *_varying(r),
            "benchmark",
            "category",
            "metric",
            "term",
            "coef",
            "se",
            "ci_low",
            "ci_high",
            "t",
            "p",
            "p_adj",
            "n",
            "r2",
        ]
        if "rank_deficient" in r and r["rank_deficient"].fillna(False).astype(bool).any():
            cols.append("rank_deficient")
            n_rd = (
                r[r["rank_deficient"].fillna(False).astype(bool)]
                .groupby([c for c in ("model", "stage", "benchmark", "category", "metric") if c in r], dropna=False)
                .ngroups
            )
            doc.warn(
                f"{n_rd} regression(s) are rank deficient (collinear value profiles): their individual "
                f"coefficients are not identified; read them with care (column rank_deficient)."
            )
        skipped = list(reg.attrs.get("skipped") or [])
        if skipped:
            doc.p(
                f"{len(skipped)} regression(s) were not fitted: "
                + "; ".join(
                    f"{bench_name(k.get('benchmark'))} {k.get('category', '')} {k.get('metric', '')}: "
                    f"{k.get('reason', '?')}"
                    for k in skipped[:10]
                )
                + (f"; … and {len(skipped) - 10} more" if len(skipped) > 10 else "")
                + "."
            )
        n_fail = 0
        if "failures" in r:  # one count per fit (repeated on each of its terms): max per fit, summed
            fails = r.assign(_f=pd.to_numeric(r["failures"], errors="coerce").fillna(0))
            n_fail = int(
                fails.groupby([c for c in ("benchmark", "category", "metric") if c in r], dropna=False)["_f"]
                .max()
                .sum()
            )
        if sig.empty:
            doc.p(
                f"No coefficient of the {len(r)} tested is significant after Benjamini-Hochberg correction "
                f"(alpha {ALPHA}). The smallest adjusted p-values:"
            )
            doc.table(r.assign(_p=r["p_adj"].astype(float)).sort_values("_p").head(10), cols)
        else:
            doc.p(
                f"{len(sig)} of {len(r)} coefficients are significant after Benjamini-Hochberg correction "
                f"(alpha {ALPHA}):"
            )
            doc.table(sig.assign(_p=sig["p_adj"].astype(float)).sort_values("_p"), cols)
        if n_fail:
            doc.p(
                f"{n_fail} failure(s) recorded across the fits (column failures, one count per "
                f"benchmark/category/metric)."
            )
        doc.table(r, cols + ["failures"], details=f"All {len(r)} coefficients")


def baseline_section(doc: Page, cmp: pd.DataFrame | None, figs: Mapping[str, Path]) -> None:
    """Baselines compared (the paper's Table 3 analogue)."""
    doc.h2("Baselines (Table 3 analogue)")
    if _empty(cmp):
        doc.p("No baseline comparison.")
    else:
        for name, path in figs.items():
            if name.startswith("baselines__"):
                doc.figure(path, f"Mean per baseline with 95% CI: {name.split('__', 1)[1]}.")
        _method_note(doc, cmp)
        doc.table(
            cmp,
            [
                *_varying(cmp, ("model", "category", "mitigation")),
                "benchmark",
                "metric",
                "baseline",
                *(["stage"] if "stage" in cmp else []),
                "mean",
                "ci_low",
                "ci_high",
                "n",
                "diff_vs_ref",
                "diff_low",
                "diff_high",
                "p_value",
                "test",
                *DESIGN_COLUMNS,
            ],
        )


def mitigation_section(doc: Page, mit: pd.DataFrame | None, figs: Mapping[str, Path]) -> None:
    """Mitigation effects (the paper's Table 4 analogue)."""
    doc.h2("Mitigation (Table 4 analogue)")
    if _empty(mit):
        doc.p("No mitigation results.")
    else:
        if "mitigation" in figs:
            doc.figure(figs["mitigation"], "Change of each metric under each mitigation, per baseline (95% CI).")
        has_dis = "disregard" in mit and mit["disregard"].map(_has_text).any()
        doc.table(
            mit,
            [
                *_varying(mit, ("model", "category")),
                "benchmark",
                "metric",
                "baseline",
                *(["stage"] if "stage" in mit else []),
                "mitigation",
                *(["disregard"] if has_dis else []),
                "mean_reference",
                "mean_mitigated",
                "delta_mean",
                "ci_low",
                "ci_high",
                "n_pairs",
                "p_value",
                "test",
                *DESIGN_COLUMNS,
            ],
        )
        _method_note(doc, mit)


def alignment_section(doc: Page, aln: pd.DataFrame | None) -> None:
    """PVQ alignment per run, with collapsed runs named."""
    doc.h2("Value alignment (PVQ)")
    if _empty(aln):
        doc.p("No value-alignment results.")
    else:
        collapsed = aln[aln["collapsed"].fillna(False).astype(bool)] if "collapsed" in aln else aln.iloc[:0]
        if len(collapsed):
            runs = ", ".join(f"{r.profile} ({r.model}, {r.stage})" for r in collapsed.itertuples(index=False))
            doc.warn(
                f"{len(collapsed)} of {len(aln)} run(s) collapsed: every greedy PVQ answer is the same digit, "
                f"so their greedy NMSE says nothing about value alignment (read nmse_expected instead): "
                f"{runs}."
            )
        else:
            doc.p(f"No run collapsed to a single greedy answer ({len(aln)} run(s)).")
        doc.table(aln, ["profile", "model", "stage", "nmse_greedy", "nmse_expected", "parse_rate", "collapsed"])


def fidelity_section(doc: Page, fid: pd.DataFrame | None) -> None:
    """Persona fidelity with and without the value prompt."""
    if _empty(fid):
        return
    doc.h2("Persona fidelity under the value prompt")
    d = pd.to_numeric(fid.get("delta"), errors="coerce")
    worse = int((d > 0).sum())
    doc.p(
        f"NMSE against the target profile without and with the value prompt; delta > 0 means the prompt "
        f"moves the model away from its profile ({worse} of {len(fid)} row(s); mean delta "
        f"{fmt_num(d.mean(), signed=True)})."
    )
    doc.table(
        fid,
        [
            "profile",
            *_varying(fid, ("model", "baseline", "stage")),
            "reading",
            "nmse_none",
            "nmse_value_prompt",
            "delta",
        ],
    )


def audit_section(doc: Page, audit: Mapping[str, Any] | None) -> None:
    """The training-data audit, when one ran."""
    if audit:
        doc.h2("Training-data audit")
        scorer = _scorer_text(audit.get("scorer"))
        doc.p(
            f"{fmt_num(audit.get('flagged'))} of {fmt_num(audit.get('scored'))} scored training texts "
            f"({fmt_num(audit.get('texts'))} distinct) reach the toxicity threshold "
            f"{fmt_num(audit.get('threshold'))} with {scorer}. The paper reports 5 of 8K+ with Perspective."
        )


def auto_mitigation_section(doc: Page, auto_mitigation: Mapping[str, Any] | None) -> None:
    """Values the automatic mitigation disregards, per category."""
    if auto_mitigation:
        doc.h2("Automatic mitigation")
        doc.p("Values the automatic value prompt asks the model to disregard, per harm category:")
        doc.table(_auto_rows(auto_mitigation))
