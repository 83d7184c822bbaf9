"""A per-text score cache (sqlite, WAL) and a scorer wrapper that consults it first.

Key: (scorer_id, sha256(context + NUL + text)) -> Score JSON. Only successful scores (value not
None) are stored, so a transient failure is retried by the next run instead of being frozen.
A file that is not a sqlite database is moved aside to `<name>.corrupt-<time>` and a fresh one made.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable, Sequence

from value_harms.scoring.base import Score, Scorer, check_inputs, text_key

log = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS scores ("
    " scorer_id TEXT NOT NULL, key TEXT NOT NULL, score TEXT NOT NULL, created REAL NOT NULL,"
    " PRIMARY KEY (scorer_id, key))"
)
_CHUNK = 500  # sqlite's default host-parameter limit is 999: stay well under it


class ScoreCache:
    """sqlite-backed per-text cache of successful scores; safe to share between threads."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(os.path.expanduser(str(path)))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = self._open()
        except sqlite3.DatabaseError as exc:
            self._conn = self._replace_corrupt(exc)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SCHEMA)
            # Touch the table so a damaged file fails here, not at the first lookup.
            conn.execute("SELECT count(*) FROM scores").fetchone()
            conn.commit()
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def _replace_corrupt(self, exc: Exception) -> sqlite3.Connection:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        os.replace(self.path, aside)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                os.replace(side, aside.with_name(aside.name + suffix))
        log.warning("score cache %s is not a usable sqlite database (%s): moved to %s, starting "
                    "a fresh cache", self.path, exc, aside.name)
        return self._open()

    @staticmethod
    def key(text: str, context: str | None = None) -> str:
        return text_key(text, context)

    def get_many(self, scorer_id: str, keys: Sequence[str]) -> dict[str, Score]:
        """Cached scores for the given keys (missing keys are absent from the result)."""
        out: dict[str, Score] = {}
        uniq = list(dict.fromkeys(keys))
        with self._lock:
            for i in range(0, len(uniq), _CHUNK):
                part = uniq[i : i + _CHUNK]
                marks = ",".join("?" * len(part))
                rows = self._conn.execute(
                    f"SELECT key, score FROM scores WHERE scorer_id=? AND key IN ({marks})",
                    [scorer_id, *part],
                ).fetchall()
                for k, blob in rows:
                    try:
                        out[k] = Score.from_dict(json.loads(blob))
                    except (ValueError, TypeError, KeyError):
                        log.warning("ignoring an unreadable cache entry for %s", scorer_id)
        return out

    def put_many(self, scorer_id: str, items: Iterable[tuple[str, Score]]) -> int:
        """Store successful scores; returns how many were written (failures are skipped)."""
        now = time.time()
        rows = [
            (scorer_id, k, json.dumps(s.to_dict()), now) for k, s in items if s.value is not None
        ]
        if not rows:
            return 0
        with self._lock:
            with self._conn:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO scores (scorer_id, key, score, created) VALUES (?,?,?,?)",
                    rows,
                )
        return len(rows)

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM scores").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass


class CachedScorer(Scorer):
    """Look texts up in a `ScoreCache` first; the inner scorer sees only the misses."""

    def __init__(self, inner: Scorer, cache: ScoreCache, scorer_id: str | None = None):
        self.inner = inner
        self.cache = cache
        self.scorer_id = scorer_id or inner.cache_id
        self.name = inner.name
        self.measure = inner.measure
        self.hits = 0
        self.misses = 0

    @property
    def cache_id(self) -> str:
        return self.scorer_id

    def score(self, texts: list[str], contexts: list[str] | None = None) -> list[Score]:
        check_inputs(texts, contexts)
        keys = [text_key(t, None if contexts is None else contexts[i]) for i, t in enumerate(texts)]
        found = self.cache.get_many(self.scorer_id, keys)
        miss_pos = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(texts) - len(miss_pos)
        self.misses += len(miss_pos)
        result: list[Score | None] = [found.get(k) for k in keys]
        if miss_pos:
            sub_texts = [texts[i] for i in miss_pos]
            sub_ctx = None if contexts is None else [contexts[i] for i in miss_pos]
            fresh = self.inner.score(sub_texts, sub_ctx)
            if len(fresh) != len(miss_pos):
                raise RuntimeError(f"{self.inner.name} returned {len(fresh)} scores "
                                   f"for {len(miss_pos)} texts")
            for i, s in zip(miss_pos, fresh):
                result[i] = s
            self.cache.put_many(self.scorer_id, ((keys[i], s) for i, s in zip(miss_pos, fresh)))
        return result  # type: ignore[return-value]  # every position is filled above

    def provenance(self) -> dict:
        prov = dict(self.inner.provenance())
        prov["cache"] = {"path": str(self.cache.path), "hits": self.hits, "misses": self.misses}
        return prov

    def close(self) -> None:
        self.inner.close()
        self.cache.close()
