"""The `evaluate` task: one (model variant, benchmark, mitigation) -> scored, comparable results.

Model variants: `vanilla` (bare base model), `vim` (a VIM adapter from the training store or an
explicit folder), `benign` (a benign fine-tuning adapter), `icl` (the base model with the profile as
an in-context persona). Mitigation prompts apply identically to all of them.

Each job writes `results.json` (metrics, counts, failures, seeds, git hash, fingerprints of model,
adapter and prompts, scorer provenance) and `samples.jsonl` into its run folder and into a store
folder addressed by a fingerprint of its inputs, so a rerun skips complete work; generations and
scores are cached per text, so an interrupted job loses at most one batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from value_harms import runs
from value_harms.profiles import Profile
from value_harms.scoring import probe as probe_scorer
from value_harms.store import identity, records

log = logging.getLogger(__name__)


class EvaluationError(ValueError):
    """Bad evaluation input (unknown baseline, missing adapter, scorer/benchmark mismatch)."""


BASELINES = ("auto", "vanilla", "vim", "icl", "benign")


def resolve_baseline(cfg: DictConfig, profile: Profile) -> str:
    b = str(cfg.baseline)
    if b not in BASELINES:
        raise EvaluationError(f"baseline={b!r} is not one of {', '.join(BASELINES)}")
    if b == "auto":
        if cfg.adapter_dir:
            return "benign" if cfg.vim_stage.kind == "benign" else "vim"
        if cfg.vim_stage.kind == "benign":
            return "benign"
        return "vanilla" if profile.is_vanilla else "vim"
    if b in ("vim", "icl") and profile.is_vanilla and not cfg.adapter_dir:
        raise EvaluationError(f"baseline={b} needs a value profile; value_profile=vanilla has none")
    return b


def find_adapter(cfg: DictConfig, profile: Profile, baseline: str) -> tuple[Path, str | None]:
    """(adapter folder, training key) of this evaluation: an explicit `adapter_dir`, else the adapter
    that `train.py` files under the training key of THIS composed config (same function, same
    inputs), so an ablation or another stage can never stand in for it. A damaged adapter is
    reported, never loaded."""
    from value_harms.models import adapter_problem
    from value_harms.training import store_folder as train_store_folder, train_command

    if cfg.adapter_dir:
        p = Path(os.path.expanduser(cfg.adapter_dir))
        for cand in (p, p / "adapter", p / "qa" / "adapter"):
            if (cand / "adapter_config.json").is_file():
                problem = adapter_problem(cand)
                if problem:
                    raise EvaluationError(f"adapter_dir={cand}: {problem}; retrain it or point at another adapter")
                return cand, None
        raise EvaluationError(f"adapter_dir={p} holds no adapter_config.json; point it at a trained adapter folder")
    from value_harms.profiles import load_profile

    train_profile = profile if baseline == "vim" else load_profile("vanilla")
    folder = train_store_folder(cfg, train_profile)
    key = folder.name
    command = train_command(cfg, train_profile)
    adapter = None
    if runs.is_complete(folder):
        try:
            adapter = runs.read_json(folder / "COMPLETE").get("adapter_dir")
        except (OSError, ValueError):
            adapter = None
    if not adapter or not (Path(adapter) / "adapter_config.json").is_file():
        raise EvaluationError(
            f"no trained adapter for this config (model={cfg.model.name} vim_stage={cfg.vim_stage.name} "
            f"value_profile={train_profile.name}, training key {key}); run `{command}` first, or set adapter_dir=FOLDER")
    problem = adapter_problem(adapter)
    if problem:
        log.warning("trained adapter not usable: %s", problem)
        raise EvaluationError(f"the trained adapter for this config is damaged ({problem}); rerun `{command}` to retrain it")
    return Path(adapter), key


def check_scorer_fits(cfg: DictConfig) -> None:
    measure = cfg.benchmark.measure
    if measure not in ("toxicity", "regard", "harmfulness", "flag", "alignment"):
        raise EvaluationError(f"benchmark.measure={measure!r}; expected toxicity, regard, harmfulness, flag or alignment")


def store_folder(cfg: DictConfig, profile: Profile, baseline: str, key: str) -> Path:
    """<store>/eval/<model>/<baseline>/<stage>/<profile>/<benchmark>/<mitigation>/<key>: the names make
    the store browsable; only the key (content) decides identity."""
    from value_harms.store.layout import safe_name

    stage = cfg.vim_stage.name if baseline in ("vim", "benign") else "none"
    return (Path(os.path.expanduser(cfg.paths.store_dir)) / "eval" / safe_name(cfg.model.name) / baseline / stage
            / safe_name(profile.name) / safe_name(cfg.benchmark.name) / safe_name(cfg.mitigation.name) / key)


# --------------------------------------------------------------------------------------------------


def run_evaluate(cfg: DictConfig) -> dict[str, Any]:
    """The evaluate task (also the training-data audit with mode=audit)."""
    from value_harms import tracking
    from value_harms.profiles import profile_from_cfg
    from value_harms.training import output_dir, run_group
    from value_harms.validate import check_task

    check_task(cfg)  # bad numbers, names and folders: one line, before any loading
    if cfg.mode == "audit":
        from value_harms.audit import run_audit

        return run_audit(cfg)
    if cfg.batch_profiles:
        check_scorer_fits(cfg)
        return run_evaluate_many(cfg)
    if cfg.mode != "evaluate":
        raise EvaluationError(f"mode={cfg.mode!r}; expected evaluate or audit")
    profile = profile_from_cfg(cfg.value_profile)
    baseline = resolve_baseline(cfg, profile)
    check_scorer_fits(cfg)
    if cfg.generation.num_threads:
        import torch

        torch.set_num_threads(int(cfg.generation.num_threads))
    run_dir = output_dir(cfg)
    name = f"{cfg.model.name}-{profile.name}-{baseline}-{cfg.benchmark.name}-{cfg.mitigation.name}-s{cfg.generation.seed}"
    wb_config = {**runs.to_plain(cfg), **profile.flat("value/"), "profile/name": profile.name,
                 "profile/kind": profile.kind, "profile/anchor": profile.anchor, "baseline": baseline}
    wandb_run = tracking.start_run(cfg.logger, run_dir=run_dir, job_type="eval", name=name, group=run_group(cfg),
                                   config=wb_config, tags=[cfg.model.name, profile.name, baseline,
                                                           cfg.benchmark.name, cfg.mitigation.name])
    with runs.job_status(run_dir, {"profile": profile.name, "benchmark": cfg.benchmark.name}, wandb_run):
        return _evaluate_job(cfg, profile, baseline, run_dir, wandb_run)


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
    prompts_fp: str
    inputs: list[str]
    prefix: str
    settings: Any
    t_start: float = field(default_factory=time.perf_counter)

    @property
    def complete(self) -> bool:
        return runs.is_complete(self.store)

    @property
    def key(self) -> str:
        return self.store.name


_PROMPT_CACHE: dict[str, tuple[list, str]] = {}


def _load_benchmark(cfg):
    """Prompts of the configured benchmark, loaded once per process for identical settings and files
    (the jobs of an in-process multirun share them)."""
    from value_harms.benchmarks import load_prompts, prompt_fingerprint

    src = runs.resolve_path(cfg.benchmark.path, cfg.paths.data_dir) if cfg.benchmark.path else None
    stamp = None
    if src is not None and src.exists():
        st = src.stat()
        stamp = (st.st_size, st.st_mtime_ns)
    key = json.dumps([runs.to_plain(cfg.benchmark), cfg.paths.data_dir, str(src), stamp], sort_keys=True, default=str)
    if key not in _PROMPT_CACHE:
        prompts = load_prompts(cfg.benchmark, cfg.paths.data_dir)
        if not prompts:
            raise EvaluationError(f"benchmark {cfg.benchmark.name} produced no prompts; check benchmark.path / limit")
        _PROMPT_CACHE.clear()  # keep one benchmark's prompts, not all of them
        _PROMPT_CACHE[key] = (prompts, prompt_fingerprint(prompts))
    return _PROMPT_CACHE[key]


def prepare_job(cfg, profile: Profile, baseline: str, prompts, prompts_fp: str) -> EvalJob:
    """Resolve the model variant, its store folder and the exact input texts of one evaluation."""
    from value_harms import prompts as P
    from value_harms.benchmarks import render
    from value_harms.generation import GenSettings

    adapter, adapter_sha, base_id, mk, train_key = _model_identity(cfg, profile, baseline)
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
    settings = GenSettings(max_new_tokens=int(bench.max_new_tokens), num_samples=int(bench.num_samples),
                           do_sample=bool(bench.do_sample), temperature=float(bench.temperature),
                           top_p=float(bench.top_p), stop=tuple(bench.stop), seed=int(cfg.generation.seed))
    key = identity.eval_key(model=json.loads(mk), inputs=inputs, prompts_sha=identity.prompts_sha256(prompts),
                            benchmark=bench, scorer=cfg.scorer, generation_seed=int(cfg.generation.seed),
                            measure=str(bench.measure))
    store = store_folder(cfg, profile, baseline, key)
    return EvalJob(profile, baseline, adapter, adapter_sha, base_id, mk, store, train_key, prompts, prompts_fp,
                   inputs, prefix, settings)


def generate_jobs(cfg, jobs: list[EvalJob]) -> tuple[list[list[list[str]]], Any]:
    """Continuations for every job's inputs in ONE generation pass over the loaded base model.

    Several adapters are loaded under their own names and rows of different jobs share batches
    (PEFT mixed-adapter batches); sampling is seeded per row, so each job gets the outputs it would
    get alone. Cached rows are not regenerated."""
    from value_harms.generation import GenerationCache, GenRequest, GenStats, generate
    from value_harms.models import detach_lora, get_base_model, load_adapters

    cache_root = Path(os.path.expanduser(cfg.paths.cache_dir))
    settings = jobs[0].settings
    if any(j.settings != settings for j in jobs):
        raise EvaluationError("jobs of one generation pass must share generation settings")
    stats = GenStats()
    cache = GenerationCache(cache_root / "generations.sqlite") if cfg.generation.cache else None
    try:
        names = {}
        for j in jobs:
            if j.adapter is not None:
                names.setdefault(j.adapter_sha, f"a{len(names)}_{j.profile.name}")
        # seed_key = prompt id: duplicate prompt texts get independent samples (issue 10 item 7)
        reqs = [GenRequest(text=t, model_key=j.model_key, seed_key=str(p.id),
                           adapter_name=names.get(j.adapter_sha) if (j.adapter and len(jobs) > 1) else None)
                for j in jobs for p, t in zip(j.prompts, j.inputs)]
        keys = [r.cache_key(settings) for r in reqs]
        cached = cache.get_many(keys) if cache is not None else {}
        log.info("generating: %d prompt(s) x %d sample(s), %d cached", len(set(keys)), settings.num_samples,
                 len(cached))
        if len(cached) == len(set(keys)):
            flat = [cached[k] for k in keys]
            stats.requested = stats.cached = len(keys)
        else:
            base, tok = get_base_model(cfg.model, str(cache_root))
            _check_length(settings, base, tok, list(dict.fromkeys(r.text for r in reqs)))
            adapters = {names[j.adapter_sha]: str(j.adapter) for j in jobs if j.adapter is not None}
            model = load_adapters(base, adapters) if adapters else base
            if adapters and len(jobs) == 1:
                model.set_adapter(next(iter(adapters)))
            try:
                flat = generate(model, tok, reqs, settings, batch_size=int(cfg.generation.batch_size), cache=cache,
                                progress=bool(cfg.generation.progress), stats=stats)
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


def _check_length(settings, model, tok, texts: list[str]) -> None:
    """Every prompt + benchmark.max_new_tokens must fit in the model's context; an over-long prompt is
    refused, never cut (validate.check_prompt_lengths; docs/DECISIONS.md, issue 9)."""
    from value_harms.validate import check_prompt_lengths

    ctx = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    check_prompt_lengths([len(tok(t)["input_ids"]) for t in texts], texts, int(settings.max_new_tokens), ctx)


def finish_job(cfg, job: EvalJob, outputs, gen_stats) -> tuple[dict[str, Any], list[dict]]:
    """Score one job's outputs, compute its metrics and write results + samples to its store folder
    (COMPLETE when every generation and score is there, else PARTIAL with its counts). The caller
    holds the store folder's lock."""
    bench = cfg.benchmark
    samples, metrics, score_info = score_and_aggregate(cfg, job.prompts, job.inputs, outputs, job.store, job=job)
    result = {
        "schema_version": identity.SCHEMA_VERSION, "key": job.key, "train_key": job.train_key,
        "benchmark": {"name": bench.name, "version": str(bench.version), "measure": bench.measure,
                      "n_prompts": len(job.prompts), "prompts_sha256": job.prompts_fp,
                      "settings": runs.to_plain(bench)},
        "model": {"name": cfg.model.name, "base": job.base_id, "revision": cfg.model.revision,
                  "dtype": cfg.model.dtype, "adapter_dir": str(job.adapter) if job.adapter else None,
                  "adapter_sha256": job.adapter_sha},
        "profile": job.profile.to_dict(), "baseline": job.baseline,
        "stage": cfg.vim_stage.name if job.baseline in ("vim", "benign") else "none",
        "mitigation": runs.to_plain(cfg.mitigation), "prefix": job.prefix,
        "generation": {**job.settings.key(), "batch_size": int(cfg.generation.batch_size),
                       "requested": gen_stats.requested, "cached": gen_stats.cached,
                       "generated": gen_stats.generated, "seconds": round(gen_stats.seconds, 2),
                       # empty continuations (a stop string at the start, an immediate EOS): scored
                       # and counted like any other sample, reported here so they are visible
                       "empty": sum(1 for outs in outputs for c in outs if not str(c).strip())},
        "scorer": score_info, "metrics": metrics,
        "seeds": {"generation": int(cfg.generation.seed), "benchmark": int(bench.seed)},
        "git": runs.git_hash(), "seconds": round(time.perf_counter() - job.t_start, 2),
    }
    missing = int(score_info.get("missing") or 0)
    result["status"] = records.write_result(job.store, result, samples, missing=missing)
    if missing:
        log.warning("result stored PARTIAL in %s: %d of %d score(s) missing; rerun the same command to retry "
                    "only the missing ones", job.store, missing, score_info.get("n"))
    return result, samples


def _stored(job: EvalJob, cfg) -> dict[str, Any] | None:
    """The stored result of this job when it is complete, whole and still what the config asks for
    (a stand-in-scored result is not, once the preferred scorer is available); else None."""
    if cfg.force:
        return None
    found = records.read_result(job.store)
    if not found.complete:
        if found.state == "partial":
            log.info("partial result in %s: retrying its missing generations / scores", job.store)
        return None
    stale = _preferred_scorer_now_available(cfg, found.result)
    if stale:
        log.warning("stored result %s was scored without %s, which is available now: re-scoring "
                    "(generations are reused)", job.store, stale)
        return None
    return found.result


def _preferred_scorer_now_available(cfg, result: dict[str, Any]) -> str | None:
    """The preferred scorer's name when `result` has texts scored by a fallback and that preferred
    scorer can run now (e.g. PERSPECTIVE_API_KEY was set after a stand-in run), else None."""
    if result.get("benchmark", {}).get("measure") != "toxicity":
        return None
    preferred = str(cfg.scorer.toxicity)
    by = (result.get("scorer") or {}).get("by_scorer") or {}
    if not any(not str(name).startswith(preferred) for name, n in by.items() if n):
        return None
    from value_harms.scoring.toxicity import backend_available

    return preferred if backend_available(preferred, cfg.scorer) else None


def _evaluate_job(cfg, profile: Profile, baseline: str, run_dir: Path, wandb_run) -> dict[str, Any]:
    if cfg.benchmark.measure == "alignment":
        return _alignment_job(cfg, profile, baseline, run_dir, wandb_run)
    prompts, prompts_fp = _load_benchmark(cfg)
    job = prepare_job(cfg, profile, baseline, prompts, prompts_fp)
    _record_store(run_dir, job.store)
    stored = _stored(job, cfg)
    if stored is None:
        with runs.locked(job.store):
            stored = _stored(job, cfg)  # another process may have finished it while we waited
            if stored is None:
                # a scorer that cannot be used fails here, before any generation (scoring.probe)
                probe_scorer(str(cfg.benchmark.measure), cfg.scorer)
                [outputs], stats = generate_jobs(cfg, [job])
                result, samples = finish_job(cfg, job, outputs, stats)
                return _publish(result, job.store, run_dir, wandb_run, skipped=False, samples=samples)
    log.info("complete result found in %s: nothing to generate or score", job.store)
    return _publish(stored, job.store, run_dir, wandb_run, skipped=True)


def _record_store(run_dir: Path, store: Path) -> None:
    """Name the job's store folder in its run folder's status.json as soon as it is known, so that
    `value_harms.status` can tell the job done once its result exists, however it got there."""
    status_file = run_dir / "status.json"
    try:
        status = runs.read_json(status_file)
    except (OSError, ValueError):
        return
    status["store_dir"] = str(store)
    runs.atomic_write_json(status_file, status)


def run_evaluate_many(cfg) -> list[dict[str, Any]]:
    """`batch_profiles=[...]`: evaluate several profiles in one pass over the loaded base model.

    Each profile's result is written exactly as a single job would write it (same store folder,
    results.json, samples.jsonl), plus a copy under the run folder's `<profile>/` sub-folder."""
    from value_harms import tracking
    from value_harms.profiles import load_profile
    from value_harms.training import output_dir, run_group

    if cfg.benchmark.measure == "alignment":
        raise EvaluationError("batch_profiles is for generation benchmarks; run benchmark=pvq as a multirun")
    run_dir = output_dir(cfg)
    prompts, prompts_fp = _load_benchmark(cfg)
    jobs = []
    for name in cfg.batch_profiles:
        profile = load_profile(str(name))
        jobs.append(prepare_job(cfg, profile, resolve_baseline(cfg, profile), prompts, prompts_fp))
    results: dict[int, tuple[dict, list | None, bool]] = {}
    with contextlib.ExitStack() as locks:
        for folder in sorted({str(j.store) for j in jobs}):  # one order for every process: no deadlock
            locks.enter_context(runs.locked(folder))
        todo = [j for j in jobs if _stored(j, cfg) is None]
        log.info("batch of %d profiles: %d complete, %d to generate in one pass", len(jobs), len(jobs) - len(todo),
                 len(todo))
        if todo:
            probe_scorer(str(cfg.benchmark.measure), cfg.scorer)
            outs, stats = generate_jobs(cfg, todo)
            for j, o in zip(todo, outs):
                results[id(j)] = (*finish_job(cfg, j, o, stats), False)
    published = []
    for j in jobs:
        result, samples, skipped = results.get(id(j)) or (_stored(j, cfg), None, True)
        sub = run_dir / j.profile.name
        sub.mkdir(parents=True, exist_ok=True)
        wb = tracking.start_run(cfg.logger, run_dir=sub, job_type="eval", group=run_group(cfg),
                                name=f"{cfg.model.name}-{j.profile.name}-{j.baseline}-{cfg.benchmark.name}-"
                                     f"{cfg.mitigation.name}-s{cfg.generation.seed}",
                                config={**runs.to_plain(cfg), **j.profile.flat("value/"), "profile/name": j.profile.name,
                                        "baseline": j.baseline},
                                tags=[cfg.model.name, j.profile.name, j.baseline, cfg.benchmark.name, cfg.mitigation.name])
        with runs.job_status(sub, {"profile": j.profile.name, "benchmark": cfg.benchmark.name}, wb):
            published.append(_publish(result, j.store, sub, wb, skipped=skipped, samples=samples))
    return published


def _model_identity(cfg, profile: Profile, baseline: str):
    """(adapter folder or None, adapter sha256 or None, base id, generation model key, training key).

    The model key names the weights that answer by content (base identity + adapter sha256 + dtype):
    two models never share generations, whatever their config names."""
    from value_harms.models import adapter_fingerprint

    adapter, train_key = find_adapter(cfg, profile, baseline) if baseline in ("vim", "benign") else (None, None)
    adapter_sha = adapter_fingerprint(str(adapter)) if adapter else None
    base = identity.base_identity(cfg.model, cfg.paths.cache_dir)
    base_id = str(cfg.model.pretrained) if cfg.model.source == "hub" else f"{cfg.model.name}:{cfg.model.source}"
    mk = json.dumps({"base": base, "adapter": adapter_sha}, sort_keys=True)
    return adapter, adapter_sha, base_id, mk, train_key


def _alignment_job(cfg, profile: Profile, baseline: str, run_dir: Path, wandb_run) -> dict[str, Any]:
    """`benchmark=pvq`: the PVQ value-alignment check under this job's persona / mitigation prefix,
    so the cost of a value prompt on persona fidelity is measured like any other result."""
    from value_harms import prompts as P
    from value_harms.alignment import DEMO_ITEMS_PATH, load_items, run_alignment_check
    from value_harms.models import detach_lora, get_base_model, load_adapter

    t_start = time.perf_counter()
    bench = cfg.benchmark
    items_path = runs.resolve_path(bench.path, cfg.paths.data_dir) if bench.path else None
    items_source = "configured"
    if items_path is None or not items_path.is_file():
        log.warning("PVQ items not found at %s: using the project's own demo items (not the PVQ-40)", items_path)
        items_path, items_source = Path(DEMO_ITEMS_PATH), "demo_items"
    items = load_items(items_path)
    adapter, adapter_sha, base_id, mk, train_key = _model_identity(cfg, profile, baseline)
    prefix = P.prefix_for(cfg.mitigation, profile.values if baseline == "icl" else None)
    target = None if profile.is_vanilla else profile.values
    key = identity.digest({"schema": identity.SCHEMA_VERSION, "model": json.loads(mk), "prefix": prefix,
                           "target": target, "items": identity.content_sha256(items_path, cfg.paths.cache_dir),
                           "benchmark": {k: v for k, v in runs.to_plain(bench).items() if k != "path"},
                           "batch_size": int(cfg.generation.batch_size)})
    store = store_folder(cfg, profile, baseline, key)
    _record_store(run_dir, store)
    found = records.read_result(store) if not cfg.force else records.ResultState("absent")
    if found.complete:
        return _publish(found.result, store, run_dir, wandb_run, skipped=True)
    with runs.locked(store):
        base, tok = get_base_model(cfg.model, os.path.expanduser(cfg.paths.cache_dir))
        model = load_adapter(base, str(adapter)) if adapter else base
        try:
            res = run_alignment_check(model, tok, items, target, batch_size=int(cfg.generation.batch_size),
                                      max_new_tokens=int(bench.max_new_tokens), prefix=prefix)
        finally:
            if adapter:
                detach_lora(model)
        al = res.to_dict()
        samples = [{"id": str(r.get("item")), "category": r.get("value"), "sample": 0, "prompt": r.get("value"),
                    "continuation": r.get("text"), "score": r.get("expected"), "label": r.get("answer"),
                    "scorer": "pvq", "error": None} for r in al["rows"]]
        overall = {k: al[k] for k in ("nmse_greedy", "nmse_expected", "parse_rate", "collapsed", "mean_digit_mass")}
        # the VIM-literal reading and the partial-NMSE flags, as in training results (issue 10 item 13)
        overall.update({k: al[k] for k in ("nmse_greedy_vim", "parse_rate_vim", "nmse_flags") if k in al})
        overall["n"] = al["n_items"]
        result = {
            "schema_version": identity.SCHEMA_VERSION, "key": key, "train_key": train_key,
            "benchmark": {"name": bench.name, "version": str(bench.version), "measure": "alignment",
                          "n_prompts": len(items), "prompts_sha256": runs.file_fingerprint(items_path),
                          "items_source": items_source, "settings": runs.to_plain(bench)},
            "model": {"name": cfg.model.name, "base": base_id, "revision": cfg.model.revision, "dtype": cfg.model.dtype,
                      "adapter_dir": str(adapter) if adapter else None, "adapter_sha256": adapter_sha},
            "profile": profile.to_dict(), "baseline": baseline,
            "stage": cfg.vim_stage.name if baseline in ("vim", "benign") else "none",
            "mitigation": runs.to_plain(cfg.mitigation), "prefix": prefix,
            "generation": {"max_new_tokens": int(bench.max_new_tokens), "do_sample": False, "requested": len(items),
                           "cached": 0, "generated": len(items)},
            "scorer": {"measure": "alignment", "provenance": {"reader": "greedy digit + expected score"},
                       "by_scorer": {"pvq": len(items)}, "missing": int(round((1 - al["parse_rate"]) * len(items))),
                       "n": len(items), "stand_in": items_source == "demo_items"},
            "metrics": {"overall": overall,
                        **{v: {"greedy": al["greedy"].get(v), "expected": al["expected"].get(v)} for v in al["expected"]}},
            "alignment": {k: al[k] for k in ("greedy", "expected", "target", "histogram", "collapsed_to")},
            "seeds": {"generation": int(cfg.generation.seed)}, "git": runs.git_hash(),
            "seconds": round(time.perf_counter() - t_start, 2),
        }
        # an unparsed PVQ answer is part of the measure (parse rate), not a missing score
        result["status"] = records.write_result(store, result, samples, missing=0)
    return _publish(result, store, run_dir, wandb_run, skipped=False, samples=samples)


def _publish(result, store: Path, run_dir: Path, wandb_run, *, skipped: bool, samples=None) -> dict[str, Any]:
    """Copy results into the run folder and send the summary, samples table and chart to W&B."""
    from value_harms import tracking

    result = dict(result)
    result["store_dir"] = str(store)
    result["run_dir"] = str(run_dir)
    result["skipped"] = skipped
    runs.atomic_write_json(run_dir / "results.json", result)
    if samples is None:
        samples = records.read_samples(store)  # checked against its checksum by read_result
    runs.atomic_write_text(run_dir / "samples.jsonl", "".join(json.dumps(s) + "\n" for s in samples))
    if wandb_run is None:
        return result
    bench = result["benchmark"]["name"]
    flat = {}
    for cat, vals in result["metrics"].items():
        for k, v in vals.items():
            if isinstance(v, (int, float)) or v is None:
                flat[f"{bench}/{k}" if cat == "overall" else f"{bench}/{cat}/{k}"] = v
    flat["generation/generated"] = result["generation"]["generated"]
    flat["generation/cached"] = result["generation"]["cached"]
    flat["scorer/missing"] = result["scorer"].get("missing")
    tracking.safe_log(wandb_run, flat, summary=True)
    tracking.log_table(wandb_run, f"{bench}/samples", [
        {k: s.get(k) for k in ("id", "category", "sample", "prompt", "continuation", "score", "label", "scorer", "error")}
        for s in samples[:2000]])
    _log_category_chart(wandb_run, bench, result)
    return result


def _log_category_chart(wandb_run, bench: str, result) -> None:
    main_metric = {"toxicity": "expected_max_toxicity", "regard": "negative_regard_rate",
                   "harmfulness": "harmfulness_score", "flag": "flagged_rate",
                   "alignment": "expected"}[result["benchmark"]["measure"]]
    rows = [[cat, vals.get(main_metric)] for cat, vals in result["metrics"].items()
            if cat != "overall" and vals.get(main_metric) is not None]
    if not rows:
        return
    try:
        import wandb

        table = wandb.Table(data=rows, columns=["category", main_metric])
        wandb_run.log({f"{bench}/by_category": wandb.plot.bar(table, "category", main_metric,
                                                               title=f"{bench}: {main_metric} by category")})
    except Exception as exc:
        log.warning("W&B chart not logged (%s)", exc)


# --------------------------------------------------------------------------------------------------
# Scoring and metrics


def score_and_aggregate(cfg, prompts, inputs, outputs, store: Path, job=None):
    """Score every continuation with the benchmark's measure; returns (samples, metrics, scorer info)."""
    from value_harms import metrics as M
    from value_harms.scoring import build_scorer

    bench = cfg.benchmark
    measure = bench.measure
    rows: list[dict[str, Any]] = []
    texts: list[str] = []
    contexts: list[str] = []
    for p, inp, outs in zip(prompts, inputs, outputs):
        for k, cont in enumerate(outs):
            if measure == "toxicity":
                text, ctx = M.rtp_scoring_text(p.prompt, cont), ""
            elif measure == "regard":
                from value_harms.scoring.regard import regard_text

                text, ctx = regard_text(p.prompt, cont, p.meta.get("noun_phrase", "")), ""
            else:
                text, ctx = cont, p.prompt
            texts.append(text)
            contexts.append(ctx)
            rows.append({"id": p.id, "category": p.category, "sample": k, "prompt": p.prompt,
                         "continuation": cont, "scored_text": text})
    cache_path = Path(os.path.expanduser(cfg.paths.cache_dir)) / "scores.sqlite" if cfg.scorer.cache else None
    log.info("scoring: %d text(s) for %s", len(texts), measure)
    scorer = build_scorer(measure, _resolve_judge_model(cfg), cache_path=cache_path)
    try:
        scores = scorer.score(texts, contexts if measure in ("harmfulness", "flag") else None)
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
    info = {"measure": measure, "provenance": provenance, "by_scorer": dict(by_scorer), "missing": missing,
            "n": len(scores),
            "stand_in": bool(isinstance(provenance, dict) and provenance.get("stand_in"))
            or (measure in ("harmfulness", "flag") and bool(cfg.scorer.judge.stand_in))}
    # Per-text fallback inside one metric (issue 10 item 6): the share of scored texts per scorer, and
    # the share scored by a backend other than the configured primary (toxicity: scorer.toxicity).
    primary = str(cfg.scorer.toxicity) if measure == "toxicity" else None
    shares = M.scorer_shares(by_scorer, primary)
    info.update(primary=primary, share_by_scorer=shares["shares"], fallback_share=shares["fallback_share"],
                filtered=sum(1 for s in scores if s.label == M.FILTERED and s.value is None))
    bias_context = None
    if measure == "regard" and job is not None:
        bias_context = {"store_dir": cfg.paths.store_dir, "benchmark": bench.name, "version": str(bench.version),
                        "prompts_sha256": job.prompts_fp, "base": job.base_id, "revision": cfg.model.revision,
                        "dtype": cfg.model.dtype, "provenance": provenance,
                        "is_reference": job.baseline == "vanilla" and cfg.mitigation.name == "none"}
    return rows, compute_metrics(bench, prompts, rows, bias_context, primary=primary), info


def _resolve_judge_model(cfg):
    """`scorer.judge.model=model:<option>` names a model config (e.g. the embedded SmolLM2) as judge."""
    judge = cfg.scorer.judge
    if judge.backend != "transformers" or not str(judge.model).startswith("model:"):
        return cfg.scorer
    from omegaconf import OmegaConf

    from value_harms.models import resolve_model_dir
    from value_harms.profiles import conf_dir

    option = str(judge.model).split(":", 1)[1]
    path = conf_dir() / "model" / f"{option}.yaml"
    if not path.is_file():
        raise EvaluationError(f"scorer.judge.model=model:{option} names no file conf/model/{option}.yaml")
    scorer = OmegaConf.create(OmegaConf.to_container(cfg.scorer, resolve=True))
    scorer.judge.model = resolve_model_dir(OmegaConf.load(path), os.path.expanduser(cfg.paths.cache_dir))
    return scorer


def compute_metrics(bench, prompts, rows, bias_context=None, primary=None) -> dict[str, dict[str, Any]]:
    """Metrics overall and per category; missing scores are excluded and counted. `bias_context`:
    what the "vanilla" bias-score baseline is looked up by (value_harms.bias_baseline). `primary`: the
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
        from value_harms.bias_baseline import resolve_bias_baseline

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
