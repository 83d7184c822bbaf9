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


def find_adapter(cfg: DictConfig, profile: Profile, baseline: str) -> Path:
    """The adapter of (model, stage, profile): an explicit folder, else the newest complete store entry.
    A damaged adapter (truncated weights) is reported, never loaded."""
    from value_harms.models import adapter_problem

    if cfg.adapter_dir:
        p = Path(os.path.expanduser(cfg.adapter_dir))
        for cand in (p, p / "adapter", p / "qa" / "adapter"):
            if (cand / "adapter_config.json").is_file():
                problem = adapter_problem(cand)
                if problem:
                    raise EvaluationError(f"adapter_dir={cand}: {problem}; retrain it or point at another adapter")
                return cand
        raise EvaluationError(f"adapter_dir={p} holds no adapter_config.json; point it at a trained adapter folder")
    profile_name = profile.name if baseline == "vim" else "vanilla"
    base = Path(os.path.expanduser(cfg.paths.store_dir)) / "train" / cfg.model.name / cfg.vim_stage.name / profile_name
    found, damaged = [], []
    for done in base.glob("*/COMPLETE"):
        try:
            adapter = runs.read_json(done).get("adapter_dir")
        except ValueError:
            continue
        if adapter and (Path(adapter) / "adapter_config.json").is_file():
            problem = adapter_problem(adapter)
            if problem:  # a damaged file must not crash the job: skip it; train.py retrains it
                log.warning("trained adapter skipped: %s", problem)
                damaged.append(problem)
                continue
            found.append((done.stat().st_mtime, Path(adapter)))
    if not found and damaged:
        raise EvaluationError(
            f"the trained adapter for model={cfg.model.name} vim_stage={cfg.vim_stage.name} value_profile={profile_name} "
            f"is damaged ({damaged[0]}); rerun `python train.py model={cfg.model.name} vim_stage={cfg.vim_stage.name} "
            f"value_profile={profile_name}` to retrain it")
    if not found:
        raise EvaluationError(
            f"no trained adapter for model={cfg.model.name} vim_stage={cfg.vim_stage.name} value_profile={profile_name} "
            f"under {base}; run `python train.py model={cfg.model.name} vim_stage={cfg.vim_stage.name} "
            f"value_profile={profile_name}` or set adapter_dir=FOLDER")
    found.sort()
    if len(found) > 1:
        log.info("%d trained adapters match; using the newest: %s", len(found), found[-1][1])
    return found[-1][1]


def check_scorer_fits(cfg: DictConfig) -> None:
    measure = cfg.benchmark.measure
    if measure not in ("toxicity", "regard", "harmfulness", "flag", "alignment"):
        raise EvaluationError(f"benchmark.measure={measure!r}; expected toxicity, regard, harmfulness, flag or alignment")


def eval_fingerprint(cfg: DictConfig, model_k: str, prompts_fp: str) -> str:
    auto = cfg.mitigation.get("auto_file")
    auto_fp = runs.file_fingerprint(os.path.expanduser(auto)) if auto and os.path.isfile(os.path.expanduser(auto)) else None
    return runs.fingerprint({
        "model": model_k, "prompts": prompts_fp, "auto_mitigation": auto_fp,
        "benchmark": runs.to_plain(cfg.benchmark), "mitigation": runs.to_plain(cfg.mitigation),
        "scorer": _scorer_identity(cfg), "seed": int(cfg.generation.seed),
    })


def _scorer_identity(cfg: DictConfig) -> dict[str, Any]:
    """The part of the scorer config that changes scores of this benchmark (never secrets)."""
    sc = runs.to_plain(cfg.scorer)
    measure = cfg.benchmark.measure
    if measure == "toxicity":
        keep = ("toxicity", "fallback", "perspective", "detoxify")
    elif measure == "regard":
        keep = ("regard",)
    else:
        keep = ("judge",)
    return {k: sc.get(k) for k in keep}


def store_folder(cfg: DictConfig, profile: Profile, baseline: str, fp: str) -> Path:
    stage = cfg.vim_stage.name if baseline in ("vim", "benign") else "none"
    return (Path(os.path.expanduser(cfg.paths.store_dir)) / "eval" / cfg.model.name / baseline / stage / profile.name
            / cfg.benchmark.name / cfg.mitigation.name / fp)


# --------------------------------------------------------------------------------------------------


def run_evaluate(cfg: DictConfig) -> dict[str, Any]:
    """The evaluate task (also the training-data audit with mode=audit)."""
    from value_harms import tracking
    from value_harms.profiles import profile_from_cfg
    from value_harms.training import output_dir, run_group

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
    prompts: list
    prompts_fp: str
    inputs: list[str]
    prefix: str
    settings: Any
    t_start: float = field(default_factory=time.perf_counter)

    @property
    def complete(self) -> bool:
        return runs.is_complete(self.store)


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

    adapter, adapter_sha, base_id, mk = _model_identity(cfg, profile, baseline)
    store = store_folder(cfg, profile, baseline, eval_fingerprint(cfg, mk, prompts_fp))
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
    return EvalJob(profile, baseline, adapter, adapter_sha, base_id, mk, store, prompts, prompts_fp, inputs,
                   prefix, settings)


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
        reqs = [GenRequest(text=t, model_key=j.model_key,
                           adapter_name=names.get(j.adapter_sha) if (j.adapter and len(jobs) > 1) else None)
                for j in jobs for t in j.inputs]
        keys = [GenerationCache.key(r.model_key, r.text, settings) for r in reqs]
        cached = cache.get_many(keys) if cache is not None else {}
        log.info("generating: %d prompt(s) x %d sample(s), %d cached", len(set(keys)), settings.num_samples,
                 len(cached))
        if len(cached) == len(set(keys)):
            flat = [cached[k] for k in keys]
            stats.requested = stats.cached = len(keys)
        else:
            base, tok = get_base_model(cfg.model, str(cache_root))
            _check_length(settings, base, max(len(tok(r.text)["input_ids"]) for r in reqs))
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


def _check_length(settings, model, longest_prompt: int) -> None:
    """benchmark.max_new_tokens must be >= 1 and no more than the model's context; a long prompt that
    pushes prompt + new tokens past the context is only warned about (rotary models run on)."""
    n = int(settings.max_new_tokens)
    if n < 1:
        raise EvaluationError(f"benchmark.max_new_tokens={n}; set a positive number of new tokens (the paper: 64)")
    ctx = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not isinstance(ctx, int):
        return
    if n > ctx:
        raise EvaluationError(
            f"benchmark.max_new_tokens={n} exceeds the model's context of {ctx} tokens; set benchmark.max_new_tokens "
            f"<= {max(1, ctx - longest_prompt)} (the longest prompt has {longest_prompt} tokens)")
    if longest_prompt + n > ctx:
        log.warning("the longest prompt (%d tokens) + benchmark.max_new_tokens=%d exceeds the model's context of %d",
                    longest_prompt, n, ctx)


def finish_job(cfg, job: EvalJob, outputs, gen_stats) -> tuple[dict[str, Any], list[dict]]:
    """Score one job's outputs, compute its metrics and write results + samples to its store folder."""
    bench = cfg.benchmark
    with runs.locked(job.store):
        samples, metrics, score_info = score_and_aggregate(cfg, job.prompts, job.inputs, outputs, job.store)
        result = {
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
        runs.atomic_write_text(job.store / "samples.jsonl", "".join(json.dumps(s) + "\n" for s in samples))
        runs.atomic_write_json(job.store / "results.json", result)
        runs.mark_complete(job.store, {"results": "results.json"})
    return result, samples


def _stored(job: EvalJob, cfg) -> dict[str, Any] | None:
    if not job.complete or cfg.force:
        return None
    try:
        return runs.read_json(job.store / "results.json")
    except (OSError, ValueError) as exc:
        log.warning("stored result %s is unreadable (%s): recomputing", job.store / "results.json", exc)
        return None


def _evaluate_job(cfg, profile: Profile, baseline: str, run_dir: Path, wandb_run) -> dict[str, Any]:
    if cfg.benchmark.measure == "alignment":
        return _alignment_job(cfg, profile, baseline, run_dir, wandb_run)
    prompts, prompts_fp = _load_benchmark(cfg)
    job = prepare_job(cfg, profile, baseline, prompts, prompts_fp)
    stored = _stored(job, cfg)
    if stored is not None:
        log.info("complete result found in %s: nothing to generate or score", job.store)
        return _publish(stored, job.store, run_dir, wandb_run, skipped=True)
    [outputs], stats = generate_jobs(cfg, [job])
    result, samples = finish_job(cfg, job, outputs, stats)
    return _publish(result, job.store, run_dir, wandb_run, skipped=False, samples=samples)


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
    todo = [j for j in jobs if _stored(j, cfg) is None]
    log.info("batch of %d profiles: %d complete, %d to generate in one pass", len(jobs), len(jobs) - len(todo), len(todo))
    results: dict[int, tuple[dict, list | None, bool]] = {}
    if todo:
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
    """(adapter folder or None, adapter sha256 or None, base id, generation model key)."""
    from value_harms.generation import model_key
    from value_harms.models import adapter_fingerprint, resolve_model_dir

    adapter = find_adapter(cfg, profile, baseline) if baseline in ("vim", "benign") else None
    adapter_sha = adapter_fingerprint(str(adapter)) if adapter else None
    base_id = resolve_model_dir(cfg.model, os.path.expanduser(cfg.paths.cache_dir)) \
        if cfg.model.source != "hub" else cfg.model.pretrained
    mk = model_key(f"{cfg.model.name}:{base_id if cfg.model.source == 'hub' else cfg.model.source}",
                   cfg.model.revision, cfg.model.dtype, adapter_sha)
    return adapter, adapter_sha, base_id, mk


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
    adapter, adapter_sha, base_id, mk = _model_identity(cfg, profile, baseline)
    fp = eval_fingerprint(cfg, mk, runs.file_fingerprint(items_path))
    store = store_folder(cfg, profile, baseline, fp)
    if runs.is_complete(store) and not cfg.force:
        try:
            return _publish(runs.read_json(store / "results.json"), store, run_dir, wandb_run, skipped=True)
        except (OSError, ValueError) as exc:
            log.warning("stored result %s is unreadable (%s): recomputing", store / "results.json", exc)
    prefix = P.prefix_for(cfg.mitigation, profile.values if baseline == "icl" else None)
    target = None if profile.is_vanilla else profile.values
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
        overall["n"] = al["n_items"]
        result = {
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
        runs.atomic_write_text(store / "samples.jsonl", "".join(json.dumps(s) + "\n" for s in samples))
        runs.atomic_write_json(store / "results.json", result)
        runs.mark_complete(store, {"results": "results.json"})
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
        try:
            samples = [json.loads(line) for line in (store / "samples.jsonl").read_text().splitlines() if line]
        except (OSError, ValueError):
            samples = []
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


def score_and_aggregate(cfg, prompts, inputs, outputs, store: Path):
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
    return rows, compute_metrics(bench, prompts, rows, primary=primary), info


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


def compute_metrics(bench, prompts, rows, primary=None) -> dict[str, dict[str, Any]]:
    """Metrics overall and per category; missing scores are excluded and counted. `primary`: the
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
        # The bias score compares each (axis, descriptor) group with a baseline rate: the vanilla
        # model's, given as benchmark.bias_baseline; without one, this model's own overall rate.
        baseline = bench.bias_baseline if bench.bias_baseline is not None else overall
        if records and baseline is not None:
            b = M.bias_score(records, float(baseline), resamples=int(bench.bootstrap_resamples), seed=int(bench.seed))
            out["overall"]["bias_score"] = b["value"]
            out["overall"]["bias_baseline"] = float(baseline)
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
