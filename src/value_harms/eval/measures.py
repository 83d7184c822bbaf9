"""Harm measures computed from scored rows, per benchmark."""
from __future__ import annotations

import logging
from collections import Counter, defaultdict
from typing import Any

from value_harms.errors import EvaluationError

log = logging.getLogger(__name__)


def compute_metrics(bench, prompts, rows, bias_context=None, primary=None) -> dict[str, dict[str, Any]]:
    """Metrics overall and per category; missing scores are excluded and counted. `bias_context`:
    what the "vanilla" bias-score baseline is looked up by (value_harms.eval.bias_baseline). `primary`: the
    configured toxicity backend (fallback_share = share of scored samples another backend scored)."""
    from value_harms import metrics as M

    measure = bench.measure
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_cat[r["category"] or "all"].append(r)
    groups = {"overall": rows, **({c: rs for c, rs in by_cat.items()} if len(by_cat) > 1 or "all" not in by_cat else {})}
    out: dict[str, dict[str, Any]] = {}
    for name, rs in groups.items():
        if measure == "toxicity":
            per_prompt: dict[str, list] = defaultdict(list)
            for r in rs:
                per_prompt[r["id"]].append(r["score"])
            need = _min_scored_samples(bench)
            emt = M.expected_max_toxicity(list(per_prompt.values()), min_samples=need)
            tp = M.toxicity_probability(list(per_prompt.values()), threshold=float(bench.toxicity_threshold),
                                        min_samples=need)
            out[name] = {"expected_max_toxicity": emt["value"], "expected_max_toxicity_std": emt["std"],
                         "toxicity_probability": tp["value"], "n_prompts": emt["n"],
                         "missing_prompts": emt["missing_prompts"], "missing_samples": emt["missing_samples"],
                         # prompts scored on fewer samples than benchmark.min_scored_samples: left out
                         "partial_prompts": emt["partial_prompts"],
                         "min_scored_samples": int(bench.num_samples) if need is None else need,
                         "fallback_share": M.scorer_shares(Counter(r["scorer"] for r in rs if r["score"] is not None),
                                                           primary)["fallback_share"]}
        elif measure == "regard":
            labels = [r["label"] if r["score"] is not None else None for r in rs]
            nr = M.negative_regard_rate(labels)
            out[name] = {"negative_regard_rate": nr["value"], "n": nr["n"], "missing": nr["missing"]}
        elif measure == "harmfulness":
            # A pair the judge provider's content filter refused is counted as "filtered", apart from missing.
            res = M.harmfulness({name: [_judged(r) for r in rs]})[name]
            out[name] = {"harmfulness_score": res["score"], "harmfulness_rate": res["rate"], "n": res["n"],
                         "missing": res["missing"], "filtered": res["filtered"]}
        else:
            res = M.flagged_rate({name: [_judged(r) for r in rs]})[name]
            out[name] = {"flagged_rate": res.get("rate"), "n": res["n"], "missing": res["missing"],
                         "filtered": res["filtered"]}
    if measure in ("harmfulness", "flag"):
        # Which categories this prompt set holds (HEx-PHI's hub copy lacks one of the 11): an overall
        # score is comparable only between runs over the same categories (analysis checks it).
        per_cat = Counter(p.category or "all" for p in prompts)
        out["overall"]["categories"] = dict(sorted(per_cat.items()))
        out["overall"]["n_categories"] = len(per_cat)
        out["overall"]["n_prompts"] = len(prompts)
    if measure == "regard":
        overall = out["overall"]["negative_regard_rate"]
        descriptor = {p.id: p.meta.get("descriptor", "") for p in prompts}
        records = [(r.get("category"), descriptor.get(r["id"], ""), r["label"] == "negative")
                   for r in rows if r["score"] is not None]
        # The bias score compares each (axis, descriptor) group with a baseline rate (issue 10 item 4):
        # benchmark.bias_baseline = vanilla (the stored vanilla result's rate), self or a fixed fraction.
        from value_harms.eval.bias_baseline import resolve_bias_baseline

        baseline, how = resolve_bias_baseline(getattr(bench, "bias_baseline", None), overall, bias_context)
        level = float(getattr(bench, "bootstrap_confidence_level", 0.975))
        if records and baseline is not None:
            b = M.bias_score(records, float(baseline), resamples=int(bench.bootstrap_resamples), seed=int(bench.seed),
                             ci=level)
            out["overall"]["bias_score"] = b["value"]
            out["overall"]["bias_baseline"] = float(baseline)
            out["overall"]["bias_baseline_source"] = how["source"]
            if how.get("from"):
                out["overall"]["bias_baseline_from"] = how["from"]
            out["overall"]["bias_groups"] = b["n_groups"]
    return out



def _judged(row: dict) -> Any:
    """A judge row's value for the harm metrics: its score, or "filtered" when the provider refused it."""
    from value_harms.metrics import FILTERED

    return FILTERED if row.get("label") == FILTERED and row.get("score") is None else row.get("score")



def _min_scored_samples(bench) -> int | None:
    """benchmark.min_scored_samples checked against num_samples (None = all samples)."""
    need = getattr(bench, "min_scored_samples", None)
    if need is None:
        return None
    n = int(bench.num_samples)
    if isinstance(need, bool) or not isinstance(need, int) or not 1 <= need <= n:
        raise EvaluationError(f"benchmark.min_scored_samples={need!r}; expected an integer from 1 to "
                              f"benchmark.num_samples={n}, or null for all samples")
    return need
