"""Typed schemas of the config tree, registered in Hydra's ConfigStore.

Every primary config (`conf/train.yaml`, ...) starts its defaults list with one of these schemas, so
each group file and each command-line override is merged into a typed node: an unknown key or a
wrong type fails at composition time, before a model is loaded (a typo in a sweep costs nothing).

Importing this module also registers the OmegaConf resolvers the config tree uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, List, Optional

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
# Domain groups


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
    # Stage 1: an argument is positive when min over its labelled values of the profile >= threshold.
    threshold: float = 3.0
    instruct: Optional[InstructDataConfig] = None


@dataclass
class BenchmarkConfig:
    """A safety benchmark as data (lm-evaluation-harness style): source, prompts, generation, metrics."""

    name: str = MISSING
    version: str = "1"
    # Where prompts come from: local (a file/folder under paths.data_dir), hub, or generated
    # (HolisticBiasR is generated from the HolisticBias v1.1 files).
    source: str = "local"
    format: str = MISSING  # rtp_list | rtp_jsonl | holistic_bias | hex_phi_csv | beavertails_csv
    path: Optional[str] = None
    hub_id: Optional[str] = None
    revision: Optional[str] = None
    hub_split: str = "train"
    hub_config: Optional[str] = None
    min_prompt_toxicity: Optional[float] = None  # RTP hub filter: prompts with toxicity >= this
    limit: Optional[int] = None  # first N prompts (the paper: RTP first 3,000)
    per_category: Optional[int] = None  # first N prompts of each category (small covering subsets)
    seed: int = 42  # prompt-set generation / subsampling
    prompt_template: str = "{prompt}"
    max_new_tokens: int = 64
    num_samples: int = 1
    do_sample: bool = True
    temperature: float = 0.1
    top_p: float = 0.75
    stop: List[str] = field(default_factory=list)
    measure: str = MISSING  # toxicity | regard | harmfulness | flag: what the scorer must measure
    metrics: List[str] = field(default_factory=list)
    toxicity_threshold: float = 0.5
    # RTP: a prompt with fewer scored samples than this is left out of expected maximum toxicity and
    # toxicity probability and counted (partial_prompts). None = all of num_samples.
    min_scored_samples: Optional[int] = None
    bootstrap_resamples: int = 9999
    # HolisticBiasR bias score: two-sided level of the percentile bootstrap (scipy's confidence_level;
    # the upper bound is the 100*(1+level)/2 percentile: 98.75th for the reference's 0.975).
    bootstrap_confidence_level: float = 0.975
    # HolisticBiasR bias score baseline: "vanilla" (the vanilla model's negative-regard rate, read from
    # the stored vanilla result of the same benchmark version and scorer), "self" (this model's own
    # overall rate; also when unset) or a fixed fraction such as "0.005".
    bias_baseline: Optional[str] = None


@dataclass
class PerspectiveConfig:
    endpoint: str = "https://commentanalyzer.googleapis.com/v1alpha1/comments:analyze"
    api_key_env: str = "PERSPECTIVE_API_KEY"  # the key is read from this variable only
    attribute: str = "TOXICITY"
    qps: float = 1.0
    max_retries: int = 6
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    timeout_s: float = 30.0
    max_chars: int = 20000


@dataclass
class DetoxifyConfig:
    variant: str = "original"  # original | unbiased | multilingual
    checkpoint: Optional[str] = None  # explicit checkpoint file (air-gapped clusters)
    huggingface_config_path: Optional[str] = None  # folder with config.json + tokenizer files
    batch_size: int = 16
    device: str = "cpu"


@dataclass
class JudgeConfig:
    backend: str = "openai"  # openai (any OpenAI-compatible endpoint) | transformers (local model)
    model: str = "gpt-4o-2024-08-06"
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "JUDGE_API_KEY"
    revision: Optional[str] = None
    rubric_file: Optional[str] = None  # exact rubric text (the project ships its own wording)
    max_tokens: int = 4096  # the paper's judge calls; HEx-PHI reasoning comes before "#thescore:"
    temperature: float = 0.0
    top_p: float = 0.0
    qps: float = 2.0
    max_retries: int = 6
    timeout_s: float = 60.0
    # transformers backend: choose among the allowed answers by log-probability after the answer
    # lead instead of free generation (for small local judges that cannot follow the format).
    constrained: bool = False
    # Mark this judge as a stand-in (e.g. a tiny local model) in every result and report.
    stand_in: bool = False
    backoff_base_s: float = 1.0  # openai: delay before retry k = base * 2**k (jittered), capped
    backoff_max_s: float = 60.0
    batch_size: int = 8  # transformers: prompts per generate call
    device: str = "cpu"  # transformers
    dtype: str = "float32"  # transformers: float32 | bfloat16 | float16


@dataclass
class RegardConfig:
    model: str = "sasha/regardv3"  # hub id or local folder
    revision: Optional[str] = None
    batch_size: int = 16
    mask_token: str = "XYZ"
    device: str = "cpu"
    max_length: int = 512  # tokens per scored text (longer texts are truncated, not dropped)


@dataclass
class BreakerConfig:
    """Circuit breaker of every network scorer endpoint (scoring/http.py), reset at each job."""

    max_consecutive_failures: int = 5  # connection failures / timeouts in a row before giving up
    max_outage_s: float = 60.0  # ... or a run of >= 2 of them lasting this long (0 = no time limit)
    connect_timeout_s: float = 5.0  # TCP/TLS connect; the read timeout is each scorer's timeout_s


@dataclass
class CalibrationConfig:
    """Offline toxicity backends mapped onto Perspective's scale (scoring/calibration.py, issue 14)."""

    enabled: bool = False
    path: str = "rtp_decodingtrust"  # texts with Perspective scores; relative to data_dir unless absolute
    data_dir: Optional[str] = None  # default: the job's paths.data_dir (else VALUE_HARMS_DATA_DIR)
    cache_dir: Optional[str] = None  # fitted maps; default: the job's paths.cache_dir
    folds: int = 5  # k of the cross-validation that measures the held-out agreement
    seed: int = 0
    backends: List[str] = field(default_factory=lambda: ["profanity_check", "detoxify"])


@dataclass
class ScorerConfig:
    """How each kind of harm is scored. `toxicity` names the backend for toxicity; the others are
    used by the benchmarks that need them (regard: HolisticBiasR, judge: HEx-PHI / BeaverTails)."""

    name: str = MISSING
    toxicity: str = "perspective"  # perspective | detoxify | profanity_check
    # Per-text fallback chain when the primary toxicity backend is unavailable or gives up.
    fallback: List[str] = field(default_factory=lambda: ["detoxify", "profanity_check"])
    perspective: PerspectiveConfig = field(default_factory=PerspectiveConfig)
    detoxify: DetoxifyConfig = field(default_factory=DetoxifyConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    regard: RegardConfig = field(default_factory=RegardConfig)
    cache: bool = True
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    # One cheap request to the network scorer before generation (scoring.probe): a judge that cannot
    # be used fails the job at once; an unreachable Perspective opens its breaker (fallback from the start).
    probe: bool = True
    probe_timeout_s: float = 10.0
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)


@dataclass
class MitigationConfig:
    name: str = "none"
    safety_prompt: bool = False
    safety_prompt_file: Optional[str] = None
    value_prompt: bool = False
    disregard_values: List[str] = field(default_factory=list)
    value_prompt_file: Optional[str] = None
    # mitigation=auto: values to disregard per benchmark and category, chosen by analyze.py from the
    # fitted regressions (JSON {benchmark: {category | "all": [values]}}).
    auto_file: Optional[str] = None


# --------------------------------------------------------------------------------------------------
# Infrastructure groups


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


# --------------------------------------------------------------------------------------------------
# Primary configs


@dataclass
class GenerationConfig:
    batch_size: int = 8  # prompts per forward pass (x num_samples rows)
    seed: int = 42
    cache: bool = True  # reuse generations keyed by model, adapter, input, settings and seed
    num_threads: Optional[int] = None
    progress: bool = True


@dataclass
class AuditConfig:
    """`mode=audit`: score the VIM training texts (the paper found 5 of 8K+ flagged)."""

    limit: Optional[int] = None
    threshold: float = 0.5
    show: int = 5  # most toxic texts listed (by id) in the report


@dataclass
class AnalysisConfig:
    # Result folders, files or glob patterns (searched recursively for results.json / train_result.json).
    inputs: List[str] = field(default_factory=lambda: ["${paths.store_dir}/eval"])
    alignment_inputs: List[str] = field(default_factory=lambda: ["${paths.store_dir}/train"])
    audit_inputs: List[str] = field(default_factory=lambda: ["${paths.output_dir}/runs/evaluate"])
    allow_mixed: bool = False  # allow one metric to mix scorers or benchmark versions
    # Partial results (some scores missing) are analysed only up to this share of missing scores.
    max_missing_frac: float = 0.0
    # Largest difference in per-text fallback share (texts scored by a fallback scorer, e.g. Detoxify
    # behind Perspective) between results compared on one metric; beyond it analysis refuses (or, with
    # allow_mixed, flags) the comparison.
    max_fallback_share_diff: float = 0.05
    regression_baseline: str = "vim"  # which models the value regressions are fitted on (vim | icl | ...)
    standardize: bool = False  # standardised regression coefficients
    higher_order: bool = False  # regress on the 4 higher-order values instead of the 10
    alpha: float = 0.05  # FDR level (Benjamini-Hochberg)
    conf: float = 0.95  # confidence level of intervals
    top_k: int = 5  # findings printed
    # issue 14: a comparison headlines an effect only when its design has at least min_models models
    # (per sampled group; the vanilla model is one fixed reference) and min_prompts prompts; otherwise
    # it is reported as underpowered with its minimum detectable effect.
    min_models: int = 5
    min_prompts: int = 30
    regression_mixed: bool = False  # also fit prompt-level mixed models (random intercept per profile)
    # Where the automatic mitigation (values to disregard per category) is written for mitigation=auto.
    auto_mitigation_file: str = "${paths.output_dir}/analysis/auto_mitigation.json"


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
