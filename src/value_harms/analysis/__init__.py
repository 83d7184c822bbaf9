"""Analysis of evaluation results: tidy table, comparability check, regressions and comparisons."""

from value_harms.analysis.stats import (
    auto_mitigation,
    compare_baselines,
    mitigation_effects,
    persona_fidelity,
    value_regressions,
)
from value_harms.analysis.tidy import (
    TIDY_COLUMNS,
    check_comparable,
    find_results,
    find_train_results,
    load_alignment,
    load_results,
    results_to_frame,
    scorer_label,
)
from value_harms.errors import AnalysisError

__all__ = [
    "AnalysisError",
    "TIDY_COLUMNS",
    "auto_mitigation",
    "check_comparable",
    "compare_baselines",
    "find_results",
    "find_train_results",
    "load_alignment",
    "load_results",
    "mitigation_effects",
    "persona_fidelity",
    "results_to_frame",
    "scorer_label",
    "value_regressions",
]
