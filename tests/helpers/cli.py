"""What tests share besides fixtures: the repository's paths and running an entry point as a user would.

(Tests import these from here, never from conftest.py, which pytest loads itself.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"


def run_script(script: str, args: list[str], env_extra: dict | None = None, timeout: int = 600):
    """Run one of the entry points in a subprocess, as a user would."""
    env = dict(os.environ)
    env.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def deselect_unless_marked(config, items, marker: str, folder: Path) -> None:
    """pytest_collection_modifyitems of a suite that runs only when `-m` names its marker: the tests
    under `folder` are deselected from every other run (`make test` never starts their services)."""
    if marker in (config.option.markexpr or ""):
        return
    mine = [i for i in items if folder in Path(str(i.fspath)).parents]
    if mine:
        items[:] = [i for i in items if i not in mine]
        config.hook.pytest_deselected(items=mine)


def tiny_job_args(tmp_path, cache_dir, data_dir, store: str = "store") -> list[str]:
    """The overrides of a quiet in-process job on the tiny model with the test's own folders."""
    return [
        "model=tiny",
        "logger=none",
        "generation.progress=false",
        f"paths.output_dir={tmp_path}/out",
        f"paths.cache_dir={cache_dir}",
        f"paths.data_dir={data_dir}",
        f"paths.store_dir={tmp_path}/{store}",
    ]
