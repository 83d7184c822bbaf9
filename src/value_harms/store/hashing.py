"""Content hashes: the one place that turns bytes, texts, JSON payloads, files and folders into sha256.

Every key of the store (train/eval keys, adapter and data hashes, the prompt set) and every cache key
is built from these functions, so two parts of the code never hash one thing two ways. Each function
keeps the exact byte layout its callers used before it existed (tests/test_hashing.py checks the values
recorded from that code): stored results and caches keep their keys.

Seeds derived by hashing (data/resumable.py `epoch_seed`, the row seeds of eval/generation.py) are not
content hashes and may hash for themselves; data/ sits below store/ in the import rules.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from value_harms.store.files import to_plain

_CHUNK = 1 << 20  # read files 1 MiB at a time: a multi-GB weight file never sits in memory


def sha256_bytes(data: bytes) -> str:
    """sha256 (hex) of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    """sha256 (hex) of a text's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_json(payload: Any, *, ascii_only: bool = False) -> str:
    """The JSON text a payload is hashed as: config nodes resolved, keys sorted, other objects as str().
    `ascii_only`: non-ASCII escaped (`\\u00fc`); the generation cache and the calibration cache were keyed
    that way, every store key with UTF-8 as is."""
    return json.dumps(to_plain(payload), sort_keys=True, default=str, ensure_ascii=ascii_only)


def json_sha256(payload: Any, *, ascii_only: bool = False) -> str:
    """sha256 (hex) of a JSON-able payload (see canonical_json)."""
    return sha256_text(canonical_json(payload, ascii_only=ascii_only))


def digest(payload: Any, length: int = 16) -> str:
    """The first `length` hex characters of json_sha256: the store's keys."""
    return json_sha256(payload)[:length]


def records_sha256(records: Iterable[bytes], end: bytes = b"\x1e") -> str:
    """sha256 over records, each followed by `end`: a list hashed so that no two lists share a hash
    by moving a boundary (the prompt sets of store.identity)."""
    h = hashlib.sha256()
    for r in records:
        h.update(r)
        h.update(end)
    return h.hexdigest()


def _update_file(h, path: str | os.PathLike) -> None:
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of one file's bytes, read in chunks."""
    h = hashlib.sha256()
    _update_file(h, path)
    return h.hexdigest()


def named_files_sha256(entries: Iterable[tuple[str, str | os.PathLike | bytes]], end: bytes = b"") -> str:
    """sha256 over (name, content) entries in the given order: for each, the name's UTF-8 bytes, NUL, the
    content (a file path, read in chunks, or bytes) and `end`. A folder, an adapter and the calibration
    data are hashed this way (folder_sha256, models.lora.adapter_sha256, scoring.calibration.data_sha256)."""
    h = hashlib.sha256()
    for name, content in entries:
        h.update(name.encode() + b"\0")
        if isinstance(content, bytes):
            h.update(content)
        else:
            _update_file(h, content)
        h.update(end)
    return h.hexdigest()


def folder_files(folder: str | os.PathLike, include: Iterable[str] | None = None) -> list[Path]:
    """A folder's files (recursively), sorted by path; with `include`, only names ending with one of these
    suffixes (e.g. a model folder's weight and tokenizer files, not its README)."""
    suffixes = tuple(include) if include else None
    files = sorted(x for x in Path(folder).rglob("*") if x.is_file())
    return [f for f in files if not suffixes or f.name.endswith(suffixes)]


def folder_sha256(folder: str | os.PathLike, include: Iterable[str] | None = None) -> str:
    """sha256 of a folder's files: relative names and bytes, sorted by path (see folder_files)."""
    root = Path(folder)
    return named_files_sha256((str(f.relative_to(root)), f) for f in folder_files(root, include))


def path_sha256(path: str | os.PathLike, include: Iterable[str] | None = None) -> str:
    """file_sha256 of a file, folder_sha256 of a folder."""
    return folder_sha256(path, include) if Path(path).is_dir() else file_sha256(path)
