"""Cluster-side helpers for Hydra's submitit (SLURM) launcher.

submitit polls `sacct` at an interval of half the time since the last submission, up to 10 minutes
(`SlurmJob.watcher`, delay_s=600): a task cancelled or timed out an hour into a sweep is noticed up to
10 minutes later, and the launching process waits that long before failing. `SlurmPollCallback` caps
that interval (`max_poll_s`, 10 s by default: one `sacct` call per 10 s per sweep, negligible for
slurmdbd), so a lost task fails the sweep within seconds of SLURM recording it.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class SlurmPollCallback:
    """Hydra callback (conf/hydra/default.yaml): cap submitit's sacct polling interval."""

    def __init__(self, max_poll_s: float = 10.0) -> None:
        self.max_poll_s = float(max_poll_s)

    def on_multirun_start(self, config, **kwargs) -> None:
        try:
            from submitit.slurm.slurm import SlurmJob
        except ImportError:  # no submitit: no SLURM launcher to tune
            return
        watcher = SlurmJob.watcher
        if getattr(watcher, "_delay_s", None) is not None and self.max_poll_s > 0:
            watcher._delay_s = min(float(watcher._delay_s), self.max_poll_s)

    def __getattr__(self, name):  # the other Hydra callback hooks: nothing to do
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)
