"""Prompt-level values of any registered measure (analysis.inference: models x prompts inference), read
from the measure's own declaration (value_harms.metrics.registry, in the measure's module); no table here.

`PROMPT_VALUES` is a live read-only view, measure -> (the scored samples of one prompt: scores, labels,
toxicity threshold) -> {metric: value}, over the measures that have prompt-level values (not alignment).
`sampling_variance` gives the variance each value has because the prompt was sampled only k times, for
the values that are means over samples (MeasureSpec.sampling_variance).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from value_harms.metrics.registry import MEASURE_SPECS, measure_spec

PromptValues = Callable[[np.ndarray, Sequence[Any], float], "dict[str, float]"]


class _PromptValues(Mapping[str, PromptValues]):
    """measure -> its prompt-value function, for the registered measures that have one (read each time,
    so a measure registered later is in it)."""

    def __getitem__(self, measure: str) -> PromptValues:
        spec = MEASURE_SPECS.get(measure)
        if spec is None or not spec.has_prompt_values:
            raise KeyError(measure)
        return spec.prompt_values

    def __iter__(self) -> Iterator[str]:
        return (name for name, spec in MEASURE_SPECS.items() if spec.has_prompt_values)

    def __len__(self) -> int:
        return sum(1 for _ in self)


PROMPT_VALUES: Mapping[str, PromptValues] = _PromptValues()


def sampling_variance(measure: str, scores: np.ndarray, labels: Sequence[Any]) -> dict[str, float]:
    """{metric: var(per-sample values, ddof=1) / k} of measure `measure` for one prompt's k >= 2 samples;
    {} for a measure nobody registered."""
    spec = measure_spec(measure)
    return {} if spec is None else spec.sampling_variance(scores, labels)
