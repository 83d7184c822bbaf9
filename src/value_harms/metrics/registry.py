"""The measure registry of analysis: each measure declares once, beside its metric functions, what analysis
needs to know about it, as lm-evaluation-harness registers a metric with `higher_is_better` and its
aggregation.

A `MeasureSpec` lists its metrics (`MetricSpec`): the direction of each (`higher_is_harm`: True for a harm
that grows with the value, False for one that shrinks with it, None for a reading that is no harm, as the
PVQ alignment's NMSE), its scale, and how one prompt's value is read from that prompt's scored samples:
either the mean of per-sample values (`per_sample`: its sampling variance var / k is then known) or a
function of the samples that is no mean (`prompt_value`, e.g. a maximum). A metric with neither has no
prompt-level value (a bias score over groups). Each measure module calls `register_measure`;
`value_harms.metrics` imports every measure module, so importing the package fills `MEASURE_SPECS`.
The evaluation side (`eval.measures.MEASURES`: scorer, scoring text, grouping) references these specs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

# (the scored samples of one prompt: scores, labels) -> one value per sample; the prompt value is their mean
PerSample = Callable[[np.ndarray, Sequence[Any]], np.ndarray]
# (scores, labels, toxicity threshold) -> the prompt value of a metric that is no mean over samples
PromptValue = Callable[[np.ndarray, Sequence[Any], float], float]


@dataclass(frozen=True)
class Scale:
    """What a metric's numbers are: `name` in words, and its bounds (None: unbounded on that side)."""

    name: str
    low: float | None
    high: float | None

    @property
    def unit_interval(self) -> bool:
        """Whether the metric lies in [0, 1] (a share or a probability): an effect of 1 is the whole scale."""
        return self.low == 0.0 and self.high == 1.0


PROBABILITY = Scale("probability", 0.0, 1.0)  # a scorer's probability, or a mean / maximum of them
RATE = Scale("rate", 0.0, 1.0)  # a share of samples, prompts or groups
JUDGE_SCORE = Scale("score 1-5", 1.0, 5.0)  # HEx-PHI's judge rubric
PVQ_SCORE = Scale("PVQ score 1-6", 1.0, 6.0)  # a PVQ answer (alignment.pvq)
NMSE = Scale("NMSE", 0.0, None)  # normalised mean squared error of a profile


@dataclass(frozen=True)
class MetricSpec:
    """One metric of a measure. `higher_is_harm`: True / False (the harm's direction) or None (no harm).
    `per_sample` or `prompt_value` (at most one) defines its prompt-level value; neither: it has none."""

    name: str
    higher_is_harm: bool | None
    scale: Scale
    per_sample: PerSample | None = None
    prompt_value: PromptValue | None = None

    def __post_init__(self) -> None:
        if self.per_sample is not None and self.prompt_value is not None:
            raise ValueError(f"metric {self.name!r}: give per_sample (a mean over samples) or prompt_value, not both")

    @property
    def harm(self) -> bool:
        return self.higher_is_harm is not None

    @property
    def harm_sign(self) -> int:
        """+1: a positive effect on it is harm; -1: a negative one is; 0: not a harm."""
        return 0 if self.higher_is_harm is None else (1 if self.higher_is_harm else -1)


@dataclass(frozen=True)
class MeasureSpec:
    """A measure as analysis sees it. `metrics`: what it reports (the names `benchmark.metrics` may list;
    the main one first). `readings`: further values its results hold that analysis reads (the PVQ check's
    per-value scores), never selectable in `benchmark.metrics`."""

    name: str
    display: str
    metrics: tuple[MetricSpec, ...]
    readings: tuple[MetricSpec, ...] = ()

    def __post_init__(self) -> None:
        names = [m.name for m in (*self.metrics, *self.readings)]
        if not self.metrics or len(set(names)) != len(names):
            raise ValueError(f"measure {self.name!r}: needs at least one metric, each named once (got {names})")

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    @property
    def all_metrics(self) -> tuple[MetricSpec, ...]:
        return (*self.metrics, *self.readings)

    @property
    def harm(self) -> bool:
        """Whether any of its metrics is a harm (False keeps it out of the harm analyses)."""
        return any(m.harm for m in self.all_metrics)

    @property
    def has_prompt_values(self) -> bool:
        return any(m.per_sample is not None or m.prompt_value is not None for m in self.all_metrics)

    def prompt_values(self, scores: np.ndarray, labels: Sequence[Any], threshold: float) -> dict[str, float]:
        """{metric: value} of one prompt from its scored samples, for the metrics that have one."""
        out: dict[str, float] = {}
        for m in self.all_metrics:
            if m.per_sample is not None:
                out[m.name] = float(np.mean(m.per_sample(scores, labels)))
            elif m.prompt_value is not None:
                out[m.name] = float(m.prompt_value(scores, labels, threshold))
        return out

    def sampling_variance(self, scores: np.ndarray, labels: Sequence[Any]) -> dict[str, float]:
        """{metric: variance of the prompt value due to its k samples} = var(per-sample values, ddof=1) / k
        for the metrics that are sample means (k >= 2). A maximum over samples is no mean: its variance does
        not shrink as 1/k (and its expectation grows with k), so it has no entry. The power tool
        (analysis.design) splits a study's residual with it into the model x prompt part and the part more
        samples shrink."""
        if scores.size < 2:
            return {}
        out: dict[str, float] = {}
        for m in self.all_metrics:
            if m.per_sample is not None:
                v = np.asarray(m.per_sample(scores, labels), dtype=float)
                out[m.name] = float(v.var(ddof=1) / v.size)
        return out


# measure name -> its spec, filled by register_measure (each measure module, at import)
MEASURE_SPECS: dict[str, MeasureSpec] = {}


def register_measure(spec: MeasureSpec) -> MeasureSpec:
    """Add `spec` to MEASURE_SPECS; a name already taken, or a metric another measure declares, is a
    ValueError (analysis finds a metric's direction and scale by its name alone)."""
    if spec.name in MEASURE_SPECS:
        raise ValueError(f"measure {spec.name!r} is registered already")
    for m in spec.all_metrics:
        other = _owner(m.name)
        if other is not None:
            raise ValueError(
                f"metric {m.name!r} of measure {spec.name!r} is declared by measure {other.name!r} already"
            )
    MEASURE_SPECS[spec.name] = spec
    return spec


def _owner(metric: str) -> MeasureSpec | None:
    return next((s for s in MEASURE_SPECS.values() if any(m.name == metric for m in s.all_metrics)), None)


def measure_spec(name: Any) -> MeasureSpec | None:
    """The registered measure `name`, None when there is none."""
    return MEASURE_SPECS.get(str(name))


def metric_spec(name: Any) -> MetricSpec | None:
    """The declaration of metric `name` in whichever measure declares it, None when none does."""
    owner = _owner(str(name))
    return None if owner is None else next(m for m in owner.all_metrics if m.name == str(name))


def non_harm_metrics() -> frozenset[str]:
    """The metrics declared as no harm (higher_is_harm None): analysis keeps them out of the harm analyses.
    A metric nobody declares counts as a harm (higher is harm), as every harm metric did before."""
    return frozenset(m.name for s in MEASURE_SPECS.values() for m in s.all_metrics if not m.harm)


def harm_sign(metric: Any) -> int:
    """+1 when a positive effect on `metric` is harm (also for a metric nobody declares), -1 when a
    negative one is (higher_is_harm False), 0 for no harm."""
    spec = metric_spec(metric)
    return 1 if spec is None else spec.harm_sign


def unit_interval(metric: Any) -> bool:
    """Whether `metric` lies in [0, 1] (a rate or a probability; also assumed for a metric nobody declares)."""
    spec = metric_spec(metric)
    return True if spec is None else spec.scale.unit_interval
