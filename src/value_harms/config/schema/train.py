"""Sections read by training: the Lightning trainer, LoRA and run settings, the PVQ alignment check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass
class TrainerConfig:
    _target_: str = "lightning.pytorch.Trainer"
    accelerator: str = "auto"
    devices: Any = 1
    precision: str = "32-true"
    max_steps: int = -1
    limit_train_batches: Any = 1.0
    limit_val_batches: Any = 1.0
    val_check_interval: Any = 1.0
    log_every_n_steps: int = 10
    gradient_clip_val: Optional[float] = None
    num_sanity_val_steps: int = 0
    enable_progress_bar: bool = True
    enable_model_summary: bool = False
    deterministic: bool = False


@dataclass
class TrainConfig:
    """LoRA and run-level training settings (names as in trl / PEFT)."""

    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    seed: int = 42
    checkpoint_every_n_steps: int = 50
    num_threads: Optional[int] = None  # torch threads per job (joblib launcher: set to 1)
    force: bool = False  # retrain even when a complete result exists for the same config


@dataclass
class AlignmentConfig:
    enabled: bool = True
    # PVQ-40 items with their key (`item,value,text`); relative to paths.data_dir. When the file is
    # absent the project's own demo items are used and the result says so.
    items_path: Optional[str] = "pvq/pvq40_items_with_key.csv"
    fallback_to_demo_items: bool = True
    batch_size: int = 8
    max_new_tokens: int = 20
