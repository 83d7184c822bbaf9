"""The SLURM suite (`make test-slurm`): a real single-node cluster, started here when it is not up.

Tests under tests/slurm carry the `slurm` marker and run only when the marker expression names it
(`pytest -m slurm`); any other run (`make test`, `pytest -m "not slow"`) deselects them, so the
default suite never starts daemons.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from helpers.cli import deselect_unless_marked

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts" / "slurm"
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    deselect_unless_marked(config, items, "slurm", HERE)


def _cluster_answers() -> bool:
    try:
        res = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return res.returncode == 0 and res.stdout.strip() in ("idle", "mix", "alloc")


@pytest.fixture(scope="session")
def cluster():
    """A cluster that answers sinfo/sbatch/sacct: the running one, else one started by up.sh (and
    stopped again at the end). Skips, with up.sh's reason, where none can come up."""
    started = False
    if not _cluster_answers():
        try:
            res = subprocess.run([str(SCRIPTS / "up.sh")], capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            pytest.skip("SLURM cluster did not come up within 600 s (scripts/slurm/up.sh)")
        if res.returncode != 0:
            reason = " | ".join(res.stderr.strip().splitlines()[-3:]) or f"exit {res.returncode}"
            pytest.skip(f"no SLURM cluster on this machine: {reason}")
        started = True
    yield
    if started and not os.environ.get("VALUE_HARMS_SLURM_KEEP"):
        subprocess.run([str(SCRIPTS / "down.sh")], capture_output=True, timeout=120)
