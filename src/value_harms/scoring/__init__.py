"""Scoring: one `Scorer` interface for toxicity, regard and LLM-judge measures.

`build_scorer(measure, scorer_cfg, cache_path)` picks the scorer a benchmark's `measure` needs.
"""

from __future__ import annotations

from typing import Any

from .base import MEASURES, Score, Scorer, ScorerError, ScorerUnavailable, text_key, unique_items
from .cache import CachedScorer, ScoreCache

__all__ = [
    "MEASURES",
    "CachedScorer",
    "Score",
    "ScoreCache",
    "Scorer",
    "ScorerError",
    "ScorerUnavailable",
    "build_scorer",
    "text_key",
    "unique_items",
]


def build_scorer(measure: str, scorer_cfg: Any, cache_path: str | None = None) -> Scorer:
    """The scorer for a benchmark's `measure` ("toxicity" | "regard" | "harmfulness" | "flag").

    Backends are imported here, lazily, so importing the package costs nothing and a missing
    optional dependency only matters for the measure that needs it.
    """
    if measure == "toxicity":
        from .toxicity import build_toxicity_scorer

        return build_toxicity_scorer(scorer_cfg, cache_path=cache_path)
    if measure == "regard":
        from .regard import build_regard_scorer

        return build_regard_scorer(scorer_cfg, cache_path=cache_path)
    if measure in ("harmfulness", "flag"):
        from .judge import build_judge_scorer

        return build_judge_scorer(measure, scorer_cfg, cache_path)
    raise ValueError(f"unknown measure {measure!r}: expected one of {', '.join(MEASURES)}")
