"""What a generation engine needs, typed: `EngineSettings`, read once from the job config.

The job config is read here and nowhere else under eval/engines/: the engine's functions take these
settings (as lightning-hydra-template instantiates each part from its own section), so what an engine
depends on is this list, and a setting outside it (a benchmark, a profile) cannot reach it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from value_harms.config.access import cfg_get
from value_harms.config.paths import conf_dir
from value_harms.net import HttpSettings


@dataclass(frozen=True)
class ServedModel:
    """The model section as the engine reads it: what it serves, and how a served model is checked."""

    name: str
    source: str  # tiny | gguf | hub
    pretrained: str
    revision: str | None
    lora_target_modules: tuple[str, ...]  # the zero adapter's modules

    @classmethod
    def from_cfg(cls, model: Any) -> "ServedModel":
        return cls(
            name=str(model.name),
            source=str(model.source),
            pretrained=str(cfg_get(model, "pretrained", "") or ""),
            revision=str(model.revision) if cfg_get(model, "revision") else None,
            lora_target_modules=tuple(str(t) for t in cfg_get(model, "lora_target_modules", ()) or ()),
        )

    def hub_kwargs(self) -> dict[str, str]:
        """The `revision=` of a pinned hub model (tokenizer, config and server load that commit)."""
        return {"revision": self.revision} if self.source == "hub" and self.revision else {}


@dataclass(frozen=True)
class EngineSettings:
    """Everything an engine reads: `generation.engine`, `generation.vllm`, the generation dtype, the
    model it serves, the HTTP client's timeouts and breaker, and where it keeps files."""

    engine: str  # a name of ENGINES (eval/engines/__init__.py)
    served: bool  # False: the in-process HF path (eval/generation.py)
    dtype: str  # generation.vllm.dtype, else generation.dtype, else model.dtype
    model: ServedModel
    cache_dir: str  # paths.cache_dir, expanded (the zero adapter lives under it)
    python: str  # the engine environment's interpreter, absolute
    base_url: str | None  # a running server; None: the project starts one
    served_model: str | None
    check_model: bool
    base_as_adapter: bool
    api_key_env: str
    host: str
    port: int | None
    max_model_len: int | None
    max_num_batched_tokens: int
    max_loras: int | None
    max_lora_rank: int | None
    gpu_memory_utilization: float | None
    cpu_kvcache_gib: int
    extra_args: tuple[str, ...]
    concurrency: int
    batch_size: int  # prompts per cache commit
    startup_timeout_s: float
    http: HttpSettings  # generation.vllm's timeouts and retries, scorer.breaker's breaker

    def api_key(self) -> str | None:
        """A running server's key, from the environment only (never from the config)."""
        return os.environ.get(self.api_key_env) or None


def _python(path: Any) -> str:
    p = Path(os.path.expanduser(str(path)))
    return str(p if p.is_absolute() else conf_dir().parent / p)


def _int(x: Any) -> int | None:
    return int(x) if x else None


def read_settings(cfg: Any, *, served: bool) -> EngineSettings:
    """The settings of the job config `cfg` (use `engine_settings`, which checks the engine's name)."""
    gen = cfg.generation
    v = gen.vllm
    http = {
        "timeout_s": v.timeout_s,
        "max_retries": v.max_retries,
        "backoff_base_s": v.backoff_base_s,
        "backoff_max_s": v.backoff_max_s,
        "qps": 0.0,  # a local server: no rate limit, `concurrency` bounds the requests in flight
    }
    return EngineSettings(
        engine=str(cfg_get(gen, "engine", "hf")),
        served=served,
        dtype=str(v.dtype or cfg_get(gen, "dtype") or cfg.model.dtype),
        model=ServedModel.from_cfg(cfg.model),
        cache_dir=os.path.expanduser(str(cfg.paths.cache_dir)),
        python=_python(v.python),
        base_url=str(v.base_url) if v.base_url else None,
        served_model=str(v.served_model) if v.served_model else None,
        check_model=bool(v.check_model),
        base_as_adapter=bool(v.base_as_adapter),
        api_key_env=str(v.api_key_env),
        host=str(v.host),
        port=_int(v.port),
        max_model_len=_int(v.max_model_len),
        max_num_batched_tokens=int(v.max_num_batched_tokens),
        max_loras=_int(v.max_loras),
        max_lora_rank=_int(v.max_lora_rank),
        gpu_memory_utilization=float(v.gpu_memory_utilization) if v.gpu_memory_utilization else None,
        cpu_kvcache_gib=int(v.cpu_kvcache_gib),
        extra_args=tuple(str(a) for a in (v.extra_args or ())),
        concurrency=int(v.concurrency),
        batch_size=int(v.batch_size),
        startup_timeout_s=float(v.startup_timeout_s),
        # the generation server shares the scorers' breaker thresholds (scorer.breaker): one policy for
        # every endpoint the project calls
        http=HttpSettings.from_cfg(http, cfg_get(cfg_get(cfg, "scorer"), "breaker")),
    )
