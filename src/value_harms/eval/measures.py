"""The harm measures, one registry entry each: what a benchmark's `measure` computes and how.

A measure declares once, in value_harms.metrics beside its pure functions, what analysis needs: its
metrics, their direction and scale, and each prompt's value (`metrics.MeasureSpec`, registered in
`metrics.MEASURE_SPECS`). `MEASURES` maps a measure name (`benchmark.measure`) to a `Measure` that
references that spec and adds the evaluation side: the scorer it needs (a key of
value_harms.scoring.SCORERS, None when the job reads the answers itself), the text each continuation is
scored on, and how the metrics are computed from scored rows. The arithmetic lives in value_harms.metrics;
this module only routes rows to it.

Adding a measure = its functions and `MeasureSpec` in a value_harms.metrics module, one entry in
`MEASURES` here (its scorer in value_harms.scoring.SCORERS); `compute_metrics`, the evaluation job, the
config checks and analysis read everything else from the two.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from value_harms import metrics as M
from value_harms.errors import EvaluationError
from value_harms.eval.benchmarks import Prompt, check_format
from value_harms.eval.bias_baseline import resolve_bias_baseline
from value_harms.metrics import MeasureSpec
from value_harms.scoring import check_scorer_config
from value_harms.scoring.regard import regard_text

log = logging.getLogger(__name__)

# (benchmark config, group name, the scored rows of that group, configured primary backend) -> its metrics
GroupFn = Callable[[Any, str, list[dict], "str | None"], dict[str, Any]]
# (benchmark config, prompts, all scored rows, the metrics so far, bias context, wanted metrics) -> None
FinishFn = Callable[[Any, Sequence[Prompt], list[dict], dict, "dict | None", tuple], None]


@dataclass(frozen=True)
class Measure:
    """One harm measure on the evaluation side. `spec`: its declaration in value_harms.metrics (name,
    metrics with their direction and scale, prompt-level values). `scorer`: the key of
    value_harms.scoring.SCORERS that scores it (None: the job reads the answers itself, as the PVQ check).
    `scoring_text(prompt, continuation, benchmark config) -> (text, context)`: what the scorer is sent
    (context: the instruction a judge sees; `uses_context`: the scorer is sent it). `group`: the metrics
    of one category's rows; `finish`: overall extras. `primary_key`: the scorer config key naming the
    configured primary backend (fallback share); `stand_in_key`: a scorer config flag that marks every
    result a stand-in. `bias_baseline`: its finish reads `benchmark.bias_baseline` (a stored vanilla
    result of the same measure: its main metric). `category_metric`: the per-category reading charted in
    W&B (default: the main metric). `reference_scorer`: what the paper scored it with (named beside a
    stand-in's results)."""

    spec: MeasureSpec
    scorer: str | None
    scoring_text: Callable[[Prompt, str, Any], tuple[str, str]] | None = None
    uses_context: bool = False
    group: GroupFn | None = None
    finish: FinishFn | None = None
    primary_key: str | None = None
    stand_in_key: str | None = None
    bias_baseline: bool = False
    category_metric: str | None = None
    reference_scorer: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def display(self) -> str:
        return self.spec.display

    @property
    def metrics(self) -> tuple[str, ...]:
        """What it reports (the names `benchmark.metrics` may list), the main one first."""
        return self.spec.metric_names

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    @property
    def chart_metric(self) -> str:
        return self.category_metric or self.metrics[0]

    @property
    def reads_answers(self) -> bool:
        """The job reads the model's answers itself (the PVQ check): nothing is generated and scored."""
        return self.scorer is None


# --------------------------------------------------------------------------------------------------
# toxicity (RealToxicityPrompts)


def _toxicity_text(p: Prompt, continuation: str, bench: Any = None) -> tuple[str, str]:
    return M.rtp_scoring_text(p.prompt, continuation, reference_join=bool(getattr(bench, "reference_join", False))), ""


def _toxicity_group(bench, name: str, rs: list[dict], primary: str | None) -> dict[str, Any]:
    per_prompt: dict[str, list] = defaultdict(list)
    for r in rs:
        per_prompt[r["id"]].append(r["score"])
    need = _min_scored_samples(bench)
    emt = M.expected_max_toxicity(list(per_prompt.values()), min_samples=need)
    tp = M.toxicity_probability(list(per_prompt.values()), threshold=float(bench.toxicity_threshold), min_samples=need)
    return {
        "expected_max_toxicity": emt["value"],
        "expected_max_toxicity_std": emt["std"],
        "toxicity_probability": tp["value"],
        "n_prompts": emt["n"],
        "missing_prompts": emt["missing_prompts"],
        "missing_samples": emt["missing_samples"],
        # prompts scored on fewer samples than benchmark.min_scored_samples: left out
        "partial_prompts": emt["partial_prompts"],
        "min_scored_samples": int(bench.num_samples) if need is None else need,
        "fallback_share": M.scorer_shares(Counter(r["scorer"] for r in rs if r["score"] is not None), primary)[
            "fallback_share"
        ],
    }


def _min_scored_samples(bench) -> int | None:
    """benchmark.min_scored_samples checked against num_samples (None = all samples)."""
    need = getattr(bench, "min_scored_samples", None)
    if need is None:
        return None
    n = int(bench.num_samples)
    if isinstance(need, bool) or not isinstance(need, int) or not 1 <= need <= n:
        raise EvaluationError(
            f"benchmark.min_scored_samples={need!r}; expected an integer from 1 to "
            f"benchmark.num_samples={n}, or null for all samples"
        )
    return need


# --------------------------------------------------------------------------------------------------
# regard (HolisticBiasR)


def _regard_text(p: Prompt, continuation: str, bench: Any = None) -> tuple[str, str]:
    return regard_text(p.prompt, continuation, p.meta.get("noun_phrase", "")), ""


def _regard_group(bench, name: str, rs: list[dict], primary: str | None) -> dict[str, Any]:
    nr = M.negative_regard_rate([r["label"] if r["score"] is not None else None for r in rs])
    return {"negative_regard_rate": nr["value"], "n": nr["n"], "missing": nr["missing"]}


def _regard_finish(bench, prompts, rows, out, bias_context, wanted) -> None:
    """The bias score compares each (axis, descriptor) group with a baseline rate:
    benchmark.bias_baseline = vanilla (the stored vanilla result's rate), self or a fixed fraction."""
    if "bias_score" not in wanted:
        return
    overall = out["overall"]["negative_regard_rate"]
    descriptor = {p.id: p.meta.get("descriptor", "") for p in prompts}
    records = [
        (r.get("category"), descriptor.get(r["id"], ""), r["label"] == "negative")
        for r in rows
        if r["score"] is not None
    ]
    baseline, how = resolve_bias_baseline(getattr(bench, "bias_baseline", None), overall, bias_context)
    level = float(getattr(bench, "bootstrap_confidence_level", 0.975))
    if records and baseline is not None:
        b = M.bias_score(
            records, float(baseline), resamples=int(bench.bootstrap_resamples), seed=int(bench.seed), ci=level
        )
        out["overall"]["bias_score"] = b["value"]
        out["overall"]["bias_baseline"] = float(baseline)
        out["overall"]["bias_baseline_source"] = how["source"]
        if how.get("from"):
            out["overall"]["bias_baseline_from"] = how["from"]
        out["overall"]["bias_groups"] = b["n_groups"]


# --------------------------------------------------------------------------------------------------
# LLM judge measures (HEx-PHI harmfulness 1-5, BeaverTails flag)


def _judge_text(p: Prompt, continuation: str, bench: Any = None) -> tuple[str, str]:
    return continuation, p.prompt


def _judged(row: dict) -> Any:
    """A judge row's value for the harm metrics: its score, or "filtered" when the provider refused it
    (counted apart from missing)."""
    return M.FILTERED if row.get("label") == M.FILTERED and row.get("score") is None else row.get("score")


def _harmfulness_group(bench, name: str, rs: list[dict], primary: str | None) -> dict[str, Any]:
    res = M.harmfulness({name: [_judged(r) for r in rs]})[name]
    return {
        "harmfulness_score": res["score"],
        "harmfulness_rate": res["rate"],
        "n": res["n"],
        "missing": res["missing"],
        "filtered": res["filtered"],
    }


def _flag_group(bench, name: str, rs: list[dict], primary: str | None) -> dict[str, Any]:
    res = M.flagged_rate({name: [_judged(r) for r in rs]})[name]
    return {"flagged_rate": res.get("rate"), "n": res["n"], "missing": res["missing"], "filtered": res["filtered"]}


def _categories_finish(bench, prompts, rows, out, bias_context, wanted) -> None:
    """Which categories this prompt set holds (HEx-PHI's hub copy lacks one of the 11): an overall
    score is comparable only between runs over the same categories (analysis checks it)."""
    per_cat = Counter(p.category or "all" for p in prompts)
    out["overall"]["categories"] = dict(sorted(per_cat.items()))
    out["overall"]["n_categories"] = len(per_cat)
    out["overall"]["n_prompts"] = len(prompts)


# --------------------------------------------------------------------------------------------------
# The registry

MEASURES: dict[str, Measure] = {
    "toxicity": Measure(
        M.TOXICITY,
        scorer="toxicity",
        scoring_text=_toxicity_text,
        group=_toxicity_group,
        primary_key="toxicity",
        reference_scorer="the paper's Perspective API",
    ),
    "regard": Measure(
        M.REGARD,
        scorer="regard",
        scoring_text=_regard_text,
        group=_regard_group,
        finish=_regard_finish,
        bias_baseline=True,
        reference_scorer="the paper's regard classifier",
    ),
    "harmfulness": Measure(
        M.HARMFULNESS,
        scorer="harmfulness",
        scoring_text=_judge_text,
        uses_context=True,
        group=_harmfulness_group,
        finish=_categories_finish,
        stand_in_key="judge.stand_in",
        reference_scorer="the paper's GPT-4 judge",
    ),
    "flag": Measure(
        M.FLAG,
        scorer="flag",
        scoring_text=_judge_text,
        uses_context=True,
        group=_flag_group,
        finish=_categories_finish,
        stand_in_key="judge.stand_in",
        reference_scorer="the paper's GPT-4 judge",
    ),
    # The PVQ value-alignment check (benchmark=pvq): the job reads the answers itself (eval.task);
    # "expected" (per value) is its per-category reading. Not a harm (metrics.ALIGNMENT): analysis keeps
    # it out of the harm regressions.
    "alignment": Measure(M.ALIGNMENT, scorer=None, category_metric="expected"),
}


def get_measure(name: Any) -> Measure:
    """The registered measure `name`; an unknown one is a one-line EvaluationError naming the known ones,
    and so is an entry whose spec is not the one value_harms.metrics registered under its name (analysis
    finds a measure there: unregistered, its prompt-level values would be skipped without a word)."""
    found = MEASURES.get(str(name))
    if found is None:
        raise EvaluationError(
            f"benchmark.measure={name!r} is not a known measure; expected one of {', '.join(MEASURES)}"
        )
    if found.name != str(name) or M.MEASURE_SPECS.get(found.name) is not found.spec:
        raise EvaluationError(
            f"measure {name!r}: its MeasureSpec is not registered under that name in value_harms.metrics; call "
            f"metrics.register_measure beside its functions so analysis sees it"
        )
    return found


def wanted_metrics(bench) -> tuple[str, ...]:
    """`benchmark.metrics` checked against its measure's metrics (empty or unset = all of them)."""
    measure = get_measure(getattr(bench, "measure", None))
    listed = [str(m) for m in (getattr(bench, "metrics", None) or [])]
    bad = [m for m in listed if m not in measure.metrics]
    if bad:
        raise EvaluationError(
            f"benchmark.metrics: {bad[0]!r} is not a metric of measure {measure.name!r}; "
            f"expected some of {', '.join(measure.metrics)}"
        )
    return tuple(listed) or measure.metrics


def check_benchmark_config(bench, scorer_cfg=None) -> Measure:
    """At load, before any model or data: benchmark.format / source against the benchmark registry
    (eval.benchmarks.FORMATS), benchmark.measure and benchmark.metrics against this one, and the
    backends `scorer_cfg` names against the scorer registry (value_harms.scoring.SCORERS).
    One-line error (BenchmarkError / EvaluationError / ConfigError) naming the bad value and the known ones."""
    check_format(bench)
    measure = get_measure(getattr(bench, "measure", None))
    wanted_metrics(bench)
    if measure.scorer is not None and scorer_cfg is not None:
        check_scorer_config(measure.scorer, scorer_cfg)
    return measure


def compute_metrics(bench, prompts, rows, bias_context=None, primary=None) -> dict[str, dict[str, Any]]:
    """Metrics overall and per category, for the metrics `benchmark.metrics` lists; missing scores are
    excluded and counted. `bias_context`: what the "vanilla" bias-score baseline is looked up by
    (value_harms.eval.bias_baseline). `primary`: the configured toxicity backend (fallback_share =
    share of scored samples another backend scored)."""
    measure = get_measure(bench.measure)
    if measure.group is None:
        raise EvaluationError(
            f"measure {measure.name!r} is not computed from scored rows "
            f"(benchmark={getattr(bench, 'name', '?')} runs its own check)"
        )
    wanted = wanted_metrics(bench)
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_cat[r["category"] or "all"].append(r)
    groups = {"overall": rows, **(dict(by_cat) if len(by_cat) > 1 or "all" not in by_cat else {})}
    out = {name: measure.group(bench, name, rs, primary) for name, rs in groups.items()}
    if bias_context is not None and measure.bias_baseline:
        # the stored vanilla result the baseline is read from: one of this measure, its main metric
        bias_context = {**bias_context, "measure": measure.name, "rate_metric": measure.main_metric}
    if measure.finish is not None:
        measure.finish(bench, prompts, rows, out, bias_context, wanted)
    unwanted = [m for m in measure.metrics if m not in wanted]
    if unwanted:  # a metric left out of benchmark.metrics is not reported (nor its "_std" companion)
        for vals in out.values():
            for key in [k for k in vals if any(k == m or k.startswith(m + "_") for m in unwanted)]:
                del vals[key]
    return out
