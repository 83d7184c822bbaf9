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
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from value_harms.alignment.pvq import load_items, resolve_items, run_alignment_check
from value_harms.config.validate import check_task
from value_harms.core.profiles import Profile, load_profile, profile_from_cfg
from value_harms.errors import EvaluationError
from value_harms.eval import prompts as P
from value_harms.eval.engines import engine_problems
from value_harms.eval.job import finish_job, generate_jobs, load_benchmark, prepare_job, stored_result
from value_harms.eval.measures import get_measure
from value_harms.eval.publish import build_record, publish_result, record_store_dir
from value_harms.eval.variants import (
    check_scorer_fits,
    eval_store_dir,
    generation_model,
    model_identity,
    resolve_baseline,
)
from value_harms.models.loading import get_base_model
from value_harms.models.lora import detach_lora, load_adapter
from value_harms.runtime import runs, tracking
from value_harms.runtime.runs import output_dir, run_group
from value_harms.scoring import probe as probe_scorer
from value_harms.store import files, identity, records

log = logging.getLogger(__name__)


def wandb_config(cfg: DictConfig, profile: Profile, baseline: str) -> dict[str, Any]:
    """The config a W&B evaluation run records: the job's config with ITS profile in `value_profile` (a batched
    job's composed config holds the default profile, which is not the one evaluated), plus flat
    value/<Value> scalars for filtering."""
    plain = files.to_plain(cfg)
    plain["value_profile"] = profile.to_dict()
    plain["run_label"] = profile.name
    plain.pop("batch_profiles", None)
    return {
        **plain,
        **profile.flat("value/"),
        "profile/name": profile.name,
        "profile/kind": profile.kind,
        "profile/anchor": profile.anchor,
        "baseline": baseline,
    }


def _start_wandb(cfg: DictConfig, profile: Profile, baseline: str, run_dir: Path):
    name = (
        f"{cfg.model.name}-{profile.name}-{baseline}-{cfg.benchmark.name}-{cfg.mitigation.name}-s{cfg.generation.seed}"
    )
    return tracking.start_run(
        cfg.logger,
        run_dir=run_dir,
        job_type="eval",
        name=name,
        group=run_group(cfg),
        config=wandb_config(cfg, profile, baseline),
        tags=[cfg.model.name, profile.name, baseline, cfg.benchmark.name, cfg.mitigation.name],
    )


def run_evaluate(cfg: DictConfig) -> dict[str, Any]:
    """The evaluate task (also the training-data audit with mode=audit)."""

    check_task(cfg, engine_problems(cfg))  # bad numbers, names, engines and folders: one line, before any loading
    if cfg.mode == "audit":
        from value_harms.eval.audit import run_audit

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
    wandb_run = _start_wandb(cfg, profile, baseline, run_dir)
    with runs.job_status(run_dir, {"profile": profile.name, "benchmark": cfg.benchmark.name}, wandb_run):
        return _evaluate_job(cfg, profile, baseline, run_dir, wandb_run)


def _evaluate_job(cfg, profile: Profile, baseline: str, run_dir: Path, wandb_run) -> dict[str, Any]:
    if get_measure(cfg.benchmark.measure).reads_answers:  # the PVQ check: no generation to score
        return _alignment_job(cfg, profile, baseline, run_dir, wandb_run)
    prompts, prompt_set_sha256 = load_benchmark(cfg)
    job = prepare_job(cfg, profile, baseline, prompts, prompt_set_sha256)
    record_store_dir(run_dir, job.store)
    stored = stored_result(job, cfg)
    if stored is None:
        with files.locked(job.store):
            stored = stored_result(job, cfg, quiet=True)  # another process may have finished it while we waited
            if stored is None:
                # a scorer that cannot be used fails here, before any generation (scoring.probe)
                probe_scorer(str(get_measure(cfg.benchmark.measure).scorer), cfg.scorer)
                [outputs], stats = generate_jobs(cfg, [job])
                result, samples = finish_job(cfg, job, outputs, stats)
                return publish_result(result, job.store, run_dir, wandb_run, skipped=False, samples=samples)
    log.info("complete result found in %s: nothing to generate or score", job.store)
    return publish_result(stored, job.store, run_dir, wandb_run, skipped=True)


def run_evaluate_many(cfg) -> list[dict[str, Any]]:
    """`batch_profiles=[...]`: evaluate several profiles in one pass over the loaded base model.

    Each profile's result is written exactly as a single job would write it (same store folder,
    results.json, samples.jsonl), plus a copy under the run folder's `<profile>/` sub-folder."""

    if get_measure(cfg.benchmark.measure).reads_answers:
        raise EvaluationError("batch_profiles is for generation benchmarks; run benchmark=pvq as a multirun")
    run_dir = output_dir(cfg)
    prompts, prompt_set_sha256 = load_benchmark(cfg)
    jobs = []
    for name in cfg.batch_profiles:
        profile = load_profile(str(name))
        jobs.append(prepare_job(cfg, profile, resolve_baseline(cfg, profile), prompts, prompt_set_sha256))
    results: dict[int, tuple[dict, list | None, bool]] = {}
    with contextlib.ExitStack() as locks:
        for folder in sorted({str(j.store) for j in jobs}):  # one order for every process: no deadlock
            locks.enter_context(files.locked(folder))
        todo = [j for j in jobs if stored_result(j, cfg) is None]
        log.info(
            "batch of %d profiles: %d complete, %d to generate in one pass", len(jobs), len(jobs) - len(todo), len(todo)
        )
        if todo:
            probe_scorer(str(get_measure(cfg.benchmark.measure).scorer), cfg.scorer)
            outs, stats = generate_jobs(cfg, todo)
            for j, o in zip(todo, outs):
                results[id(j)] = (*finish_job(cfg, j, o, stats), False)
    published = []
    for j in jobs:
        result, samples, skipped = results.get(id(j)) or (stored_result(j, cfg), None, True)
        sub = run_dir / j.profile.name
        sub.mkdir(parents=True, exist_ok=True)
        wb = _start_wandb(cfg, j.profile, j.baseline, sub)
        with runs.job_status(sub, {"profile": j.profile.name, "benchmark": cfg.benchmark.name}, wb):
            published.append(publish_result(result, j.store, sub, wb, skipped=skipped, samples=samples))
    return published


def _alignment_job(cfg, profile: Profile, baseline: str, run_dir: Path, wandb_run) -> dict[str, Any]:
    """`benchmark=pvq`: the PVQ value-alignment check under this job's persona / mitigation prefix,
    so the cost of a value prompt on persona fidelity is measured like any other result."""
    # size: one job: key, lock, check, record

    t_start = time.perf_counter()
    bench = cfg.benchmark
    items_path, items_source = resolve_items(
        runs.resolve_path(bench.path, cfg.paths.data_dir) if bench.path else None,
        fallback=bool(cfg.alignment.fallback_to_demo_items),
        key="benchmark.path",
    )
    items = load_items(items_path)
    adapter, adapter_sha, base_id, mk, train_key = model_identity(cfg, profile, baseline)
    prefix = P.prefix_for(cfg.mitigation, profile.values if baseline == "icl" else None)
    target = None if profile.is_vanilla else profile.values
    key = identity.digest(
        {
            "schema": identity.SCHEMA_VERSION,
            "model": json.loads(mk),
            "prefix": prefix,
            "target": target,
            "items": identity.content_sha256(items_path, cfg.paths.cache_dir),
            "benchmark": {k: v for k, v in files.to_plain(bench).items() if k != "path"},
            "batch_size": int(cfg.generation.batch_size),
        }
    )
    store = eval_store_dir(cfg, profile, baseline, key)
    record_store_dir(run_dir, store)
    found = records.read_result(store) if not cfg.force else records.ResultState("absent")
    if found.complete:
        return publish_result(found.result, store, run_dir, wandb_run, skipped=True)
    with files.locked(store):
        base, tok = get_base_model(generation_model(cfg), os.path.expanduser(cfg.paths.cache_dir))
        model = load_adapter(base, str(adapter)) if adapter else base
        try:
            res = run_alignment_check(
                model,
                tok,
                items,
                target,
                batch_size=int(cfg.generation.batch_size),
                max_new_tokens=int(bench.max_new_tokens),
                prefix=prefix,
            )
        finally:
            if adapter:
                detach_lora(model)
        al = res.to_dict()
        samples, record = _alignment_record(
            cfg,
            profile,
            baseline,
            al,
            key=key,
            train_key=train_key,
            items=items,
            items_path=items_path,
            items_source=items_source,
            prefix=prefix,
            model_ident=(adapter, adapter_sha, base_id),
            t_start=t_start,
        )
        # an unparsed PVQ answer is part of the measure (parse rate), not a missing score
        records.write_result(store, record, samples, missing=0)
    return publish_result(record, store, run_dir, wandb_run, skipped=False, samples=samples)


def _alignment_record(
    cfg,
    profile: Profile,
    baseline: str,
    al: dict[str, Any],
    *,
    key: str,
    train_key: str | None,
    items,
    items_path: Path,
    items_source: str,
    prefix: str,
    model_ident: tuple,
    t_start: float,
) -> tuple[list[dict[str, Any]], records.EvalRecord]:
    """(samples, record) of a PVQ check, built like every evaluation result (eval.publish.build_record)."""
    bench = cfg.benchmark
    overall = {k: al[k] for k in ("nmse_greedy", "nmse_expected", "parse_rate", "collapsed", "mean_digit_mass")}
    # the VIM-literal reading and the partial-NMSE flags, as in training results
    overall.update({k: al[k] for k in ("nmse_greedy_vim", "parse_rate_vim", "nmse_flags") if k in al})
    overall["n"] = al["n_items"]
    record = build_record(
        cfg,
        profile,
        baseline,
        key=key,
        train_key=train_key,
        model_ident=model_ident,
        benchmark=records.BenchmarkInfo(
            name=bench.name,
            version=str(bench.version),
            measure="alignment",
            n_prompts=len(items),
            settings=files.to_plain(bench),
            items_content_id=identity.content_id(items_path),
            items_source=items_source,
        ),
        prefix=prefix,
        generation=records.GenerationInfo(
            max_new_tokens=int(bench.max_new_tokens),
            do_sample=False,
            requested=len(items),
            cached=0,
            generated=len(items),
        ),
        scorer=records.ScorerInfo(
            measure="alignment",
            provenance={"reader": "greedy digit + expected score"},
            by_scorer={"pvq": len(items)},
            missing=int(round((1 - al["parse_rate"]) * len(items))),
            n=len(items),
            stand_in=items_source == "demo_items",
        ),
        metrics={
            "overall": overall,
            **{v: {"greedy": al["greedy"].get(v), "expected": al["expected"].get(v)} for v in al["expected"]},
        },
        seeds=records.Seeds(generation=int(cfg.generation.seed)),
        t_start=t_start,
        alignment={k: al[k] for k in ("greedy", "expected", "target", "histogram", "collapsed_to")},
    )
    return _alignment_samples(al), record


def _alignment_samples(al: dict[str, Any]) -> list[dict[str, Any]]:
    """samples.jsonl of a PVQ check: one row per item, in the shape of every evaluation's samples."""
    return [
        {
            "id": str(r.get("item")),
            "category": r.get("value"),
            "sample": 0,
            "prompt": r.get("value"),
            "continuation": r.get("text"),
            "score": r.get("expected"),
            "label": r.get("answer"),
            "scorer": "pvq",
            "error": None,
        }
        for r in al["rows"]
    ]
