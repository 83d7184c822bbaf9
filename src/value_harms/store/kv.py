"""One sqlite key -> text store for the per-text caches (generations, scores).

A `KVStore` is one table in one sqlite file, opened in WAL mode (readers never block the writer,
several processes may share the file) with a busy timeout, and usable from several threads (one
connection guarded by a lock). A file that is not a usable sqlite database (truncated, garbled) is
moved aside to `<name>.corrupt-<time>` with its -wal / -shm files, with one warning, and a fresh
store is started: a cache only ever costs recomputation, never a failed run.

The table layout is given by a `Table`, so each cache keeps the exact on-disk schema it had before
the two caches shared this code (`gen(key, value)` and `scores(scorer_id, key, score, created)`):
existing cache files stay valid and no cache version had to change.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

CHUNK = 500  # sqlite's default host-parameter limit is 999: stay well under it


@dataclass(frozen=True)
class Table:
    """Column names of one key -> value table. `namespace`: an optional leading key column (e.g. the
    scorer id), so one file holds several independent key spaces; `created`: an optional column
    holding the write time (seconds since the epoch)."""

    name: str
    value: str = "value"
    namespace: str | None = None
    created: str | None = None

    def ddl(self) -> str:
        if self.namespace is None:
            cols = ["key TEXT PRIMARY KEY", f"{self.value} TEXT NOT NULL"]
        else:
            cols = [f"{self.namespace} TEXT NOT NULL", "key TEXT NOT NULL", f"{self.value} TEXT NOT NULL"]
        if self.created:
            cols.append(f"{self.created} REAL NOT NULL")
        if self.namespace is not None:
            cols.append(f"PRIMARY KEY ({self.namespace}, key)")
        return f"CREATE TABLE IF NOT EXISTS {self.name} ({', '.join(cols)})"


class KVStore:
    """A sqlite table of key -> text; thread-safe, shared across processes, self-healing when corrupt."""

    def __init__(self, path: str | os.PathLike, table: Table, *, what: str = "cache", timeout: float = 60.0):
        self.path = Path(os.path.expanduser(str(path)))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.table = table
        self.what = what
        self.timeout = timeout
        self._lock = threading.Lock()
        try:
            self._conn = self._open()
        except sqlite3.DatabaseError as exc:
            self._move_aside(exc)
            self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), timeout=self.timeout, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(self.table.ddl())
            # Touch the table so a damaged file fails here, not at the first lookup.
            conn.execute(f"SELECT count(*) FROM {self.table.name}").fetchone()
            conn.commit()
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def _move_aside(self, exc: Exception) -> Path:
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
        log.warning(
            "%s %s is damaged, not a usable sqlite database (%s): moved to %s, starting a fresh one",
            self.what,
            self.path,
            exc,
            aside.name,
        )
        return aside

    def get_many(self, keys: Iterable[str], namespace: str | None = None) -> dict[str, str]:
        """Stored values of the given keys (absent keys are absent from the result)."""
        t = self.table
        uniq = list(dict.fromkeys(keys))
        where, lead = (f"{t.namespace}=? AND ", [namespace]) if t.namespace else ("", [])
        out: dict[str, str] = {}
        with self._lock:
            for i in range(0, len(uniq), CHUNK):
                part = uniq[i : i + CHUNK]
                q = f"SELECT key, {t.value} FROM {t.name} WHERE {where}key IN ({','.join('?' * len(part))})"
                out.update(self._conn.execute(q, [*lead, *part]).fetchall())
        return out

    def put_many(self, items: Iterable[tuple[str, str]], namespace: str | None = None) -> int:
        """Insert or replace (key, value) pairs in one transaction; returns how many were written."""
        t = self.table
        cols = ([t.namespace] if t.namespace else []) + ["key", t.value] + ([t.created] if t.created else [])
        now = time.time()
        rows = [([namespace] if t.namespace else []) + [k, v] + ([now] if t.created else []) for k, v in items]
        if not rows:
            return 0
        q = f"INSERT OR REPLACE INTO {t.name} ({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})"
        with self._lock, self._conn:
            self._conn.executemany(q, rows)
        return len(rows)

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute(f"SELECT count(*) FROM {self.table.name}").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
