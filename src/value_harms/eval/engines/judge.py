"""`scorer.judge.backend=vllm`: the generation engine serving the judge model.

The judge gets its own vLLM server, started with the generation engine's settings, the judge's dtype,
the judge model's own context and no LoRA; the judge scorer then talks to it as to any
OpenAI-compatible endpoint (scoring/judge/scorer.py), with a key passed through this process's
environment only.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from value_harms.config.paths import conf_dir
from value_harms.eval.engines import ENGINES, EngineSettings, ServedModel, get_engine, installed_engine
from value_harms.models.loading import resolve_model_dir

JUDGE_KEY_ENV = "VALUE_HARMS_JUDGE_ENGINE_KEY"  # set in this process for the judge's own server


def judge_engine_identity(engine: EngineSettings) -> dict:
    """What the evaluation key adds for a judge served by vLLM (its sampler is not the API's)."""
    dist, version = installed_engine(engine.python)
    return {"name": dist, "version": version}


def _judge_model(judge: Any):
    """`scorer.judge.model`: `model:<option>` of conf/model, else a hub id or a folder."""
    name = str(judge.model)
    if name.startswith("model:"):
        return OmegaConf.load(conf_dir() / "model" / f"{name.split(':', 1)[1]}.yaml")
    return OmegaConf.create(
        {"name": "judge", "source": "hub", "pretrained": name, "revision": judge.revision, "dtype": judge.dtype}
    )


def serve_judge(engine: EngineSettings, scorer: Any, log_dir: Path):
    """Start (or reuse) the judge's server; returns the scorer config that points the OpenAI-compatible
    judge at it. `scorer.judge.constrained=true` is refused at load (config/validate.py)."""
    judge = scorer.judge
    model_cfg = _judge_model(judge)
    model_dir = resolve_model_dir(model_cfg, engine.cache_dir)
    dtype = str(judge.dtype)
    served = replace(
        engine,
        engine="vllm",
        served=ENGINES["vllm"].served,
        base_url=None,
        dtype=dtype,
        max_model_len=None,
        model=ServedModel.from_cfg(model_cfg),
    )
    server = get_engine(served, model_dir, {}, log_dir)
    dist, version = installed_engine(served.python)
    os.environ[JUDGE_KEY_ENV] = server.client.api_key or "none"
    out = OmegaConf.create(OmegaConf.to_container(scorer, resolve=True))
    out.judge.backend = "openai"
    out.judge.base_url = server.base_url
    out.judge.model = server.base_model
    out.judge.api_key_env = JUDGE_KEY_ENV
    out.judge.served_by = f"{dist}=={version}:{model_dir}:{dtype}"
    return out
