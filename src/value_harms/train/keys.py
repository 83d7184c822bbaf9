"""The training key: a sha256 of everything that determines an adapter - the base model's identity,
LoRA targets, the profile vector, the stage settings, the training data by content, LoRA and trainer settings."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from value_harms.models.identity import base_identity
from value_harms.runtime.runs import resolve_path
from value_harms.store.files import to_plain
from value_harms.store.identity import SCHEMA_VERSION, content_sha256, digest

# Trainer settings that change the trained adapter; the rest (progress bar, logging cadence,
# accelerator choice between equivalent CPUs) does not.
TRAINER_KEYS = (
    "precision",
    "max_steps",
    "limit_train_batches",
    "limit_val_batches",
    "val_check_interval",
    "gradient_clip_val",
    "deterministic",
    "accumulate_grad_batches",
)


# LoRA / run settings that change the adapter (checkpoint cadence, threads and `force` do not: a
# resumed run reproduces the uninterrupted one, see the resume guarantee in README).
TRAIN_KEYS = ("lora_r", "lora_alpha", "lora_dropout", "seed")


def _data_identity(cfg: DictConfig, data_dir: str | None) -> dict[str, Any]:
    """The Touché arguments (or the benign instruction set) a training job reads, by content."""

    cache_dir = cfg.paths.cache_dir
    if cfg.vim_stage.kind == "benign":
        ic = to_plain(cfg.vim_stage.instruct) or {}
        out = {k: v for k, v in ic.items() if k not in ("path", "exclude_path", "exclude_keywords_path")}
        if ic.get("source") == "local":
            p = resolve_path(ic.get("path"), data_dir)
            out["sha256"] = content_sha256(p, cache_dir) if p is not None and p.exists() else f"missing:{p}"
        else:
            out["hub_id"] = ic.get("path")
        for key in ("exclude_path", "exclude_keywords_path"):  # Dolly's safety exclusions, by content
            if ic.get(key):
                p = resolve_path(ic.get(key), data_dir)
                out[key] = content_sha256(p, cache_dir) if p is not None and p.exists() else f"missing:{p}"
        return out
    d = to_plain(cfg.data)
    out = {"source": d.get("source"), "split_seed": d.get("split_seed"), "pad_to": d.get("pad_to")}
    if d.get("source") == "hub":
        out.update(hub_id=d.get("hub_id"), revision=d.get("revision") or "main")
    else:
        p = resolve_path(d.get("path"), data_dir)
        # A missing file is reported by the data loader with its own message; the key only has to
        # differ from any real content.
        out["sha256"] = content_sha256(p, cache_dir) if p is not None and p.exists() else f"missing:{p}"
    return out


# vim_stage keys added after adapters were stored, with the value that reproduces the old training.
STAGE_KEY_DEFAULTS: dict[str, Any] = {"qa_balance": "none", "qa_balance_power": 1.0, "answer_weight": 1.0}


def train_key_payload(cfg: DictConfig, profile, data_dir: str | None) -> dict[str, Any]:
    """Everything that determines the adapter of one training job (see module doc)."""
    stage = {k: v for k, v in (to_plain(cfg.vim_stage) or {}).items() if k not in ("name", "instruct")}
    # the cpu_study levers at their defaults are left out: the keys of stored adapters do not change
    stage = {k: v for k, v in stage.items() if k not in STAGE_KEY_DEFAULTS or v != STAGE_KEY_DEFAULTS[k]}
    trainer = to_plain(cfg.trainer) or {}
    train = to_plain(cfg.train) or {}
    benign = cfg.vim_stage.kind == "benign"
    return {
        "schema": SCHEMA_VERSION,
        "base": base_identity(cfg.model, cfg.paths.cache_dir),
        "lora_target_modules": list(to_plain(cfg.model.lora_target_modules) or []),
        "gradient_checkpointing": bool(cfg.model.get("gradient_checkpointing", False)),
        # benign baselines ignore the profile (one adapter serves every profile)
        "profile": None if benign else profile.values,
        "stage": stage,
        "data": _data_identity(cfg, data_dir),
        "train": {k: train.get(k) for k in TRAIN_KEYS},
        "trainer": {k: trainer.get(k) for k in TRAINER_KEYS if k in trainer},
    }


def train_key(cfg: DictConfig, profile, data_dir: str | None) -> str:
    return digest(train_key_payload(cfg, profile, data_dir))
