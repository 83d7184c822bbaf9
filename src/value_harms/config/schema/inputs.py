"""What a study is made of, for every task: the model, the value profile, the VIM stage and its data,
paths and the logger."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING


@dataclass
class ValueVectorConfig:
    """The 10 value intensities on the 1-6 importance scale (keys = values.VALUE_KEYS)."""

    achievement: float = MISSING
    benevolence: float = MISSING
    conformity: float = MISSING
    hedonism: float = MISSING
    power: float = MISSING
    security: float = MISSING
    self_direction: float = MISSING
    stimulation: float = MISSING
    tradition: float = MISSING
    universalism: float = MISSING


@dataclass
class ValueProfileConfig:
    name: str = MISSING
    kind: str = MISSING  # extreme | ess | vanilla | custom
    anchor: Optional[str] = None
    rank: int = 0
    values: Optional[ValueVectorConfig] = None


@dataclass
class TinyModelConfig:
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    vocab_size: int = 512
    seed: int = 0


@dataclass
class ModelConfig:
    name: str = MISSING
    source: str = MISSING  # tiny | gguf | hub
    pretrained: str = ""  # hub id / local dir (hub), python package holding the file (gguf)
    gguf_file: Optional[str] = None
    revision: Optional[str] = None
    dtype: str = "float32"
    padding_side: str = "left"
    lora_target_modules: List[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)


@dataclass
class InstructDataConfig:
    """A benign instruction-tuning set (Alpaca / Dolly / Grammar / SAMSum), local file or hub id."""

    source: str = "local"  # local | hub
    path: str = MISSING  # file (relative to paths.data_dir) or hub dataset id
    format: str = "alpaca"  # alpaca | dolly | grammar | samsum
    revision: Optional[str] = None
    limit: Optional[int] = None
    # Records to drop before training (relative to paths.data_dir): a file of records of the same
    # format (e.g. Dolly's safety-only records) and/or a file of phrases, one per line (a record
    # whose answer contains one is dropped). How the paper's Dolly "no-safety" file was made.
    exclude_path: Optional[str] = None
    exclude_keywords_path: Optional[str] = None


@dataclass
class VimStageConfig:
    """A training stage: which data, and the optimisation settings of the paper for it."""

    name: str = MISSING
    kind: str = MISSING  # vim | benign | none
    # VIM sub-stages run in order on one adapter: [ag], [qa], [ag, qa]; [benign] for baselines.
    steps: List[str] = field(default_factory=list)
    epochs: int = 5
    batch_size: int = 8
    accumulate_grad_batches: int = 1
    lr: float = 2e-5
    # AdamW weight decay. VIM stages: torch's default 0.01 (the paper's train_argument*.py build
    # torch.optim.AdamW without weight_decay); benign stages: 0.0 (its HF Trainer default).
    weight_decay: float = 0.01
    warmup_steps: int = 0
    max_length: int = 128
    # What a sequence longer than max_length loses: end (the paper: the end is cut, which can drop the
    # QA answer) | argument (tokens of the argument text inside the prompt are cut; the answer is kept).
    truncation_side: str = "end"
    # Stage 2 QA train examples: none (the paper) | score (resampled so the answer scores are evenly
    # frequent).
    qa_balance: str = "none"
    # How far qa_balance=score evens the scores out: 1 = equal shares, 0.5 = square-root weights.
    qa_balance_power: float = 1.0
    # Loss weight of the answer tokens (the QA digit; a whole target elsewhere) against 1 for the other
    # target tokens: 1.0 = the paper's plain mean.
    answer_weight: float = 1.0
    # Stage 1: an argument is positive when min over its labelled values of the profile >= threshold.
    threshold: float = 3.0
    instruct: Optional[InstructDataConfig] = None


@dataclass
class DataConfig:
    """Where the Touché arguments come from (see value_harms.data.touche.load_arguments)."""

    source: str = "value_eval_10"  # value_eval_10 | touche_raw | hub
    path: Optional[str] = "vim/valueEval_10.csv"  # relative to paths.data_dir unless absolute
    hub_id: str = "webis/Touche23-ValueEval"
    revision: Optional[str] = None
    split_seed: int = 42  # the 80/10/10 splits of the protocol use random_state 42
    pad_to: str = "max_length"  # max_length (the protocol) | longest (faster, same loss up to positions)


@dataclass
class PathsConfig:
    root_dir: str = "."
    data_dir: Optional[str] = None
    output_dir: str = "outputs"
    store_dir: str = "outputs/store"
    cache_dir: str = "~/.cache/value_harms"


@dataclass
class LoggerConfig:
    kind: str = "none"  # wandb | none
    project: str = "value-harms"
    entity: Optional[str] = None
    mode: str = "offline"  # offline | online | disabled (WANDB_MODE in the environment wins)
    group: Optional[str] = None  # default: the experiment name (+ sweep folder in a multirun)
    tags: List[str] = field(default_factory=list)
    log_adapter: bool = True
