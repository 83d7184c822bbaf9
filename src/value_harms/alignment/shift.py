"""Injected vs measured values: how far an aligned model's PVQ scores moved toward its target.

- target lift of a model with target value v: (e[v] - mean of e over the other nine values) minus the
  same quantity for the vanilla model (e = expected scores of the alignment check);
- cross separation of two models a, b on value v: e_a[v] - e_b[v];
- Spearman correlation (tie-averaged ranks) between a target vector and the measured scores;
- the flat scalars a training run logs to its W&B summary, and the demo's plain "do they separate" lines.
"""

from __future__ import annotations

import math
from typing import Any

from value_harms.alignment.pvq import AlignmentResult, normalise_target
from value_harms.core.values import VALUES

Scores = dict[str, float | None]

# The cpu_study criterion for cross separation, in PVQ scale points.
SEPARATION_GOAL = 0.5


def _contrast(scores: Scores, value: str) -> float | None:
    """scores[value] minus the mean of the other values' scores (None when any is missing)."""
    if value not in VALUES:
        raise ValueError(f"unknown value {value!r}; expected one of {', '.join(VALUES)}")
    others = [scores.get(v) for v in VALUES if v != value]
    if scores.get(value) is None or any(x is None for x in others):
        return None
    return float(scores[value]) - sum(others) / len(others)


def target_lift(scores: Scores, vanilla: Scores, value: str) -> float | None:
    """(scores[value] - mean of the other nine) minus the same for the vanilla model: how far training
    raised the target value relative to the rest, beyond where the base model already had it."""
    mine, base = _contrast(scores, value), _contrast(vanilla, value)
    return None if mine is None or base is None else mine - base


def cross_separation(scores_a: Scores, scores_b: Scores, value: str) -> float | None:
    """scores_a[value] - scores_b[value]: model a (aligned to `value`) against model b (aligned elsewhere)."""
    a, b = scores_a.get(value), scores_b.get(value)
    return None if a is None or b is None else float(a) - float(b)


def _ranks(xs: list[float]) -> list[float]:
    """1-based ranks; ties share their mean rank."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman_vs_target(scores: Scores, target: Scores | None) -> float | None:
    """Spearman correlation between a target vector and measured scores over the values both have;
    None with fewer than 3 such values or when either side is constant."""
    target = normalise_target(target) or {}
    common = [v for v in VALUES if scores.get(v) is not None and target.get(v) is not None]
    if len(common) < 3:
        return None
    rx, ry = _ranks([float(target[v]) for v in common]), _ranks([float(scores[v]) for v in common])
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return None if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def top_values(target: Scores | None) -> list[str]:
    """The values at the target's maximum when it stands above the rest (an anchor's 6s); else []."""
    vals = {v: x for v, x in (normalise_target(target) or {}).items() if x is not None}
    if not vals or len(set(vals.values())) < 2:
        return []
    hi = max(vals.values())
    return [v for v in VALUES if vals.get(v) == hi]


def summary_scalars(result: dict[str, Any], vanilla: dict[str, Any] | None = None) -> dict[str, Any]:
    """Flat scalars of one alignment result for W&B summaries (keys without the `alignment/` prefix):
    expected/<Value>, greedy/<Value>, spearman_expected (vs the target); with a vanilla result also
    shift/<Value> (expected minus vanilla's), spearman_gain and target_lift (mean over the target's top
    values, e.g. Power for Pow; absent for a flat or missing target)."""
    out: dict[str, Any] = {}
    for key in ("expected", "greedy"):
        for v in VALUES:
            out[f"{key}/{v}"] = (result.get(key) or {}).get(v)
    target = result.get("target")
    if target:
        out["spearman_expected"] = spearman_vs_target(result["expected"], target)
    if vanilla is None:
        return out
    for v in VALUES:
        a, b = result["expected"].get(v), vanilla["expected"].get(v)
        out[f"shift/{v}"] = None if a is None or b is None else a - b
    if target:
        base, mine = spearman_vs_target(vanilla["expected"], target), out["spearman_expected"]
        out["spearman_gain"] = None if mine is None or base is None else mine - base
        lifts = [target_lift(result["expected"], vanilla["expected"], v) for v in top_values(target)]
        if lifts and all(x is not None for x in lifts):
            out["target_lift"] = sum(lifts) / len(lifts)
    return out


def target_lifts(result: AlignmentResult, vanilla: AlignmentResult, target: Scores | None) -> dict[str, float]:
    """{top value: target lift} of one run against vanilla; {} when a lift is undefined."""
    lifts = {v: target_lift(result.expected, vanilla.expected, v) for v in top_values(target)}
    return lifts if lifts and all(x is not None for x in lifts.values()) else {}


def separation_lines(
    results: dict[str, AlignmentResult], targets: dict[str, dict | None], goal: float = SEPARATION_GOAL
) -> list[str]:
    """One plain line per pair of runs whose targets peak on different values (e.g. Pow and Uni): the
    cross separation on each run's top values (expected scores) and whether all of them reach `goal`."""
    tops = {n: top_values(targets.get(n)) for n in results}
    named = [n for n in results if tops[n]]
    lines = []
    for i, a in enumerate(named):
        for b in named[i + 1 :]:
            if set(tops[a]) & set(tops[b]):
                continue
            seps = [(a, v, cross_separation(results[a].expected, results[b].expected, v)) for v in tops[a]]
            seps += [(b, v, cross_separation(results[b].expected, results[a].expected, v)) for v in tops[b]]
            if any(s is None for _, _, s in seps):
                continue
            verdict = (
                f" -> the models separate (each >= {goal})."
                if all(s >= goal for _, _, s in seps)
                else f" -> the models do NOT separate (goal: each >= {goal}); differences in harms between"
                " them are not evidence of a value effect."
            )
            lines.append(f"{a} vs {b}: " + ", ".join(f"{v} {m} minus the other {s:+.2f}" for m, v, s in seps) + verdict)
    return lines
