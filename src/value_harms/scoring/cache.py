"""A per-text score cache (sqlite, WAL) and a scorer wrapper that consults it first.

Key: (scorer_id, sha256(context + NUL + text)) -> Score JSON. Only successful scores (value not
None) are stored, so a transient failure is retried by the next run instead of being frozen.
Storage is `store.kv` (shared with the generation cache): a file that is not a sqlite database is
moved aside to `<name>.corrupt-<time>` and a fresh one made.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Iterable, Sequence

from value_harms.scoring.base import Score, Scorer, check_inputs, text_key
from value_harms.store import kv

log = logging.getLogger(__name__)

_TABLE = kv.Table("scores", value="score", namespace="scorer_id", created="created")


class ScoreCache:
    """sqlite-backed per-text cache of successful scores; safe to share between threads (a
    `store.kv.KVStore`: WAL, busy timeout, a corrupt file is moved aside)."""

    def __init__(self, path: str | os.PathLike):
        self._kv = kv.KVStore(path, _TABLE, what="score cache", timeout=30)
        self.path = self._kv.path

    @staticmethod
    def key(text: str, context: str | None = None) -> str:
        return text_key(text, context)

    def get_many(self, scorer_id: str, keys: Sequence[str]) -> dict[str, Score]:
        """Cached scores for the given keys (missing keys are absent from the result)."""
        out: dict[str, Score] = {}
        for k, blob in self._kv.get_many(keys, namespace=scorer_id).items():
            try:
                out[k] = Score.from_dict(json.loads(blob))
            except (ValueError, TypeError, KeyError):
                log.warning("ignoring an unreadable cache entry for %s", scorer_id)
        return out

    def put_many(self, scorer_id: str, items: Iterable[tuple[str, Score]]) -> int:
        """Store successful scores; returns how many were written (failures are skipped)."""
        rows = [(k, json.dumps(s.to_dict())) for k, s in items if s.value is not None]
        return self._kv.put_many(rows, namespace=scorer_id)

    def __len__(self) -> int:
        return len(self._kv)

    def close(self) -> None:
        self._kv.close()


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
                raise RuntimeError(f"{self.inner.name} returned {len(fresh)} scores for {len(miss_pos)} texts")
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
