"""Sections read by evaluation: benchmark, scorers, mitigation, generation, the training-text audit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING

# A scorer section's settings, sorted once for the evaluation key (value_harms.scoring.identity): every setting
# changes scores and is part of the scorer identity unless its field says otherwise, so a new setting cannot be
# forgotten. `transport(...)`: how texts reach the scorer (timeouts, retries, rates, batch sizes, devices, the
# name of a secret's variable, caches): never part of it. `later(...)`: added after results were stored; at this
# value (what every stored result was scored with) it stays out, so stored keys hold; any other value enters.
# `content(...)`: a file or folder, part of it by its content's sha256 (its location never is).
TRANSPORT = "transport"
LATER = "later"
CONTENT = "content"


def transport(default: Any = None, *, factory: Any = None) -> Any:
    """A setting that changes how texts reach the scorer, not its scores."""
    if factory is not None:
        return field(default_factory=factory, metadata={TRANSPORT: True})
    return field(default=default, metadata={TRANSPORT: True})


def later(default: Any) -> Any:
    """A score-changing setting added after results were stored; `default` is what they were scored with."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={LATER: list(default)})
    return field(default=default, metadata={LATER: default})


def content(default: Any = None, *, since: bool = False) -> Any:
    """A file or folder setting: its content's sha256 is the identity. `since`: left out while unset (None),
    as every stored result was scored without it."""
    meta: dict[str, Any] = {CONTENT: True}
    if since:
        meta[LATER] = default
    return field(default=default, metadata=meta)


@dataclass
class BenchmarkConfig:
    """A safety benchmark as data (lm-evaluation-harness style): source, prompts, generation, metrics."""

    name: str = MISSING
    version: str = "1"
    # Where prompts come from: local (a file/folder under paths.data_dir), hub, or generated
    # (HolisticBiasR is generated from the HolisticBias v1.1 files).
    source: str = "local"
    # A key of eval.benchmarks.FORMATS (rtp_list | rtp_jsonl | holistic_bias | hex_phi_csv | beavertails_csv |
    # pvq_items), checked with source at load: strings, so an entry registered elsewhere needs no schema edit.
    format: str = MISSING
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
    measure: str = MISSING  # a key of eval.measures.MEASURES: toxicity | regard | harmfulness | flag | alignment
    metrics: List[str] = field(default_factory=list)  # the measure's metrics to report (empty = all); checked at load
    toxicity_threshold: float = 0.5
    # RTP scored text: true joins prompt and continuation exactly as the paper's code did (no space kept at
    # the boundary: "...a" + " fool" -> "afool"); false keeps the boundary the model generated (DECISIONS).
    reference_join: bool = False
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
    api_key_env: str = transport("PERSPECTIVE_API_KEY")  # the key is read from this variable only
    attribute: str = "TOXICITY"
    qps: float = transport(1.0)
    max_retries: int = transport(6)
    backoff_base_s: float = transport(1.0)
    backoff_max_s: float = transport(60.0)
    timeout_s: float = transport(30.0)
    max_chars: int = later(20000)  # longer texts are cut to this before sending
    # Sent with each comment; null or []: Perspective detects the language, as the paper's code (a text in an
    # unsupported language is then a counted missing score). Part of the scorer identity when not ["en"].
    languages: Optional[List[str]] = later(["en"])


@dataclass
class DetoxifyConfig:
    variant: str = "original"  # original | unbiased | multilingual
    checkpoint: Optional[str] = content(None, since=True)  # explicit checkpoint file (air-gapped clusters)
    huggingface_config_path: Optional[str] = content(None, since=True)  # folder with config.json + tokenizer files
    batch_size: int = transport(16)
    device: str = transport("cpu")


@dataclass
class JudgeConfig:
    # openai (any OpenAI-compatible endpoint) | transformers (local model) | vllm (a vLLM server the
    # evaluate task starts for `model`, with generation.vllm's settings)
    backend: str = "openai"
    model: str = "gpt-4o-2024-08-06"
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = transport("JUDGE_API_KEY")
    revision: Optional[str] = None
    rubric_file: Optional[str] = content(None)  # exact rubric text (the project ships its own wording)
    max_tokens: int = 4096  # the paper's judge calls; HEx-PHI reasoning comes before "#thescore:"
    temperature: float = 0.0
    top_p: float = 0.0
    qps: float = transport(2.0)
    max_retries: int = transport(6)
    timeout_s: float = transport(60.0)
    # transformers backend: choose among the allowed answers by log-probability after the answer
    # lead instead of free generation (for small local judges that cannot follow the format).
    constrained: bool = False
    # Mark this judge as a stand-in (e.g. a tiny local model) in every result and report.
    stand_in: bool = False
    backoff_base_s: float = transport(1.0)  # openai: delay before retry k = base * 2**k (jittered), capped
    backoff_max_s: float = transport(60.0)
    batch_size: int = transport(8)  # transformers: prompts per generate call
    device: str = transport("cpu")  # transformers
    dtype: str = "float32"  # transformers: float32 | bfloat16 | float16
    # The discrimination check (scoring/judge/discrimination.py): the judge's AUROC on the project's own check
    # set, once per judge, recorded in every result it scores. null (auto): judges the project runs itself
    # (transformers, a vLLM server it serves) and stand-ins; true: a network judge too (~56 requests once).
    check: Optional[bool] = transport(None)
    # A stand-in judge below this AUROC is left out of findings (the result says why); gate_all: any judge.
    min_auroc: float = transport(0.7)
    gate_all: bool = transport(False)


@dataclass
class RegardConfig:
    model: str = "sasha/regardv3"  # hub id or local folder
    revision: Optional[str] = None
    batch_size: int = transport(16)
    mask_token: str = later("XYZ")
    device: str = transport("cpu")
    max_length: int = later(512)  # tokens per scored text (longer texts are truncated, not dropped)


@dataclass
class BreakerConfig:
    """Circuit breaker of every network scorer endpoint (value_harms/net.py), reset at each job."""

    max_consecutive_failures: int = 5  # connection failures / timeouts in a row before giving up
    max_outage_s: float = 60.0  # ... or a run of >= 2 of them lasting this long (0 = no time limit)
    connect_timeout_s: float = 5.0  # TCP/TLS connect; the read timeout is each scorer's timeout_s


@dataclass
class CalibrationConfig:
    """Offline toxicity backends mapped onto Perspective's scale (scoring/calibration.py)."""

    enabled: bool = False
    path: str = "rtp_decodingtrust"  # texts with Perspective scores; relative to data_dir unless absolute
    # where the data is: its content's sha256 is part of the identity (scoring/__init__.py, the toxicity scorer)
    data_dir: Optional[str] = transport(None)  # default: the job's paths.data_dir (else VALUE_HARMS_DATA_DIR)
    cache_dir: Optional[str] = transport(None)  # fitted maps; default: the job's paths.cache_dir
    folds: int = 5  # k of the cross-validation that measures the held-out agreement
    seed: int = 0
    backends: List[str] = field(default_factory=lambda: ["profanity_check", "detoxify"])


@dataclass
class ScorerConfig:
    """How each kind of harm is scored. `toxicity` names the backend for toxicity; the others are
    used by the benchmarks that need them (regard: HolisticBiasR, judge: HEx-PHI / BeaverTails).
    A new scorer's section is one more field here, its transport settings marked (see `transport`)."""

    name: str = transport(MISSING)  # the preset's name: its settings, not its name, are the identity
    toxicity: str = "perspective"  # perspective | detoxify | profanity_check
    # Per-text fallback chain when the primary toxicity backend is unavailable or gives up.
    fallback: List[str] = field(default_factory=lambda: ["detoxify", "profanity_check"])
    perspective: PerspectiveConfig = field(default_factory=PerspectiveConfig)
    detoxify: DetoxifyConfig = field(default_factory=DetoxifyConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    regard: RegardConfig = field(default_factory=RegardConfig)
    cache: bool = transport(True)
    breaker: BreakerConfig = transport(factory=BreakerConfig)
    # One cheap request to the network scorer before generation (scoring.probe): a judge that cannot
    # be used fails the job at once; an unreachable Perspective opens its breaker (fallback from the start).
    probe: bool = transport(True)
    probe_timeout_s: float = transport(10.0)
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


@dataclass
class VllmConfig:
    """generation.engine=vllm | openai: an OpenAI-compatible server (eval/engines/)."""

    # A running server (".../v1"); None = the project starts one from `python` for the run and stops it.
    base_url: Optional[str] = None
    python: str = ".venv-engine/bin/python"  # the engine environment (`make engine-env`); relative to the project
    host: str = "127.0.0.1"
    port: Optional[int] = None  # None = a free port
    dtype: Optional[str] = None  # None = model.dtype; part of the cache key
    max_model_len: Optional[int] = 2048  # null = the model's own context
    # >= one step's prompts: seeded requests need it on CPU (docs/DECISIONS.md "Generation engines")
    max_num_batched_tokens: int = 16384
    max_loras: Optional[int] = None  # adapters per batch; None = those of the first pass (at least 1)
    max_lora_rank: Optional[int] = None  # None = the largest rank of the first pass's adapters (at least 8)
    gpu_memory_utilization: Optional[float] = None
    cpu_kvcache_gib: int = 2  # VLLM_CPU_KVCACHE_SPACE, CPU builds only
    extra_args: List[str] = field(default_factory=list)  # more `vllm serve` arguments, verbatim
    # Base-model rows of a pass with adapters go through a zero LoRA adapter (exactly the base output):
    # vllm-cpu 0.32.0 leaks adapter deltas into base rows batched with LoRA rows (DECISIONS "Generation engines").
    base_as_adapter: bool = True
    served_model: Optional[str] = None  # a running server's base model name; None = its one base model
    check_model: bool = True  # a running server must serve model.pretrained / the resolved model folder
    api_key_env: str = "VLLM_API_KEY"  # a running server's key, read from this variable only
    concurrency: int = 16  # requests in flight
    batch_size: int = 64  # prompts per cache commit (all their samples in flight together)
    startup_timeout_s: float = 900.0
    timeout_s: float = 600.0  # read timeout of one request
    max_retries: int = 4
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0


@dataclass
class GenerationConfig:
    # hf: transformers.generate + PEFT in this process (default). vllm: a vLLM server (started here or
    # at generation.vllm.base_url). openai: any OpenAI-compatible completions server at base_url.
    engine: str = "hf"
    batch_size: int = 8  # prompts per forward pass (x num_samples rows)
    seed: int = 42
    cache: bool = True  # reuse generations keyed by model, adapter, input, settings, seed and engine
    num_threads: Optional[int] = None
    progress: bool = True
    vllm: VllmConfig = field(default_factory=VllmConfig)
    # The precision the evaluated model generates in (None = model.dtype, which training also uses). The paper
    # trained in float32 and generated with vLLM on Llama-2-7b-hf, whose config declares float16.
    dtype: Optional[str] = None


@dataclass
class AuditConfig:
    """`mode=audit`: score the VIM training texts (the paper found 5 of 8K+ flagged)."""

    limit: Optional[int] = None
    threshold: float = 0.5
    show: int = 5  # most toxic texts listed (by id) in the report
