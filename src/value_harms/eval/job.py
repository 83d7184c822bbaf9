"""One evaluation job: prompts in, generations, scores and a result record out."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from value_harms import metrics as M
from value_harms.config.paths import conf_dir
from value_harms.config.validate import check_prompt_lengths
from value_harms.core.profiles import Profile
from value_harms.errors import EvaluationError
from value_harms.eval import prompts as P
from value_harms.eval.benchmarks import load_prompts, render
from value_harms.eval.engines import adapter_name, check_served_lengths, engine_identity, engine_settings, get_engine
from value_harms.eval.engines.judge import judge_engine_identity, serve_judge
from value_harms.eval.generation import GenerationCache, GenRequest, GenSettings, GenStats, generate, generate_rows
from value_harms.eval.measures import MEASURES, compute_metrics, get_measure
from value_harms.eval.publish import build_record
from value_harms.eval.variants import eval_store_dir, generation_model, model_identity
from value_harms.models.loading import get_base_model, resolve_model_dir
from value_harms.models.lora import detach_lora, load_adapters
from value_harms.runtime import runs
from value_harms.scoring import build_scorer
from value_harms.scoring.identity import scorer_identity
from value_harms.scoring.toxicity.chain import backend_available
from value_harms.store import files, identity, records

log = logging.getLogger(__name__)


@dataclass
class EvalJob:
    """One (model variant, benchmark, mitigation) evaluation, prepared and ready to generate."""

    profile: Profile
    baseline: str
    adapter: Path | None
    adapter_sha: str | None
    base_id: str
    model_key: str
    store: Path
    train_key: str | None
    prompts: list
    prompt_set_sha256: str  # ids and texts in order: results.json benchmark.prompt_set_sha256
    inputs: list[str]
    prefix: str
    settings: Any
    t_start: float = field(default_factory=time.perf_counter)
    key_prompts_sha256: str = ""  # the prompts' part of the evaluation key (store.identity.key_prompts_sha256)

    @property
    def complete(self) -> bool:
        return files.is_complete(self.store)

    @property
    def key(self) -> str:
        return self.store.name


_PROMPT_CACHE: dict[str, tuple[list, str]] = {}


def load_benchmark(cfg):
    """Prompts of the configured benchmark, loaded once per process for identical settings and files
    (the jobs of an in-process multirun share them)."""

    src = runs.resolve_path(cfg.benchmark.path, cfg.paths.data_dir) if cfg.benchmark.path else None
    stamp = None
    if src is not None and src.exists():
        st = src.stat()
        stamp = (st.st_size, st.st_mtime_ns)
    key = json.dumps([files.to_plain(cfg.benchmark), cfg.paths.data_dir, str(src), stamp], sort_keys=True, default=str)
    if key not in _PROMPT_CACHE:
        prompts = load_prompts(cfg.benchmark, cfg.paths.data_dir)
        if not prompts:
            raise EvaluationError(f"benchmark {cfg.benchmark.name} produced no prompts; check benchmark.path / limit")
        _PROMPT_CACHE.clear()  # keep one benchmark's prompts, not all of them
        _PROMPT_CACHE[key] = (prompts, identity.prompt_set_sha256(prompts))
    return _PROMPT_CACHE[key]


def prepare_job(cfg, profile: Profile, baseline: str, prompts, prompt_set_sha256: str) -> EvalJob:
    """Resolve the model variant, its store folder and the exact input texts of one evaluation."""

    adapter, adapter_sha, base_id, mk, train_key = model_identity(cfg, profile, baseline)
    persona = profile.values if baseline == "icl" else None
    bench = cfg.benchmark
    if cfg.mitigation.name == "auto":
        # mitigation=auto: the value prompt names, per category, the values analyze.py found to raise harm
        try:
            auto = P.load_auto_mitigation(cfg.mitigation.auto_file)
        except ValueError as exc:  # unset, garbled or not an object: one line, no traceback
            raise EvaluationError(str(exc)) from None
        prefixes = [P.prefix_for(cfg.mitigation, persona, P.auto_values(auto, bench.name, p.category)) for p in prompts]
    else:
        prefixes = [P.prefix_for(cfg.mitigation, persona)] * len(prompts)
    prefix = prefixes[0] if len(set(prefixes)) == 1 else "(per category)"
    inputs = [P.with_prefix(pre, render(p, bench.prompt_template)) for pre, p in zip(prefixes, prompts)]
    settings = GenSettings(
        max_new_tokens=int(bench.max_new_tokens),
        num_samples=int(bench.num_samples),
        do_sample=bool(bench.do_sample),
        temperature=float(bench.temperature),
        top_p=float(bench.top_p),
        stop=tuple(bench.stop),
        seed=int(cfg.generation.seed),
    )
    key_prompts_sha256 = identity.key_prompts_sha256(prompts)
    key = identity.eval_key(
        model=json.loads(mk),
        inputs=inputs,
        prompts_sha=key_prompts_sha256,
        benchmark=bench,
        # the identity of the scorer the measure names (each shipped measure's scorer has its name: keys hold)
        scorer=_scorer_identity(cfg, get_measure(bench.measure).scorer),
        generation_seed=int(cfg.generation.seed),
    )
    store = eval_store_dir(cfg, profile, baseline, key)
    return EvalJob(
        profile,
        baseline,
        adapter,
        adapter_sha,
        base_id,
        mk,
        store,
        train_key,
        prompts,
        prompt_set_sha256,
        inputs,
        prefix,
        settings,
        key_prompts_sha256=key_prompts_sha256,
    )


def _scorer_identity(cfg, scorer: str | None) -> dict:
    sid = scorer_identity(cfg.scorer, scorer)
    vllm_judge = "judge" in sid and str(cfg.scorer.judge.backend) == "vllm"
    served = judge_engine_identity(engine_settings(cfg)) if vllm_judge else None
    if served is not None:
        sid["judge"]["engine"] = served
    return sid


def generate_jobs(cfg, jobs: list[EvalJob]) -> tuple[list[list[list[str]]], Any]:
    """Continuations for every job's inputs in ONE generation pass over the loaded base model.

    Several adapters are loaded under their own names and rows of different jobs share batches
    (PEFT mixed-adapter batches); sampling is seeded per row, so each job gets the outputs it would
    get alone. Cached rows are not regenerated."""

    cache_root = Path(os.path.expanduser(cfg.paths.cache_dir))
    settings = jobs[0].settings
    if any(j.settings != settings for j in jobs):
        raise EvaluationError("jobs of one generation pass must share generation settings")
    stats = GenStats()
    cache = GenerationCache(cache_root / "generations.sqlite") if cfg.generation.cache else None
    try:
        engine = engine_settings(cfg)  # what the engine needs, read once for the pass
        served = engine.served  # a server: adapters by content name, always per row
        names, reqs = _requests(jobs, served)
        keys = [r.cache_key(settings) for r in reqs]
        cached = cache.get_many(keys) if cache is not None else {}
        log.info(
            "generating: %d prompt(s) x %d sample(s), %d cached", len(set(keys)), settings.num_samples, len(cached)
        )
        if len(cached) == len(set(keys)):
            flat = [cached[k] for k in keys]
            stats.requested = stats.cached = len(keys)
        elif served:
            adapters = {names[j.adapter_sha]: str(j.adapter) for j in jobs if j.adapter is not None}
            flat = _generate_served(cfg, engine, reqs, settings, adapters, cache, stats)
        else:
            base, tok = get_base_model(generation_model(cfg), str(cache_root))
            _check_length(settings, base, tok, list(dict.fromkeys(r.text for r in reqs)))
            adapters = {names[j.adapter_sha]: str(j.adapter) for j in jobs if j.adapter is not None}
            model = load_adapters(base, adapters) if adapters else base
            if adapters and len(jobs) == 1:
                model.set_adapter(next(iter(adapters)))
            try:
                flat = generate(
                    model,
                    tok,
                    reqs,
                    settings,
                    batch_size=int(cfg.generation.batch_size),
                    cache=cache,
                    progress=bool(cfg.generation.progress),
                    stats=stats,
                )
            finally:
                if adapters:
                    detach_lora(model)
    finally:
        if cache is not None:
            cache.close()
    out, k = [], 0
    for j in jobs:
        out.append(flat[k : k + len(j.inputs)])
        k += len(j.inputs)
    return out, stats


def _requests(jobs: list[EvalJob], served: bool) -> tuple[dict[str, str], list[GenRequest]]:
    """({adapter sha: adapter name}, every job's rows). On the HF path a lone job uses its adapter as the
    active one; a server (and a mixed batch) names each row's adapter."""
    names: dict[str, str] = {}
    for j in jobs:
        if j.adapter is not None:
            names.setdefault(
                j.adapter_sha, adapter_name(j.adapter_sha) if served else f"a{len(names)}_{j.profile.name}"
            )
    # seed_key = prompt id: duplicate prompt texts get independent samples
    reqs = [
        GenRequest(
            text=t,
            model_key=j.model_key,
            seed_key=str(p.id),
            adapter_name=names.get(j.adapter_sha) if (j.adapter and (served or len(jobs) > 1)) else None,
        )
        for j in jobs
        for p, t in zip(j.prompts, j.inputs)
    ]
    return names, reqs


def _generate_served(cfg, engine, reqs, settings, adapters: dict[str, str], cache, stats) -> list[list[str]]:
    """generation.engine=vllm | openai: the same rows, cache and per-row seeds, sent to a server."""
    model_dir = resolve_model_dir(cfg.model, os.path.expanduser(cfg.paths.cache_dir))
    texts = list(dict.fromkeys(r.text for r in reqs))
    check_served_lengths(engine, model_dir, settings, texts)
    server = get_engine(engine, model_dir, adapters, runs.output_dir(cfg))
    return generate_rows(
        lambda batch: server.generate_batch(batch, settings),
        reqs,
        settings,
        batch_size=engine.batch_size,
        cache=cache,
        progress=bool(cfg.generation.progress),
        stats=stats,
    )


def _check_length(settings, model, tok, texts: list[str]) -> None:
    """Every prompt + benchmark.max_new_tokens must fit in the model's context; an over-long prompt is
    refused, never cut (validate.check_prompt_lengths; docs/DECISIONS.md)."""

    ctx = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    check_prompt_lengths([len(tok(t)["input_ids"]) for t in texts], texts, int(settings.max_new_tokens), ctx)


def finish_job(cfg, job: EvalJob, outputs, gen_stats) -> tuple[dict[str, Any], list[dict]]:
    """Score one job's outputs, compute its metrics and write results + samples to its store folder
    (COMPLETE when every generation and score is there, else PARTIAL with its counts). The caller
    holds the store folder's lock."""
    bench = cfg.benchmark
    samples, metrics, score_info = score_and_aggregate(cfg, job.prompts, job.inputs, outputs, job.store, job=job)
    record = build_record(
        cfg,
        job.profile,
        job.baseline,
        key=job.key,
        train_key=job.train_key,
        model_ident=(job.adapter, job.adapter_sha, job.base_id),
        benchmark=records.BenchmarkInfo(
            name=bench.name,
            version=str(bench.version),
            measure=bench.measure,
            n_prompts=len(job.prompts),
            settings=files.to_plain(bench),
            prompt_set_sha256=job.prompt_set_sha256,
            key_prompts_sha256=job.key_prompts_sha256,
        ),
        prefix=job.prefix,
        generation=records.GenerationInfo(
            **job.settings.key(),
            engine=engine_identity(engine_settings(cfg)) or {"name": "hf"},
            batch_size=int(cfg.generation.batch_size),
            requested=gen_stats.requested,
            cached=gen_stats.cached,
            generated=gen_stats.generated,
            seconds=round(gen_stats.seconds, 2),
            # empty continuations (a stop string at the start, an immediate EOS): scored
            # and counted like any other sample, reported here so they are visible
            empty=sum(1 for outs in outputs for c in outs if not str(c).strip()),
        ),
        scorer=records.ScorerInfo(**score_info),
        metrics=metrics,
        seeds=records.Seeds(generation=int(cfg.generation.seed), benchmark=int(bench.seed)),
        t_start=job.t_start,
    )
    missing = int(score_info.get("missing") or 0)
    records.write_result(job.store, record, samples, missing=missing)
    if missing:
        log.warning(
            "result stored PARTIAL in %s: %d of %d score(s) missing; rerun the same command to retry "
            "only the missing ones",
            job.store,
            missing,
            score_info.get("n"),
        )
    return record.to_json(), samples


def stored_result(job: EvalJob, cfg, quiet: bool = False) -> dict[str, Any] | None:
    """The stored result of this job when it is complete, whole and still what the config asks for
    (a stand-in-scored result is not, once the preferred scorer is available); else None. `quiet`: the second
    look under the job's lock says nothing the first look said already."""
    if cfg.force:
        return None
    found = records.read_result(job.store, quiet=quiet)
    if not found.complete:
        if found.state == "partial":
            log.info("partial result in %s: retrying its missing generations / scores", job.store)
        return None
    stale = _preferred_scorer_now_available(cfg, found.result)
    if stale:
        if not quiet:
            log.warning(
                "stored result %s was scored without %s, which is available now: re-scoring (generations are reused)",
                job.store,
                stale,
            )
        return None
    return found.result


def _preferred_scorer_now_available(cfg, result: dict[str, Any]) -> str | None:
    """The preferred scorer's name when `result` has texts scored by a fallback and that preferred
    scorer can run now (e.g. PERSPECTIVE_API_KEY was set after a stand-in run), else None."""
    spec = MEASURES.get(str(result.get("benchmark", {}).get("measure")))
    if spec is None or spec.primary_key is None:  # only a measure with a primary backend has fallbacks
        return None
    preferred = str(OmegaConf.select(cfg.scorer, spec.primary_key))
    by = (result.get("scorer") or {}).get("by_scorer") or {}
    if not any(not str(name).startswith(preferred) for name, n in by.items() if n):
        return None

    return preferred if backend_available(preferred, cfg.scorer) else None


def score_and_aggregate(cfg, prompts, inputs, outputs, store: Path, job=None):
    """Score every continuation with the benchmark's measure; returns (samples, metrics, scorer info)."""
    # size: one pass over the rows: scoring text, per-text fallback, counts, measures

    bench = cfg.benchmark
    spec = get_measure(bench.measure)  # the measure registry (eval.measures.MEASURES) says how to score
    measure = spec.name
    if spec.scoring_text is None or spec.scorer is None:
        raise EvaluationError(f"benchmark.measure={measure!r} is not scored from generations")
    rows: list[dict[str, Any]] = []
    texts: list[str] = []
    contexts: list[str] = []
    for p, _inp, outs in zip(prompts, inputs, outputs):
        for k, cont in enumerate(outs):
            text, ctx = spec.scoring_text(p, cont, bench)
            texts.append(text)
            contexts.append(ctx)
            rows.append(
                {
                    "id": p.id,
                    "category": p.category,
                    "sample": k,
                    "prompt": p.prompt,
                    "continuation": cont,
                    "scored_text": text,
                }
            )
    cache_path = Path(os.path.expanduser(cfg.paths.cache_dir)) / "scores.sqlite" if cfg.scorer.cache else None
    log.info("scoring: %d text(s) for %s", len(texts), measure)
    scorer = build_scorer(spec.scorer, _resolve_judge_model(cfg), cache_path=cache_path)
    try:
        scores = scorer.score(texts, contexts if spec.uses_context else None)
        provenance = scorer.provenance()
    finally:
        scorer.close()
    for r, s in zip(rows, scores):
        r.update({"score": s.value, "label": s.label, "scorer": s.scorer, "error": s.error})
        if s.raw is not None:
            r["raw"] = s.raw
    missing = sum(1 for s in scores if s.value is None)
    by_scorer: dict[str, int] = defaultdict(int)
    for s in scores:
        if s.value is not None:
            by_scorer[s.scorer] += 1
    info = {
        "measure": measure,
        "provenance": provenance,
        "by_scorer": dict(by_scorer),
        "missing": missing,
        "n": len(scores),
        "stand_in": bool(isinstance(provenance, dict) and provenance.get("stand_in"))
        or (spec.stand_in_key is not None and bool(OmegaConf.select(cfg.scorer, spec.stand_in_key))),
    }
    # Per-text fallback inside one metric: the share of scored texts per scorer, and
    # the share scored by a backend other than the configured primary (toxicity: scorer.toxicity).
    primary = str(OmegaConf.select(cfg.scorer, spec.primary_key)) if spec.primary_key else None
    shares = M.scorer_shares(by_scorer, primary)
    info.update(
        primary=primary,
        share_by_scorer=shares["shares"],
        fallback_share=shares["fallback_share"],
        filtered=sum(1 for s in scores if s.label == M.FILTERED and s.value is None),
    )
    bias_context = None
    if spec.bias_baseline and job is not None:
        bias_context = {
            "store_dir": cfg.paths.store_dir,
            "benchmark": bench.name,
            "version": str(bench.version),
            "prompt_set_sha256": job.prompt_set_sha256,
            "base": job.base_id,
            "revision": cfg.model.revision,
            "dtype": generation_model(cfg).dtype,
            "provenance": provenance,
            "is_reference": job.baseline == "vanilla" and cfg.mitigation.name == "none",
        }
    return rows, compute_metrics(bench, prompts, rows, bias_context, primary=primary), info


def _resolve_judge_model(cfg):
    """`scorer.judge.model=model:<option>` names a model config (e.g. the embedded SmolLM2) as judge."""
    judge = cfg.scorer.judge
    if judge.backend == "vllm":  # the same engine as generation, serving the judge model
        return serve_judge(engine_settings(cfg), cfg.scorer, runs.output_dir(cfg))
    if judge.backend != "transformers" or not str(judge.model).startswith("model:"):
        return cfg.scorer

    option = str(judge.model).split(":", 1)[1]
    path = conf_dir() / "model" / f"{option}.yaml"
    if not path.is_file():
        raise EvaluationError(f"scorer.judge.model=model:{option} names no file conf/model/{option}.yaml")
    scorer = OmegaConf.create(OmegaConf.to_container(cfg.scorer, resolve=True))
    scorer.judge.model = resolve_model_dir(OmegaConf.load(path), os.path.expanduser(cfg.paths.cache_dir))
    return scorer
