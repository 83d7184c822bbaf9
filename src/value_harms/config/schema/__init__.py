"""Typed schemas of the config tree, registered in Hydra's ConfigStore.

Every primary config (`conf/train.yaml`, ...) starts its defaults list with one of these schemas, so
each group file and each command-line override is merged into a typed node: an unknown key or a
wrong type fails at composition time, before a model is loaded (a typo in a sweep costs nothing).

Importing this module also registers the OmegaConf resolvers the config tree uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

# --------------------------------------------------------------------------------------------------
# Resolvers


def _register_resolvers() -> None:
    # The process id makes run folders unique even when jobs start in the same microsecond on one
    # host (Hydra's ${now:} alone collides at second resolution when a launcher starts many jobs).
    if not OmegaConf.has_resolver("vh.pid"):
        OmegaConf.register_new_resolver("vh.pid", lambda: str(os.getpid()), use_cache=True)
    # LoRA alpha that keeps the paper's alpha/r ratio (32/8 = 4) for another rank.
    if not OmegaConf.has_resolver("eval_alpha"):
        OmegaConf.register_new_resolver("eval_alpha", lambda r: 4 * int(r))


_register_resolvers()


# --------------------------------------------------------------------------------------------------
# The sections, one file per task that reads them (inputs are read by every task)

from value_harms.config.schema.analyze import AnalysisConfig  # noqa: E402
from value_harms.config.schema.evaluate import (  # noqa: E402
    AuditConfig,
    BenchmarkConfig,
    BreakerConfig,
    CalibrationConfig,
    DetoxifyConfig,
    GenerationConfig,
    JudgeConfig,
    MitigationConfig,
    PerspectiveConfig,
    RegardConfig,
    ScorerConfig,
)
from value_harms.config.schema.inputs import (  # noqa: E402
    DataConfig,
    InstructDataConfig,
    LoggerConfig,
    ModelConfig,
    PathsConfig,
    TinyModelConfig,
    ValueProfileConfig,
    ValueVectorConfig,
    VimStageConfig,
)
from value_harms.config.schema.train import AlignmentConfig, TrainConfig, TrainerConfig  # noqa: E402

__all__ = [
    "AlignmentConfig",
    "AnalysisConfig",
    "AuditConfig",
    "BenchmarkConfig",
    "BreakerConfig",
    "CalibrationConfig",
    "DataConfig",
    "DetoxifyConfig",
    "GenerationConfig",
    "InstructDataConfig",
    "JobConfig",
    "JudgeConfig",
    "LoggerConfig",
    "MitigationConfig",
    "ModelConfig",
    "PathsConfig",
    "PerspectiveConfig",
    "RegardConfig",
    "ScorerConfig",
    "TinyModelConfig",
    "TrainConfig",
    "TrainerConfig",
    "ValueProfileConfig",
    "ValueVectorConfig",
    "VimStageConfig",
    "register_configs",
]


@dataclass
class JobConfig:
    """One schema for every task (train, evaluate, analyze), so that `experiment=` presets and
    sweeps can set any section; each task reads the sections it needs."""

    task_name: str = MISSING
    experiment_name: str = "default"
    run_label: str = "${value_profile.name}"  # names sweep sub-folders
    model: ModelConfig = MISSING
    value_profile: ValueProfileConfig = MISSING
    vim_stage: VimStageConfig = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # training
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    # evaluation
    mode: str = "evaluate"  # evaluate | audit (score the VIM training texts)
    # Which model answers: auto = vanilla for the vanilla profile, benign for benign stages, else
    # vim (the trained adapter); icl = the base model with the profile as an in-context persona.
    baseline: str = "auto"  # auto | vanilla | vim | icl | benign
    adapter_dir: Optional[str] = None  # an explicit adapter folder (skips the store lookup)
    # Evaluate these profiles in ONE job: their adapters share every batch (mixed-adapter batches).
    batch_profiles: List[str] = field(default_factory=list)
    benchmark: Optional[BenchmarkConfig] = None
    scorer: Optional[ScorerConfig] = None
    mitigation: Optional[MitigationConfig] = None
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    # analysis
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    force: bool = False  # evaluation: recompute even when a complete result exists


def register_configs() -> None:
    """Store the schema; primary configs name it first in their defaults list."""
    cs = ConfigStore.instance()
    cs.store(name="job_schema", node=JobConfig)


register_configs()
