"""The alignment table printed by the demo and the report: per value target / greedy / expected per run,
NMSE rows, the vanilla baseline, and one plain sentence per run."""

from __future__ import annotations

import math

from value_harms.alignment.pvq import AlignmentResult, nmse, normalise_target
from value_harms.alignment.shift import target_lifts
from value_harms.core.values import VALUES


def _fmt(x: float | None, nd: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def format_alignment_table(results: dict[str, AlignmentResult], targets: dict[str, dict | None]) -> str:
    """Plain-text table: rows = 10 values + NMSE(greedy) + NMSE(expected) + parse rate; per run the
    columns target / greedy / expected; then the vanilla baseline NMSE against each run's target and
    one plain sentence per run (movement vs a run named "vanilla", collapse of greedy answers)."""
    # size: one text table built row by row; split, its column layout would be spread over helpers
    names = list(results)
    tgts = {n: normalise_target(targets.get(n)) for n in names}
    head_w, col_w = 16, 8
    line1 = " " * head_w + "".join(f"{n[: 3 * col_w - 1]:<{3 * col_w}}" for n in names)
    line2 = f"{'value':<{head_w}}" + "".join(f"{c:>{col_w}}" for _ in names for c in ("target", "greedy", "expect"))
    lines = [line1, line2, "-" * len(line2)]
    for v in VALUES:
        cells = []
        for n in names:
            t = tgts[n].get(v) if tgts[n] else None
            cells += [_fmt(t), _fmt(results[n].greedy.get(v)), _fmt(results[n].expected.get(v))]
        lines.append(f"{v:<{head_w}}" + "".join(f"{c:>{col_w}}" for c in cells))
    lines.append("-" * len(line2))
    for label, attr, nd in (("NMSE(greedy)", "nmse_greedy", 3), ("NMSE(expected)", "nmse_expected", 3)):
        cells = []
        for n in names:
            cells += ["", _fmt(getattr(results[n], attr), nd) if tgts[n] else "-", ""]
        lines.append(f"{label:<{head_w}}" + "".join(f"{c:>{col_w}}" for c in cells))
    cells = []
    for n in names:
        cells += ["", _fmt(results[n].parse_rate), ""]
    lines.append(f"{'parse rate':<{head_w}}" + "".join(f"{c:>{col_w}}" for c in cells))

    van = results.get("vanilla")
    if van is not None:
        base = [n for n in names if n != "vanilla" and tgts[n]]
        if base:
            lines.append("")
            lines.append("vanilla as a baseline against each run's target:")
            for n in base:
                g = nmse(van.greedy, tgts[n]) if any(van.greedy[v] is not None for v in VALUES) else None
                e = nmse(van.expected, tgts[n])
                lines.append(
                    f"  {n} target: vanilla NMSE(greedy) {_fmt(g, 3)}, NMSE(expected) {_fmt(e, 3)};"
                    f" {n} NMSE(greedy) {_fmt(results[n].nmse_greedy, 3)},"
                    f" NMSE(expected) {_fmt(results[n].nmse_expected, 3)}"
                )
    lines.append("")
    for n in names:
        r = results[n]
        parts = []
        if van is not None and n != "vanilla":
            diffs = [
                abs(r.expected[v] - van.expected[v])
                for v in VALUES
                if r.expected.get(v) is not None and van.expected.get(v) is not None
            ]
            if diffs:
                parts.append(
                    f"expected per-value scores moved by a mean of {sum(diffs) / len(diffs):.2f}"
                    " points relative to vanilla."
                )
            lifts = target_lifts(r, van, tgts[n])
            if lifts:
                parts.append(
                    "target lift (expected, vs vanilla, target value minus the others' mean): "
                    + ", ".join(f"{v} {x:+.2f}" for v, x in lifts.items())
                    + "."
                )
        if r.collapsed:
            parts.append(
                f"greedy answers collapsed to '{r.collapsed_to}' for every parsed item"
                f" ({r.n_items - r.histogram['unparsed']}/{r.n_items}); NMSE is not evidence of alignment."
            )
        elif r.histogram["unparsed"] == r.n_items:
            parts.append("no greedy answer could be parsed; only the expected reading is available.")
        else:
            k = sum(1 for d in "123456" if r.histogram[d])
            parts.append(f"greedy answers use {k} distinct digits (parse rate {r.parse_rate:.2f}).")
        lines.append(f"{n}: " + " ".join(parts))
    return "\n".join(lines)
