"""Run folders: a job's status, the git commit, path resolution, the W&B group.

Two kinds of folder:
- the *run folder* (Hydra's output dir, this module): one per job, unique (microseconds + pid), holds
  the log, the composed config, W&B offline files, status.json and a copy of the job's results;
- the *store folder* (value_harms.store): one per distinct result, addressed by a content key of
  everything that changes that result (store.identity), laid out by store.layout. A rerun of the
  same config finds it, resumes an interrupted job from its last checkpoint, or skips a complete one.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from omegaconf import DictConfig

from value_harms.runtime import tracking
from value_harms.store.files import atomic_write_json, read_json

log = logging.getLogger(__name__)


@contextlib.contextmanager
def job_status(run_dir: str | os.PathLike, info: Mapping[str, Any], wandb_run=None) -> Iterator[dict]:
    """Record a job as running / complete / failed in `run_dir/status.json` and always close W&B,
    even when the job raises (the task-wrapper practice of lightning-hydra-template)."""

    status = {"status": "running", **info, "git": git_hash()}
    atomic_write_json(Path(run_dir) / "status.json", status)
    failed = True
    try:
        yield status
        failed = False
    finally:
        status["status"] = "failed" if failed else "complete"
        try:  # keep what the job added to the file meanwhile (its store_dir, named once it is known)
            on_disk = read_json(Path(run_dir) / "status.json")
        except (OSError, ValueError):
            on_disk = {}
        status.update({k: v for k, v in (on_disk if isinstance(on_disk, dict) else {}).items() if k not in status})
        atomic_write_json(Path(run_dir) / "status.json", status)
        tracking.finish_run(wandb_run, failed=failed)


@functools.lru_cache(maxsize=8)
def git_hash(root: str | os.PathLike | None = None) -> str | None:
    """The project's git commit (with '-dirty' when the tree has changes), or None outside git.
    Computed once per process (jobs of an in-process multirun share it)."""
    cwd = Path(root) if root else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def resolve_path(path: str | None, base: str | None) -> Path | None:
    """An absolute path: `path` itself when absolute or when `base` is None, else base/path."""
    if path is None:
        return None
    p = Path(os.path.expanduser(str(path)))
    if p.is_absolute() or base is None:
        return p
    return Path(os.path.expanduser(str(base))) / p


def run_group(cfg: DictConfig) -> str:
    """W&B group: explicit logger.group, else the experiment name (+ the sweep folder in a multirun)."""
    if cfg.logger.get("group"):
        return str(cfg.logger.group)
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            return f"{cfg.experiment_name}-{Path(hc.sweep.dir).name}"
    except Exception:
        pass
    return str(cfg.experiment_name)


def output_dir(cfg: DictConfig) -> Path:
    """The job's run folder (Hydra's output dir; a fresh folder when called outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:
        # Outside Hydra (tests, notebooks): microseconds + pid, and never an existing folder.
        while True:
            now = time.time()
            stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(now)) + f"-{int(now * 1e6) % 1_000_000:06d}"
            d = Path(cfg.paths.output_dir) / "runs" / cfg.task_name / f"{stamp}_{os.getpid()}"
            try:
                d.mkdir(parents=True, exist_ok=False)
                return d
            except FileExistsError:
                continue
