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

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from value_harms.store import hashing
from value_harms.store.cache import KVCache, MemoCache
from value_harms.store.files import to_plain
from value_harms.store.hashing import digest

__all__ = [
    "SCHEMA_VERSION",
    "content_id",
    "content_sha256",
    "digest",
    "eval_key",
    "key_prompts_sha256",
    "prompt_set_sha256",
]

# Bump when the meaning or layout of stored results changes: it enters every key, so results of an
# older schema are never reused (they are rebuilt by rerunning the same commands).
SCHEMA_VERSION = 2


# --------------------------------------------------------------------------------------------------
# Content hashes of files, remembered per process so a multirun hashes a multi-GB weight file once, and
# in the user's cache (store.cache.KVCache) so the next process does not either. Both are keyed on what
# says a file is unchanged without reading it (_stamp).

_HASHES: MemoCache[str] = MemoCache("content hash")


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


def _is_sha256(value: Any) -> None:
    if not (isinstance(value, str) and len(value) == 64):
        raise ValueError(f"not a sha256: {value!r}")


def content_sha256(
    path: str | os.PathLike, cache_dir: str | os.PathLike | None = None, include: Iterable[str] | None = None
) -> str:
    """sha256 of a file's bytes, or of a folder's files (relative names + bytes, sorted by name: store.hashing
    path_sha256). `include`: only folder files whose name ends with one of these suffixes (e.g. weights and
    tokenizer files of a model folder, not its README)."""
    p = Path(os.path.expanduser(str(path))).resolve()
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    suffixes = tuple(include) if include else None
    request = {"path": str(p), "include": suffixes, "stamp": _stamp(p)}

    def compute() -> str:
        if not cache_dir:
            return hashing.path_sha256(p, suffixes)
        return KVCache(cache_dir, "content_sha256", check=_is_sha256).get(
            request, lambda: hashing.path_sha256(p, suffixes)
        )

    return _HASHES.get(request, compute)


def content_id(path: str | os.PathLike, length: int = 16) -> str:
    """A short id of a file's content: the first `length` hex characters of `content_sha256` (for a
    single file, the same value the former `files.file_fingerprint` gave, so keys built from it hold)."""
    return content_sha256(path)[:length]


# --------------------------------------------------------------------------------------------------
# Evaluation identity


def prompt_set_sha256(prompts) -> str:
    """The prompt set: ids and texts, in order (results.json `benchmark.prompt_set_sha256`; a vanilla bias
    baseline is matched on it)."""
    return hashing.records_sha256(p.id.encode("utf-8") + b"\x1f" + p.prompt.encode("utf-8") for p in prompts)


def key_prompts_sha256(prompts) -> str:
    """The prompts as the evaluation key sees them: ids, texts, categories and metadata, in order (all of them
    enter metrics); `eval_key(prompts_sha=...)` and results.json `benchmark.key_prompts_sha256`. Not the same
    value as prompt_set_sha256 (which leaves categories and metadata out): both are stored, so each keeps its
    own value."""
    return hashing.records_sha256(
        hashing.canonical_json([p.id, p.prompt, p.category, getattr(p, "meta", None)]).encode() for p in prompts
    )


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
            "inputs": hashing.sha256_text("\x1e".join(inputs)),
            "prompts": prompts_sha,
            "benchmark": bench,
            "scorer": dict(scorer),
            "seed": int(generation_seed),
        }
    )
