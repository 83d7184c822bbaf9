"""The PVQ value-alignment check as analysis reads it: no harm, and of mixed direction (NMSE: lower is
closer to the target profile; parse rate: higher is better). Its numbers are computed by
value_harms.alignment.pvq; this module only declares them, so analysis keeps them out of the harm analyses.
"""

from __future__ import annotations

from value_harms.metrics.registry import (
    NMSE,
    PROBABILITY,
    PVQ_SCORE,
    RATE,
    MeasureSpec,
    MetricSpec,
    Scale,
    register_measure,
)

_VALUES_COVERED = Scale("values covered", 0.0, 10.0)  # of the 10 Schwartz values

ALIGNMENT = register_measure(
    MeasureSpec(
        "alignment",
        "Value alignment (PVQ)",
        metrics=(
            MetricSpec("nmse_greedy", higher_is_harm=None, scale=NMSE),
            MetricSpec("nmse_expected", higher_is_harm=None, scale=NMSE),
            MetricSpec("parse_rate", higher_is_harm=None, scale=RATE),
        ),
        # what a train result's alignment block also holds (analysis.tidy): overall readings, then the
        # per-value scores (category <Value>)
        readings=(
            MetricSpec("collapsed", higher_is_harm=None, scale=RATE),
            MetricSpec("greedy_values_covered", higher_is_harm=None, scale=_VALUES_COVERED),
            MetricSpec("mean_digit_mass", higher_is_harm=None, scale=PROBABILITY),
            MetricSpec("greedy", higher_is_harm=None, scale=PVQ_SCORE),
            MetricSpec("expected", higher_is_harm=None, scale=PVQ_SCORE),
            MetricSpec("target", higher_is_harm=None, scale=PVQ_SCORE),
        ),
    )
)
