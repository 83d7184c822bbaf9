"""An evaluation result: its record built from the job (the one builder both writers use), written to the
store, the run folder and W&B."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from value_harms.core.profiles import Profile
from value_harms.eval.measures import get_measure
from value_harms.eval.variants import generation_model
from value_harms.runtime import runs, tracking
from value_harms.store import files, records

log = logging.getLogger(__name__)


def build_record(
    cfg,
    profile: Profile,
    baseline: str,
    *,
    key: str,
    train_key: str | None,
    model_ident: tuple,
    benchmark: records.BenchmarkInfo,
    prefix: str,
    generation: records.GenerationInfo,
    scorer: records.ScorerInfo,
    metrics: dict[str, Any],
    seeds: records.Seeds,
    t_start: float,
    alignment: dict[str, Any] | None = None,
) -> records.EvalRecord:
    """The results.json record of one job (a generation job or the PVQ check): the sections every job reads
    from its config (model, stage, mitigation, git) are filled here, the rest comes typed from the job.
    `model_ident`: (adapter folder or None, adapter sha256 or None, base id)."""
    adapter, adapter_sha, base_id = model_ident
    model = records.ModelInfo(
        name=cfg.model.name,
        base=base_id,
        revision=cfg.model.revision,
        dtype=generation_model(cfg).dtype,
        adapter_dir=str(adapter) if adapter else None,
        adapter_sha256=adapter_sha,
    )
    return records.EvalRecord.build(
        key=key,
        train_key=train_key,
        benchmark=benchmark,
        model=model,
        profile=profile.to_dict(),
        baseline=baseline,
        stage=cfg.vim_stage.name if baseline in ("vim", "benign") else "none",
        mitigation=files.to_plain(cfg.mitigation),
        prefix=prefix,
        generation=generation,
        scorer=scorer,
        metrics=metrics,
        seeds=seeds,
        git=runs.git_hash(),
        seconds=round(time.perf_counter() - t_start, 2),
        alignment=alignment,
    )


def record_store_dir(run_dir: Path, store: Path) -> None:
    """Name the job's store folder in its run folder's status.json as soon as it is known, so that
    `value_harms.tools.status` can tell the job done once its result exists, however it got there."""
    status_file = run_dir / "status.json"
    try:
        status = files.read_json(status_file)
    except (OSError, ValueError):
        return
    status["store_dir"] = str(store)
    files.atomic_write_json(status_file, status)


def publish_result(result, store: Path, run_dir: Path, wandb_run, *, skipped: bool, samples=None) -> dict[str, Any]:
    """Copy results into the run folder and send the summary, samples table and chart to W&B."""

    record = result if isinstance(result, records.EvalRecord) else records.EvalRecord.from_json(result)
    record.store_dir, record.run_dir, record.skipped = str(store), str(run_dir), skipped
    result = record.to_json()
    files.atomic_write_json(run_dir / "results.json", result)
    if samples is None:
        samples = records.read_samples(store)  # checked against its checksum by read_result
    files.atomic_write_text(run_dir / "samples.jsonl", "".join(json.dumps(s) + "\n" for s in samples))
    if wandb_run is None:
        return result
    bench = record.benchmark_name
    flat = {}
    for cat, vals in record.metrics.items():
        for k, v in vals.items():
            if isinstance(v, (int, float)) or v is None:
                flat[f"{bench}/{k}" if cat == "overall" else f"{bench}/{cat}/{k}"] = v
    flat["generation/generated"] = record.generation.get("generated")
    flat["generation/cached"] = record.generation.get("cached")
    flat["scorer/missing"] = record.scorer.get("missing")
    tracking.safe_log(wandb_run, flat, summary=True)
    tracking.log_table(
        wandb_run,
        f"{bench}/samples",
        [
            {
                k: s.get(k)
                for k in ("id", "category", "sample", "prompt", "continuation", "score", "label", "scorer", "error")
            }
            for s in samples[:2000]
        ],
    )
    _log_category_chart(wandb_run, bench, record)
    return result


def _log_category_chart(wandb_run, bench: str, record: records.EvalRecord) -> None:
    main_metric = get_measure(record.measure).chart_metric
    rows = [
        [cat, vals.get(main_metric)]
        for cat, vals in record.metrics.items()
        if cat != "overall" and vals.get(main_metric) is not None
    ]
    if not rows:
        return
    try:
        import wandb

        table = wandb.Table(data=rows, columns=["category", main_metric])
        wandb_run.log(
            {
                f"{bench}/by_category": wandb.plot.bar(
                    table, "category", main_metric, title=f"{bench}: {main_metric} by category"
                )
            }
        )
    except Exception as exc:
        log.warning("W&B chart not logged (%s)", exc)
