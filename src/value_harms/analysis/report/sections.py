"""The report's sections, each a function that writes its headings, figures and tables into a Page."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from value_harms.analysis.multiplicity import family_text
from value_harms.analysis.report.findings import significant_mask
from value_harms.analysis.report.format import (
    ALPHA,
    INTERCEPT_TERMS,
    NA,
    REG_IDENT,
    bench_name,
    escape_html,
    fmt_num,
    has_text,
    is_empty,
    is_na,
    scorer_text,
    share_range,
    varying_columns,
)
from value_harms.analysis.report.page import Page


def _stand_in_warning(provenance: Mapping[str, Any]) -> str | None:
    flagged = [b for b, v in (provenance.get("stand_in") or {}).items() if v]
    if not flagged:
        return None
    scorers = provenance.get("scorers") or {}
    used = [str(s) for b in flagged for s in (scorers.get(b) or [])]
    names = ", ".join(bench_name(b) for b in flagged)
    # how far the stand-in stands in, where that was measured (scoring/agreement.py)
    measured = "; ".join(line for b in flagged for line in (provenance.get("agreement") or {}).get(b) or [])
    tail = f" Measured: {measured}." if measured else ""
    if not used or any("profanity" in s.lower() for s in used):
        return (
            f"Scores for {names} come from a stand-in classifier (alt-profanity-check), not the paper's "
            f"Perspective API / Detoxify: compare shapes, not values, with the paper.{tail}"
        )
    return (
        f"Scores for {names} come from a stand-in scorer ({', '.join(dict.fromkeys(used))}), not the "
        f"paper's scorer: compare shapes, not values, with the paper.{tail}"
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
                    # a stand-in's measured agreement with Perspective (scoring/agreement.py)
                    "vs Perspective": "; ".join((provenance.get("agreement") or {}).get(b) or []) or NA,
                    "stand_in": bool((provenance.get("stand_in") or {}).get(b, False)),
                    "version": (
                        ", ".join(f"{k}={v}" for k, v in ver.items())
                        if isinstance(ver, Mapping)
                        else (NA if ver is None else str(ver))
                    ),
                    "failures": (provenance.get("failures") or {}).get(b, 0),
                    # per-text fallback share range, content-filtered judge answers, prompt sets
                    "fallback share": share_range((provenance.get("fallback_share") or {}).get(b)),
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
            + "".join(f"<li><code>{escape_html(r)}</code></li>" for r in shown)
            + "".join(f"<li>{escape_html(e)}</li>" for e in extra)
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
    """State how the intervals were computed and the design minimum."""
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
            if not is_na(mm) and not is_na(mp)
            else "."
        )
    )


def summary_section(
    doc: Page, findings: list[str] | None, provenance: Mapping[str, Any], family: Mapping[str, Any] | None = None
) -> None:
    """Top findings, the multiplicity family, and a warning when stand-in scorers were used."""
    doc.h2("Summary")
    if findings:
        doc.bullets(findings)
    else:
        doc.p("No findings were produced (no result frames).")
    doc.p(
        f"Multiplicity: {family_text(family)}. An effect is named only with q <= "
        f"{(family or {}).get('alpha', ALPHA):g} and a design that meets the stated minimum; every table prints "
        "q beside p. Estimands: each variant vs "
        "this vanilla model (one fixed model: not the population of base models); value-aligned models vs a "
        "fine-tuning control and vs the same profiles as in-context personas (paired by profile); the slope "
        "of harm on each value across the value-aligned profiles; each mitigation within the same models."
    )
    flagged = [bench_name(b) for b, v in (provenance.get("stand_in") or {}).items() if v]
    if flagged:
        doc.p(f"⚠ Stand-in scorers were used for {', '.join(flagged)}: see Scorers & provenance.")


FIT_KEYS = ("model", "stage", "regressors", "benchmark", "category", "metric")
# Belsley, Kuh and Welsch (1980): a condition index above 30 means coefficients that move with small changes
# of the data; a VIF above 10 the usual rule for a coefficient inflated by collinearity.
COND_INDEX_WARN, VIF_WARN = 30.0, 10.0


def _skipped_text(skipped: list[Mapping[str, Any]]) -> str:
    def what(k: Mapping[str, Any]) -> str:
        name = " ".join(str(k.get(c) or "") for c in ("category", "metric")).strip()
        return f"{bench_name(k.get('benchmark'))} {name}".strip() if has_text(k.get("benchmark")) else "all"

    shown = "; ".join(f"{what(k)}: {k.get('reason', '?')}" for k in skipped[:10])
    more = f"; … and {len(skipped) - 10} more" if len(skipped) > 10 else ""
    return f"{len(skipped)} regression(s) were not fitted: {shown}{more}."


def _diagnostics(doc: Page, r: pd.DataFrame) -> None:
    """Per fit: profiles, residual df, R2, condition index, largest VIF, powered."""
    keys = [c for c in FIT_KEYS if c in r]
    if "cond_index" not in r or not keys:
        return
    fits = r.groupby(keys, dropna=False, sort=True).agg(
        n=("n", "max"),
        df_resid=("df_resid", "max"),
        r2=("r2", "max"),
        cond_index=("cond_index", "max"),
        max_vif=("vif", "max"),
        min_mde=("mde", "min"),
        max_mde=("mde", "max"),
        powered=("powered", "all"),
    )
    fits = fits.reset_index()
    bad = fits[(fits["cond_index"] > COND_INDEX_WARN) | (fits["max_vif"] > VIF_WARN)]
    if len(bad):
        doc.warn(
            f"{len(bad)} of {len(fits)} regression design(s) are collinear (condition index > {COND_INDEX_WARN:g} "
            f"or a VIF > {VIF_WARN:g}): their coefficients are unstable and their minimum detectable slopes large."
        )
    weak = fits[~fits["powered"].astype(bool)]
    need = r["min_profiles"].iloc[0] if "min_profiles" in r else None
    if len(weak):
        doc.p(
            f"{len(weak)} of {len(fits)} regression(s) are underpowered (fewer than {fmt_num(need)} profiles): "
            f"their slopes are shown, never headlined; min_mde / max_mde = the smallest slope each coefficient "
            f"would detect with 80% power."
        )
    doc.table(
        fits,
        [*varying_columns(fits, REG_IDENT), "benchmark", "category", "metric", "n", "df_resid", "r2", "cond_index"]
        + ["max_vif"]
        + ["min_mde", "max_mde", "powered"],
        details=f"Design diagnostics of the {len(fits)} fit(s)",
    )


def _regressors_note(doc: Page, r: pd.DataFrame, note: str | None) -> None:
    """What the regressors are when measured values are among them, and the models left out."""
    if "regressors" not in r:
        return
    q = pd.to_numeric(r["q"] if "q" in r else r["p_adj"], errors="coerce")
    n_meas = int((r["regressors"].astype(str).eq("measured") & q.notna()).sum())
    doc.p(
        "Regressors (column regressors): target = each profile's target intensities; measured = the PVQ "
        "expected scores each model's alignment check measured (matched to its evaluation results by "
        "training key, averaged per profile like the outcome). Measured-value coefficients are separate "
        f"tests in the same family ({n_meas} of its tests), with the same minimum of profiles."
        + (f" {note}." if note else "")
    )


def regression_section(doc: Page, reg: pd.DataFrame | None, figs: Mapping[str, Path]) -> None:
    """Value -> harm regressions: heatmap, significant coefficients (family q), diagnostics, skipped fits."""
    doc.h2("Value → harm regressions")
    skipped = list(reg.attrs.get("skipped") or []) if isinstance(reg, pd.DataFrame) else []
    note = reg.attrs.get("measured_note") if isinstance(reg, pd.DataFrame) else None
    if is_empty(reg):
        doc.p("No regression was fitted." + (f" {_skipped_text(skipped)}" if skipped else ""))
        if note:
            doc.p(f"{note}.")
        return
    for name, path in figs.items():
        if name.startswith("coef_heatmap"):
            what = "Regression coefficients of each value on each harm metric"
            doc.figure(path, f"{what} (stars: family q-value, where the design is powered).")
    r = reg[~reg["term"].astype(str).str.lower().isin(INTERCEPT_TERMS)]
    sig = r[significant_mask(r)]
    qcol = "q" if "q" in r else "p_adj"
    _regressors_note(doc, r, note)
    cols = [*varying_columns(r, REG_IDENT), "benchmark", "category", "metric", "term", "coef", "se", "ci_low"]
    cols += ["ci_high", "t", "p"]
    cols += [qcol, "n", "r2", *(c for c in ("mde", "vif") if c in r)]
    if "rank_deficient" in r and r["rank_deficient"].fillna(False).astype(bool).any():
        cols.append("rank_deficient")
        n_rd = (
            r[r["rank_deficient"].fillna(False).astype(bool)]
            .groupby([c for c in FIT_KEYS if c in r], dropna=False)
            .ngroups
        )
        doc.warn(
            f"{n_rd} regression(s) are rank deficient (collinear value profiles): their individual "
            f"coefficients are not identified; read them with care (column rank_deficient)."
        )
    if skipped:
        doc.p(_skipped_text(skipped))
    _diagnostics(doc, r)
    n_fail = 0
    if "failures" in r:  # one count per fit (repeated on each of its terms): max per fit, summed
        fails = r.assign(_f=pd.to_numeric(r["failures"], errors="coerce").fillna(0))
        keys = [c for c in ("benchmark", "category", "metric") if c in r]
        n_fail = int(fails.groupby(keys, dropna=False)["_f"].max().sum())
    order = r.assign(_p=pd.to_numeric(r[qcol], errors="coerce"))
    if sig.empty:
        doc.p(
            f"No coefficient of the {len(r)} tested has q <= {ALPHA} with a design that meets the minimum. "
            "The smallest q-values:"
        )
        doc.table(order.sort_values("_p").head(10), cols)
    else:
        doc.p(
            f"{len(sig)} of {len(r)} coefficients have q <= {ALPHA} (the report's family) and a design that "
            "meets the minimum:"
        )
        doc.table(sig.assign(_p=pd.to_numeric(sig[qcol], errors="coerce")).sort_values("_p"), cols)
    if n_fail:
        doc.p(
            f"{n_fail} failure(s) recorded across the fits (column failures, one count per benchmark/category/metric)."
        )
    doc.table(r, cols + ["failures"], details=f"All {len(r)} coefficients")


def contrast_section(doc: Page, con: pd.DataFrame | None) -> None:
    """The contrasts that isolate values (analysis.contrasts): VIM vs fine-tuning controls and vs ICL personas."""
    if is_empty(con):
        return
    doc.h2("What the values add (value contrasts)")
    doc.p(
        "Value-aligned models against a fine-tuning control (variant benign, or the VIM recipe on a profile whose "
        "ten values are equal) and against the same profiles as in-context personas (no training; units paired "
        "by profile, the paired two-way estimator). estimate = value-aligned minus the control."
    )
    _method_note(doc, con)
    doc.table(
        con,
        [*varying_columns(con, ("model",)), "benchmark", "metric", "contrast", "group", "control", "mean_group"]
        + ["mean_control", "estimate", "ci_low", "ci_high", "p_value", "q", "n_models", "n_control", "n_prompts"]
        + ["n_samples", "mde", "powered"],
    )


def baseline_section(doc: Page, cmp: pd.DataFrame | None, figs: Mapping[str, Path]) -> None:
    """Baselines compared (the paper's Table 3 analogue)."""
    doc.h2("Baselines (Table 3 analogue)")
    if is_empty(cmp):
        doc.p("No baseline comparison.")
    else:
        for name, path in figs.items():
            if name.startswith("baselines__"):
                doc.figure(path, f"Mean per baseline with 95% CI: {name.split('__', 1)[1]}.")
        _method_note(doc, cmp)
        doc.table(
            cmp,
            [
                *varying_columns(cmp, ("model", "category", "mitigation")),
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
                "q",
                "test",
                *DESIGN_COLUMNS,
            ],
        )


def mitigation_section(doc: Page, mit: pd.DataFrame | None, figs: Mapping[str, Path]) -> None:
    """Mitigation effects (the paper's Table 4 analogue)."""
    doc.h2("Mitigation (Table 4 analogue)")
    if is_empty(mit):
        doc.p("No mitigation results.")
    else:
        if "mitigation" in figs:
            doc.figure(figs["mitigation"], "Change of each metric under each mitigation, per baseline (95% CI).")
        has_dis = "disregard" in mit and mit["disregard"].map(has_text).any()
        doc.table(
            mit,
            [
                *varying_columns(mit, ("model", "category")),
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
                "q",
                "test",
                *DESIGN_COLUMNS,
            ],
        )
        _method_note(doc, mit)


def audit_section(doc: Page, audit: Mapping[str, Any] | None) -> None:
    """The training-data audit, when one ran."""
    if audit:
        doc.h2("Training-data audit")
        scorer = scorer_text(audit.get("scorer"))
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
