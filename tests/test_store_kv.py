"""store.kv: the one sqlite key -> text store behind the generation cache and the score cache."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading

import pytest

from value_harms.eval.generation import GenerationCache
from value_harms.scoring.base import Score
from value_harms.scoring.cache import ScoreCache
from value_harms.store import kv


def _gen_roundtrip(cache):
    cache.put_many({"k": ["a", "b"]})
    return cache.get_many(["k"]) == {"k": ["a", "b"]}


def _score_roundtrip(cache):
    cache.put_many("s", [("k", Score(0.5, "s"))])
    return cache.get_many("s", ["k"]) == {"k": Score(0.5, "s")}


CACHES = [(GenerationCache, _gen_roundtrip, "generation cache"), (ScoreCache, _score_roundtrip, "score cache")]


@pytest.mark.parametrize("cls,roundtrip,what", CACHES, ids=["generation", "score"])
def test_both_caches_move_a_corrupt_file_aside(tmp_path, caplog, cls, roundtrip, what):
    db = tmp_path / "c.sqlite"
    db.write_bytes(b"not a database " * 300)
    with caplog.at_level(logging.WARNING):
        cache = cls(db)
    aside = sorted(p.name for p in tmp_path.glob("c.sqlite.corrupt-*"))
    assert len(aside) == 1 and (tmp_path / aside[0]).read_bytes().startswith(b"not a database"), aside
    assert f"{what} {db} is damaged" in caplog.text
    assert roundtrip(cache)
    cache.close()


@pytest.mark.parametrize("cls,roundtrip,what", CACHES, ids=["generation", "score"])
def test_both_caches_work_from_several_threads(tmp_path, cls, roundtrip, what):
    cache = cls(tmp_path / "c.sqlite")
    results, errors = [], []

    def work():
        try:
            results.append(roundtrip(cache))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [True] * 4
    cache.close()


def test_cache_files_written_before_the_shared_store_stay_readable(tmp_path):
    """The exact schemas the two caches created on their own are what store.kv opens: no entry is lost."""
    gen, scores = tmp_path / "generations.sqlite", tmp_path / "scores.sqlite"
    with sqlite3.connect(gen) as conn:
        conn.execute("CREATE TABLE gen (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO gen VALUES ('k', '[\"old text\"]')")
    with sqlite3.connect(scores) as conn:
        conn.execute(
            "CREATE TABLE scores (scorer_id TEXT NOT NULL, key TEXT NOT NULL, score TEXT NOT NULL,"
            " created REAL NOT NULL, PRIMARY KEY (scorer_id, key))"
        )
        conn.execute("INSERT INTO scores VALUES ('s', 'k', ?, 0)", [json.dumps(Score(0.25, "s").to_dict())])
    assert GenerationCache(gen).get_many(["k"]) == {"k": ["old text"]}
    assert ScoreCache(scores).get_many("s", ["k"]) == {"k": Score(0.25, "s")}


def test_kv_namespaces_are_separate_and_chunked(tmp_path):
    store = kv.KVStore(tmp_path / "n.sqlite", kv.Table("t", namespace="ns", created="at"))
    keys = [f"k{i}" for i in range(kv.CHUNK * 2 + 7)]  # more than one IN (...) chunk
    assert store.put_many(((k, k.upper()) for k in keys), namespace="a") == len(keys)
    assert store.get_many(keys, namespace="a") == {k: k.upper() for k in keys}
    assert store.get_many(keys, namespace="b") == {}
    assert len(store) == len(keys)
    store.close()


def test_one_config_getter_reads_every_config_shape():
    """config.access.cfg_get is the getter of models, benchmark loaders and scorers alike."""
    from dataclasses import dataclass

    from omegaconf import OmegaConf

    from value_harms.config.access import cfg_get
    from value_harms.eval.benchmarks import loaders
    from value_harms.models import loading
    from value_harms.scoring import base

    @dataclass
    class Node:
        qps: float | None = None
        name: str = "x"

    for node in ({"name": "x", "qps": None}, OmegaConf.structured(Node), Node()):
        assert cfg_get(node, "name") == "x"
        assert cfg_get(node, "qps", 2.0) == 2.0  # None means "use the default"
        assert cfg_get(node, "absent", 3) == 3
    assert cfg_get(None, "name", "d") == "d"
    assert base.cfg_get is cfg_get and loaders._get is cfg_get and loading.cfg_get is cfg_get
