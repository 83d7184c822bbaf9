"""Which model variant a job evaluates (vanilla / vim / icl / benign) and where its adapter is."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from value_harms.core.profiles import Profile, load_profile
from value_harms.errors import EvaluationError
from value_harms.eval.engines import engine_identity, engine_settings
from value_harms.eval.measures import check_benchmark_config
from value_harms.models.identity import base_identity
from value_harms.models.lora import adapter_problem, adapter_sha256
from value_harms.store import files, layout
from value_harms.train.task import train_command, train_store_dir

log = logging.getLogger(__name__)


BASELINES = ("auto", "vanilla", "vim", "icl", "benign")


def resolve_baseline(cfg: DictConfig, profile: Profile) -> str:
    b = str(cfg.baseline)
    if b not in BASELINES:
        raise EvaluationError(f"baseline={b!r} is not one of {', '.join(BASELINES)}")
    if b == "auto":
        if cfg.adapter_dir:
            return "benign" if cfg.vim_stage.kind == "benign" else "vim"
        if cfg.vim_stage.kind == "benign":
            return "benign"
        return "vanilla" if profile.is_vanilla else "vim"
    if b in ("vim", "icl") and profile.is_vanilla and not cfg.adapter_dir:
        raise EvaluationError(f"baseline={b} needs a value profile; value_profile=vanilla has none")
    return b


def find_adapter(cfg: DictConfig, profile: Profile, baseline: str) -> tuple[Path, str | None]:
    """(adapter folder, training key) of this evaluation: an explicit `adapter_dir`, else the adapter
    that `train.py` files under the training key of THIS composed config (same function, same
    inputs), so an ablation or another stage can never stand in for it. A damaged adapter is
    reported, never loaded."""

    if cfg.adapter_dir:
        p = Path(os.path.expanduser(cfg.adapter_dir))
        for cand in (p, p / "adapter", p / "qa" / "adapter"):
            if (cand / "adapter_config.json").is_file():
                problem = adapter_problem(cand)
                if problem:
                    raise EvaluationError(f"adapter_dir={cand}: {problem}; retrain it or point at another adapter")
                return cand, None
        raise EvaluationError(f"adapter_dir={p} holds no adapter_config.json; point it at a trained adapter folder")

    train_profile = profile if baseline == "vim" else load_profile("vanilla")
    folder = train_store_dir(cfg, train_profile)
    key = folder.name
    command = train_command(cfg, train_profile)
    adapter = None
    if files.is_complete(folder):
        try:
            adapter = files.read_json(folder / "COMPLETE").get("adapter_dir")
        except (OSError, ValueError):
            adapter = None
    if not adapter or not (Path(adapter) / "adapter_config.json").is_file():
        raise EvaluationError(
            f"no trained adapter for this config (model={cfg.model.name} vim_stage={cfg.vim_stage.name} "
            f"value_profile={train_profile.name}, training key {key}); run `{command}` first, or set adapter_dir=FOLDER"
        )
    problem = adapter_problem(adapter)
    if problem:
        log.warning("trained adapter not usable: %s", problem)
        raise EvaluationError(
            f"the trained adapter for this config is damaged ({problem}); rerun `{command}` to retrain it"
        )
    return Path(adapter), key


def check_scorer_fits(cfg: DictConfig) -> None:
    """benchmark.measure, benchmark.metrics and the scorer backends checked against the registries
    (eval.measures.MEASURES, scoring.SCORERS): one-line error before any loading."""
    check_benchmark_config(cfg.benchmark, cfg.scorer)


def eval_store_dir(cfg: DictConfig, profile: Profile, baseline: str, key: str) -> Path:
    """Where this evaluation's result lives (store.layout.eval_dir): the names make the store
    browsable; only the key (content) decides identity."""
    stage = cfg.vim_stage.name if baseline in ("vim", "benign") else "none"
    return layout.eval_dir(
        cfg.paths.store_dir,
        model=cfg.model.name,
        variant=baseline,
        stage=stage,
        profile=profile.name,
        benchmark=cfg.benchmark.name,
        mitigation=cfg.mitigation.name,
        key=key,
    )


def generation_model(cfg: DictConfig) -> DictConfig:
    """The model section the evaluated model generates with: `model` with `generation.dtype` when that is set
    (the paper trained in float32 and generated in float16). Training keys keep reading `cfg.model`, so the
    adapter found is the one trained in the training precision."""
    dtype = cfg.generation.get("dtype")
    if not dtype or dtype == cfg.model.dtype:
        return cfg.model
    node = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
    node.dtype = str(dtype)
    return node


def model_identity(cfg, profile: Profile, baseline: str):
    """(adapter folder or None, adapter sha256 or None, base id, generation model key, training key).

    The model key names the weights that answer by content (base identity + adapter sha256 + dtype):
    two models never share generations, whatever their config names."""

    adapter, train_key = find_adapter(cfg, profile, baseline) if baseline in ("vim", "benign") else (None, None)
    adapter_sha = adapter_sha256(str(adapter)) if adapter else None
    base = base_identity(generation_model(cfg), cfg.paths.cache_dir)
    base_id = str(cfg.model.pretrained) if cfg.model.source == "hub" else f"{cfg.model.name}:{cfg.model.source}"
    ident = {"base": base, "adapter": adapter_sha}
    engine = engine_identity(engine_settings(cfg))
    if engine is not None:  # a server's sampler is not the HF path's: never the same key
        ident["engine"] = engine
    mk = json.dumps(ident, sort_keys=True)
    return adapter, adapter_sha, base_id, mk, train_key
