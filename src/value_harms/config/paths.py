"""Where the Hydra config directory is."""

from __future__ import annotations

import os
from pathlib import Path

CONF_DIR: Path = Path(__file__).resolve().parents[3] / "conf"


def conf_dir(override: str | os.PathLike | None = None) -> Path:
    """The config dir: the argument, else $VALUE_HARMS_CONF_DIR, else the repo's `conf/`."""
    if override is not None:
        return Path(override)
    env = os.environ.get("VALUE_HARMS_CONF_DIR")
    return Path(env) if env else CONF_DIR
