"""Result identity: one place that says which inputs make a result what it is.

A key is the sha256 of a JSON payload of *content*: weights and tokenizer (hub id + revision, or
the sha256 of local / GGUF files, or the tiny model's architecture + seed), data files (sha256 of
their bytes), the profile vector, the exact input texts, generation settings, the scorer identity
and SCHEMA_VERSION. Paths, logging, progress bars, thread counts, rate limits and timeouts are left
out on purpose: they never change a number, so they must never force a recomputation.

`train_key` is used by train.py to file an adapter AND by evaluate.py to find it again (same
function, same composed config): an ablation (`train.lora_r=4`, `vim_stage.epochs=1`, ...) can
never be picked up by a plain evaluation.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Mapping

from omegaconf import DictConfig

from value_harms.store.files import atomic_write_json, to_plain

# Bump when the meaning or layout of stored results changes: it enters every key, so results of an
# older schema are never reused (they are rebuilt by rerunning the same commands).
SCHEMA_VERSION = 2

# Trainer settings that change the trained adapter; the rest (progress bar, logging cadence,
# accelerator choice between equivalent CPUs) does not.
TRAINER_KEYS = ("precision", "max_steps", "limit_train_batches", "limit_val_batches", "val_check_interval",
                "gradient_clip_val", "deterministic", "accumulate_grad_batches")
# LoRA / run settings that change the adapter (checkpoint cadence, threads and `force` do not: a
# resumed run reproduces the uninterrupted one, see the resume guarantee in README).
TRAIN_KEYS = ("lora_r", "lora_alpha", "lora_dropout", "seed")
# Scorer settings that change scores, per backend (rate limits, retries, timeouts, caches do not).
_SCORER_KEYS = {
    "perspective": ("endpoint", "attribute"),
    "detoxify": ("variant", "checkpoint_sha256"),
    "judge": ("backend", "model", "revision", "base_url", "rubric_file", "rubric_sha256", "temperature", "top_p",
              "max_tokens", "constrained", "stand_in", "dtype"),
    "regard": ("model", "revision", "mask", "checkpoint"),
}


def digest(payload: Any, length: int = 16) -> str:
    """sha256 (hex, first `length` chars) of a JSON-able payload with sorted keys."""
    blob = json.dumps(to_plain(payload), sort_keys=True, default=str, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


# --------------------------------------------------------------------------------------------------
# Content hashes of files, remembered per process by (path, size, mtime) so a multirun hashes a
# multi-GB weight file once, and persisted in the user cache so the next process does not either.

_HASHES: dict[tuple, str] = {}
_HASH_LOCK = threading.Lock()
_PERSIST_NAME = "content_hashes.json"


def _stamp(p: Path) -> tuple:
    files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    return tuple((str(f.relative_to(p)) if p.is_dir() else f.name, f.stat().st_size, f.stat().st_mtime_ns)
                 for f in files)


def content_sha256(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                   include: Iterable[str] | None = None) -> str:
    """sha256 of a file's bytes, or of a folder's files (relative names + bytes, sorted by name).
    `include`: only folder files whose name ends with one of these suffixes (e.g. weights and
    tokenizer files of a model folder, not its README)."""
    p = Path(os.path.expanduser(str(path))).resolve()
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    suffixes = tuple(include) if include else None
    stamp = (str(p), suffixes, _stamp(p))
    key = hashlib.sha256(json.dumps(stamp, default=str).encode()).hexdigest()
    with _HASH_LOCK:
        if key in _HASHES:
            return _HASHES[key]
    persisted = _load_persisted(cache_dir)
    if key in persisted:
        _HASHES[key] = persisted[key]
        return persisted[key]
    h = hashlib.sha256()
    files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            if suffixes and not f.name.endswith(suffixes):
                continue
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    value = h.hexdigest()
    with _HASH_LOCK:
        _HASHES[key] = value
    _save_persisted(cache_dir, key, value)
    return value


def content_id(path: str | os.PathLike, length: int = 16) -> str:
    """A short id of a file's content: the first `length` hex characters of `content_sha256` (for a
    single file, the same value the former `files.file_fingerprint` gave, so keys built from it hold)."""
    return content_sha256(path)[:length]


def _load_persisted(cache_dir) -> dict[str, str]:
    if not cache_dir:
        return {}
    try:
        return json.loads((Path(os.path.expanduser(str(cache_dir))) / _PERSIST_NAME).read_text())
    except (OSError, ValueError):
        return {}


def _save_persisted(cache_dir, key: str, value: str) -> None:
    if not cache_dir:
        return
    try:
        data = _load_persisted(cache_dir)
        data[key] = value
        atomic_write_json(Path(os.path.expanduser(str(cache_dir))) / _PERSIST_NAME, data)
    except OSError:  # a read-only cache only costs a re-hash next time
        pass


# --------------------------------------------------------------------------------------------------
# Base model identity

_MODEL_FILES = (".safetensors", ".bin", ".json", ".model", ".txt", ".gguf", ".tiktoken")


def base_identity(model_cfg: Any, cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """What the base weights and tokenizer ARE, by content:
    - tiny: its architecture + seed + builder version (the weights are a pure function of them);
    - gguf: sha256 of the GGUF file (weights and tokenizer both live in it);
    - hub, local folder: sha256 of its weight / config / tokenizer files;
    - hub id: the id + revision (a pinned commit names content; an unpinned `main` is recorded as
      such and moves with the hub - pin model.revision for reproducible stores).
    Plus the dtype the weights are loaded in. Never the config's `name`."""
    from value_harms.models import loading

    m = to_plain(model_cfg) if not isinstance(model_cfg, Mapping) else dict(model_cfg)
    source = m.get("source")
    ident: dict[str, Any] = {"source": source, "dtype": m.get("dtype") or "float32"}
    if source == "tiny":
        ident["tiny"] = loading._tiny_dict(m)
        ident["builder"] = loading._TINY_BUILDER_VERSION
        ident["corpus"] = digest(list(loading.TINY_CORPUS))
    elif source == "gguf":
        ident["gguf_sha256"] = content_sha256(loading._gguf_path(m), cache_dir)
    elif source == "hub":
        pretrained = str(m.get("pretrained") or "")
        local = Path(os.path.expanduser(pretrained))
        if pretrained.startswith((".", "/", "~")) or local.is_dir():
            ident["local_sha256"] = content_sha256(local, cache_dir, include=_MODEL_FILES)
        else:
            ident["hub_id"] = pretrained
            ident["revision"] = m.get("revision") or "main"
    else:
        raise loading.ModelError(f"model.source={source!r}; expected one of {', '.join(loading.SOURCES)}")
    return ident


# --------------------------------------------------------------------------------------------------
# Training identity


def _data_identity(cfg: DictConfig, data_dir: str | None) -> dict[str, Any]:
    """The Touché arguments (or the benign instruction set) a training job reads, by content."""
    from value_harms.runtime.runs import resolve_path

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


def train_key_payload(cfg: DictConfig, profile, data_dir: str | None) -> dict[str, Any]:
    """Everything that determines the adapter of one training job (see module doc)."""
    stage = {k: v for k, v in (to_plain(cfg.vim_stage) or {}).items() if k not in ("name", "instruct")}
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


# --------------------------------------------------------------------------------------------------
# Evaluation identity


def scorer_identity(scorer_cfg: Any, measure: str) -> dict[str, Any]:
    """The part of the scorer config that changes the scores of `measure` (never secrets, rates,
    retries or timeouts). The toxicity chain's order is part of it: which backend is preferred."""
    sc = to_plain(scorer_cfg) or {}

    def pick(section: str) -> dict[str, Any]:
        d = sc.get(section) or {}
        out = {k: d.get(k) for k in _SCORER_KEYS[section] if k in d}
        for f in ("rubric_file", "checkpoint"):
            if d.get(f) and os.path.isfile(os.path.expanduser(str(d[f]))):
                out[f] = content_sha256(d[f])
        return out

    if measure == "toxicity":
        out = {"toxicity": sc.get("toxicity"), "fallback": sc.get("fallback"),
               "perspective": pick("perspective"), "detoxify": pick("detoxify")}
        cal = sc.get("calibration") or {}
        if cal.get("enabled"):  # issue 14: calibrated scores are other scores (settings + data sha256)
            from value_harms.scoring.calibration import _job_paths, calibration_settings, data_identity

            where = {**cal, "data_dir": cal.get("data_dir") or _job_paths(scorer_cfg).get("data_dir")}
            out["calibration"] = {**calibration_settings(cal), "data_sha256": data_identity(where)}
        return out
    if measure == "regard":
        return {"regard": pick("regard")}
    if measure in ("harmfulness", "flag"):
        return {"judge": pick("judge")}
    return {}


def prompts_sha256(prompts) -> str:
    """Ids, texts, categories and metadata of the prompts, in order (all of them enter metrics)."""
    h = hashlib.sha256()
    for p in prompts:
        h.update(json.dumps([p.id, p.prompt, p.category, getattr(p, "meta", None)], sort_keys=True,
                            default=str, ensure_ascii=False).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def eval_key(*, model: Mapping[str, Any], inputs: list[str], prompts_sha: str, benchmark: Any, scorer: Any,
             generation_seed: int, measure: str) -> str:
    """Everything that determines one evaluation result: the model that answers (base identity +
    adapter sha256), the exact input texts (template, mitigation, persona values, auto-mitigation
    file all end up in them), the prompts with their categories, the benchmark settings (its data
    location excluded: the prompts carry its content), the scorer identity and the seed."""
    bench = {k: v for k, v in (to_plain(benchmark) or {}).items() if k not in ("path",)}
    return digest({
        "schema": SCHEMA_VERSION, "model": dict(model),
        "inputs": hashlib.sha256("\x1e".join(inputs).encode()).hexdigest(), "prompts": prompts_sha,
        "benchmark": bench, "scorer": scorer_identity(scorer, measure), "seed": int(generation_seed),
    })
