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

from value_harms.store.files import atomic_write_json, to_plain

# Bump when the meaning or layout of stored results changes: it enters every key, so results of an
# older schema are never reused (they are rebuilt by rerunning the same commands).
SCHEMA_VERSION = 2


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
    """What says a file is unchanged without reading it: name, size, mtime, and the inode, device and ctime,
    which a copy or an in-place edit changes even when it restores size and mtime (only a deliberate forgery
    of ctime, which needs the clock, could keep an old hash)."""
    files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    out = []
    for f in files:
        st = f.stat()
        name = str(f.relative_to(p)) if p.is_dir() else f.name
        out.append((name, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_ctime_ns))
    return tuple(out)


def content_sha256(
    path: str | os.PathLike, cache_dir: str | os.PathLike | None = None, include: Iterable[str] | None = None
) -> str:
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


# --------------------------------------------------------------------------------------------------
# Training identity


# --------------------------------------------------------------------------------------------------
# Evaluation identity


def prompts_sha256(prompts) -> str:
    """Ids, texts, categories and metadata of the prompts, in order (all of them enter metrics)."""
    h = hashlib.sha256()
    for p in prompts:
        h.update(
            json.dumps(
                [p.id, p.prompt, p.category, getattr(p, "meta", None)], sort_keys=True, default=str, ensure_ascii=False
            ).encode()
        )
        h.update(b"\x1e")
    return h.hexdigest()


# Benchmark settings added after results were stored: at their default they stay out of the key, so every stored
# key holds; set to anything else, they enter it.
_LATER_BENCHMARK_DEFAULTS = {"reference_join": False}


def eval_key(
    *,
    model: Mapping[str, Any],
    inputs: list[str],
    prompts_sha: str,
    benchmark: Any,
    scorer: Mapping[str, Any],
    generation_seed: int,
) -> str:
    """Everything that determines one evaluation result: the model that answers (base identity +
    adapter sha256), the exact input texts (template, mitigation, persona values, auto-mitigation
    file all end up in them), the prompts with their categories, the benchmark settings (its data
    location excluded: the prompts carry its content), the scorer identity (value_harms.scoring.identity)
    and the seed."""
    bench = {
        k: v
        for k, v in (to_plain(benchmark) or {}).items()
        if k not in ("path",) and not (k in _LATER_BENCHMARK_DEFAULTS and v == _LATER_BENCHMARK_DEFAULTS[k])
    }
    return digest(
        {
            "schema": SCHEMA_VERSION,
            "model": dict(model),
            "inputs": hashlib.sha256("\x1e".join(inputs).encode()).hexdigest(),
            "prompts": prompts_sha,
            "benchmark": bench,
            "scorer": dict(scorer),
            "seed": int(generation_seed),
        }
    )
