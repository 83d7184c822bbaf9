"""The report's sections on the models' values: PVQ alignment per run, how far value injection took hold
per model (analysis.injection), persona fidelity under the value prompt."""

from __future__ import annotations

import pandas as pd

from value_harms.analysis.report.format import fmt_num, is_empty, varying_columns
from value_harms.analysis.report.page import Page


def alignment_section(doc: Page, aln: pd.DataFrame | None) -> None:
    """PVQ alignment per run, with collapsed runs named."""
    doc.h2("Value alignment (PVQ)")
    if is_empty(aln):
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


def injection_section(doc: Page, inj: pd.DataFrame | None) -> None:
    """How far value injection took hold per model (analysis.injection.injection_table), with the verdict rule."""
    if inj is None:
        return
    doc.h2("Value injection: did it take hold?")
    if is_empty(inj):
        doc.p("No trained model has an alignment result: how far injection took hold is unknown.")
        return
    counts = inj["verdict"].astype(str).value_counts()
    kinds = ("took hold", "partly", "cannot tell", "did not", "unknown")
    said = ", ".join(f"{int(counts[v])} {v}" for v in kinds if v in counts)
    doc.p(
        f"{len(inj)} trained model(s): {said}. Target lift = the PVQ expected score of the target's top value(s) "
        "minus the mean of the other nine, relative to the vanilla model of the same base model (PVQ points); "
        "spearman = rank correlation of the ten expected scores with the target, spearman_gain = over the "
        "vanilla model's. lift_low, lift_high: its interval over the PVQ items (bootstrap, paired by item with "
        "the vanilla model; a training seed moves the lift more than this). Verdict: took hold when the interval "
        "lies above 0 and lift >= 0.5, partly when it lies above 0 with a smaller lift, did not when it lies at "
        "or below 0, cannot tell when it straddles 0; without per-item rows the point rule (took hold >= 0.5, "
        "partly > 0, did not <= 0) (analysis.injection.verdict)."
    )
    if not counts.get("took hold", 0):
        doc.warn(
            "Value injection took hold in no model: harms regressed on target values measure the training "
            "recipe, not the values; the regressions on measured values (analysis.regress_on) set harms against "
            "what the models hold."
        )
    doc.table(
        inj,
        ["profile", *varying_columns(inj, ("model", "stage", "baseline")), "target_values", "target_lift"]
        + ["lift_low", "lift_high", "spearman", "spearman_vanilla", "spearman_gain", "collapsed", "verdict", "note"],
    )


def fidelity_section(doc: Page, fid: pd.DataFrame | None) -> None:
    """Persona fidelity with and without the value prompt."""
    if is_empty(fid):
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
            *varying_columns(fid, ("model", "baseline", "stage")),
            "reading",
            "nmse_none",
            "nmse_value_prompt",
            "delta",
        ],
    )
