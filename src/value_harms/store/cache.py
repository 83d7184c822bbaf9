"""One cache interface: `cache.get(request, compute)` returns the value stored for `request`, else
`compute()`'s value, stored (HELM's `Cache.get(request, compute)`). The key is the request itself: a
JSON-able payload hashed by store.hashing (or a str, used as is).

Three places a value can live, one interface:
- `MemoCache`: this process only (objects as they are; a multirun hashes a weight file once);
- `KVCache`: a namespace of the user's sqlite cache file `<cache_dir>/caches.sqlite` (store.kv: WAL,
  shared by processes, a corrupt file moved aside) for values computed again by every process (content
  hashes of files, fitted calibration maps);
- `FileCache`: one JSON file per entry in a folder, for values kept beside a stored result in the store
  (the PVQ alignment check of an adapter): a store may sit on a network filesystem where sqlite's WAL
  does not work, and other jobs find these files by name.

The guarantees are the same for all: a damaged entry (unreadable JSON, or a value `check` rejects) is
recomputed with one warning; a cache that cannot be written (a read-only folder) costs a recompute next
time, never a failed job. None is never stored (it reads as a miss).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from value_harms.store import hashing
from value_harms.store.files import atomic_write_json
from value_harms.store.kv import KVStore, Table

log = logging.getLogger(__name__)

T = TypeVar("T")
CACHE_FILE = "caches.sqlite"
_TABLE = Table("entries", namespace="cache", created="created")


class Cache(Generic[T]):
    """`get(request, compute)`; subclasses say where a value lives (`_read`, `_write`)."""

    def __init__(self, what: str, *, check: Callable[[Any], Any] | None = None, key_length: int = 64) -> None:
        self.what = what
        self.check = check  # raises ValueError / KeyError / TypeError on a damaged value
        self.key_length = key_length

    def key(self, request: Any) -> str:
        """The entry's key: a str request as is, else the sha256 of its canonical JSON (store.hashing)."""
        return request if isinstance(request, str) else hashing.digest(request, self.key_length)

    def lookup(self, request: Any) -> T | None:
        """The stored value of `request`, or None (a miss, or a damaged entry: warned)."""
        key = self.key(request)
        try:
            value = self._read(key)
            if value is not None and self.check is not None:
                self.check(value)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s entry %s is damaged (%s): recomputing", self.what, self._where(key), exc)
            return None
        return value

    def put(self, request: Any, value: T) -> None:
        """Store `value` for `request`; a failed write is a warning (it costs a recompute next time)."""
        if value is None:
            return
        key = self.key(request)
        try:
            self._write(key, value)
        except (OSError, sqlite3.Error) as exc:
            log.warning("%s %s not written (%s): it is computed again next time", self.what, self._where(key), exc)

    def get(self, request: Any, compute: Callable[[], T]) -> T:
        hit = self.lookup(request)
        if hit is not None:
            return hit
        value = compute()
        self.put(request, value)
        return value

    def _read(self, key: str) -> Any:
        raise NotImplementedError

    def _write(self, key: str, value: Any) -> None:
        raise NotImplementedError

    def _where(self, key: str) -> str:
        return key


class MemoCache(Cache[T]):
    """A per-process memo (thread-safe); values are kept as they are, not copied."""

    def __init__(self, what: str, *, check: Callable[[Any], Any] | None = None, key_length: int = 64) -> None:
        super().__init__(what, check=check, key_length=key_length)
        self._values: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _read(self, key: str) -> Any:
        with self._lock:
            return self._values.get(key)

    def _write(self, key: str, value: Any) -> None:
        with self._lock:
            self._values[key] = value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def __len__(self) -> int:
        return len(self._values)


_STORES: dict[Path, KVStore | None] = {}  # one connection per sqlite file and process
_STORES_LOCK = threading.Lock()


def _kv(cache_dir: str | os.PathLike) -> KVStore | None:
    """The process's KVStore on `<cache_dir>/caches.sqlite`, or None when it cannot be opened (warned once)."""
    path = Path(os.path.expanduser(str(cache_dir))) / CACHE_FILE
    with _STORES_LOCK:
        if path not in _STORES:
            try:
                _STORES[path] = KVStore(path, _TABLE, what="cache")
            except (OSError, sqlite3.Error) as exc:
                log.warning("cache %s cannot be opened (%s): values are computed again in every process", path, exc)
                _STORES[path] = None
        return _STORES[path]


class KVCache(Cache[T]):
    """One namespace (`what`) of `<cache_dir>/caches.sqlite`; values stored as JSON."""

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        what: str,
        *,
        check: Callable[[Any], Any] | None = None,
        key_length: int = 64,
    ) -> None:
        super().__init__(what, check=check, key_length=key_length)
        self.cache_dir = cache_dir

    def _read(self, key: str) -> Any:
        kv = _kv(self.cache_dir)
        if kv is None:
            return None
        try:
            text = kv.get_many([key], namespace=self.what).get(key)
        except sqlite3.Error as exc:  # locked past the busy timeout, or a file made unreadable meanwhile
            log.warning("%s lookup failed (%s): recomputing", self.what, exc)
            return None
        return None if text is None else json.loads(text)

    def _write(self, key: str, value: Any) -> None:
        kv = _kv(self.cache_dir)
        if kv is not None:
            kv.put_many([(key, hashing.canonical_json(value))], namespace=self.what)

    def _where(self, key: str) -> str:
        return f"{key[:16]} in {Path(os.path.expanduser(str(self.cache_dir))) / CACHE_FILE}"


class FileCache(Cache[T]):
    """One JSON file per entry: `<folder>/<prefix>-<key>.json`, written atomically."""

    def __init__(
        self,
        folder: str | os.PathLike,
        prefix: str,
        what: str,
        *,
        check: Callable[[Any], Any] | None = None,
        key_length: int = 12,
    ) -> None:
        super().__init__(what, check=check, key_length=key_length)
        self.folder = Path(folder)
        self.prefix = prefix

    def path(self, request: Any) -> Path:
        """The file that holds (or will hold) the entry of `request`."""
        return self.folder / f"{self.prefix}-{self.key(request)}.json"

    def _read(self, key: str) -> Any:
        path = self.folder / f"{self.prefix}-{key}.json"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ValueError(f"unreadable: {exc}") from None
        return json.loads(text)

    def _write(self, key: str, value: Any) -> None:
        atomic_write_json(self.folder / f"{self.prefix}-{key}.json", value)

    def _where(self, key: str) -> str:
        return str(self.folder / f"{self.prefix}-{key}.json")
