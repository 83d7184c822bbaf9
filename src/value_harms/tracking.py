"""Experiment tracking with Weights & Biases (optional; results never depend on it).

A run logs its fully resolved config plus flat keys for every value intensity (`value/Power`, ...)
so the dashboard can filter and plot runs by value. W&B is offline unless the user asks otherwise;
if it fails to start, the job goes on and writes its local results (a warning says so).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

# Names of environment variables that hold secrets: never copied anywhere.
SECRET_ENV_VARS = ("WANDB_API_KEY", "PERSPECTIVE_API_KEY", "OPENAI_API_KEY", "JUDGE_API_KEY", "HF_TOKEN")


def wandb_mode(logger_cfg: Mapping[str, Any]) -> str:
    """WANDB_MODE in the environment wins over the config (offline by default)."""
    return os.environ.get("WANDB_MODE") or str(logger_cfg.get("mode") or "offline")


def start_run(
    logger_cfg: Mapping[str, Any],
    *,
    run_dir: str | os.PathLike,
    job_type: str,
    name: str,
    group: str,
    config: Mapping[str, Any],
    tags: list[str] | None = None,
):
    """Start a W&B run, or return None when logging is off or W&B cannot start."""
    if logger_cfg.get("kind", "none") != "wandb":
        return None
    mode = wandb_mode(logger_cfg)
    if mode == "disabled":
        return None
    try:
        import wandb

        Path(run_dir).mkdir(parents=True, exist_ok=True)
        return wandb.init(
            project=logger_cfg.get("project") or "value-harms",
            entity=logger_cfg.get("entity"),
            dir=str(run_dir),
            name=name,
            group=group,
            job_type=job_type,
            tags=sorted(set(list(logger_cfg.get("tags") or []) + list(tags or []))),
            config=dict(config),
            mode=mode,
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )
    except Exception as exc:  # W&B must never cost local results
        log.warning("W&B did not start (%s: %s); results are still written to %s",
                    type(exc).__name__, exc, run_dir)
        return None


def safe_log(run, data: Mapping[str, Any], *, summary: bool = False) -> None:
    """Log to W&B if a run exists; a W&B failure is a warning, never a lost result."""
    if run is None:
        return
    try:
        if summary:
            for key, value in data.items():
                run.summary[key] = value
        else:
            run.log(dict(data))
    except Exception as exc:
        log.warning("W&B logging failed (%s: %s); local results are unaffected", type(exc).__name__, exc)


def log_table(run, key: str, rows: list[Mapping[str, Any]]) -> None:
    """Log a list of flat dicts as a W&B Table."""
    if run is None or not rows:
        return
    try:
        import wandb

        columns = list(rows[0].keys())
        table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])
        run.log({key: table})
    except Exception as exc:
        log.warning("W&B table %s not logged (%s)", key, exc)


def log_artifact_dir(run, folder: str | os.PathLike, *, name: str, type_: str, metadata: Mapping | None = None) -> None:
    """Attach a folder (e.g. a LoRA adapter) to the run as an artifact."""
    if run is None:
        return
    try:
        import wandb

        art = wandb.Artifact(name=name, type=type_, metadata=dict(metadata or {}))
        art.add_dir(str(folder))
        run.log_artifact(art)
    except Exception as exc:
        log.warning("W&B artifact %s not logged (%s)", name, exc)


def lightning_logger(run, prefix: str):
    """A Lightning WandbLogger on `run` whose write failures are warnings, never a lost training run
    (Lightning calls the logger inside the fit loop, where an exception would end the job)."""
    from lightning.pytorch.loggers import WandbLogger

    class _SafeWandbLogger(WandbLogger):
        _warned = False

        def _guard(self, what, fn, *args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if not self._warned:
                    self._warned = True
                    log.warning("W&B logging failed (%s: %s); training goes on and local results are unaffected",
                                type(exc).__name__, exc)
                return None

        def log_metrics(self, metrics, step=None):
            return self._guard("metrics", super().log_metrics, metrics, step)

        def log_hyperparams(self, params, *args, **kwargs):
            return self._guard("hyperparams", super().log_hyperparams, params, *args, **kwargs)

        def after_save_checkpoint(self, checkpoint_callback):
            return self._guard("checkpoint", super().after_save_checkpoint, checkpoint_callback)

    return _SafeWandbLogger(experiment=run, prefix=prefix)


def finish_run(run, *, failed: bool = False) -> None:
    if run is None:
        return
    try:
        run.finish(exit_code=1 if failed else 0)
    except Exception as exc:
        log.warning("W&B finish failed (%s)", exc)


def artifact_safe_name(text: str) -> str:
    """W&B artifact names allow alphanumerics, dashes, underscores and dots."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)
