"""One cache interface (store.cache: `get(request, compute)`) over the process memo, the user's sqlite cache
and files in the store; one atomic writer (store.files) for every write-then-rename."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest

from value_harms.store import cache as K
from value_harms.store import files, hashing, identity
from value_harms.store.kv import KVStore


class Counter:
    """A compute function that counts its calls."""

    def __init__(self, value):
        self.value, self.calls = value, 0

    def __call__(self):
        self.calls += 1
        return self.value


def _kv(cache_dir: Path) -> KVStore:
    return KVStore(cache_dir / K.CACHE_FILE, K._TABLE)


def test_kv_cache_computes_once_across_instances_and_keys_by_request(tmp_path):
    c = Counter({"x": [1, 2], "s": "ä"})
    req = {"data": "abc", "n": 1}
    assert K.KVCache(tmp_path, "demo").get(req, c) == c.value and c.calls == 1
    assert K.KVCache(tmp_path, "demo").get(req, c) == c.value and c.calls == 1  # read back, not computed
    assert K.KVCache(tmp_path, "other").get(req, c) == c.value and c.calls == 2  # namespaces are apart
    assert K.KVCache(tmp_path, "demo").get({"data": "abd", "n": 1}, c) and c.calls == 3
    kv = _kv(tmp_path)
    assert kv.get_many([hashing.json_sha256(req)], namespace="demo") == {
        hashing.json_sha256(req): hashing.canonical_json(c.value)
    }
    kv.close()


def test_damaged_entries_are_recomputed_with_a_warning(tmp_path, caplog):
    req = {"k": 1}
    kv = _kv(tmp_path)
    kv.put_many([(hashing.json_sha256(req), "{not json")], namespace="demo")
    c = Counter({"x": [0.0, 1.0], "y": [0.0, 1.0]})
    with caplog.at_level(logging.WARNING):
        assert K.KVCache(tmp_path, "demo").get(req, c) == c.value and c.calls == 1
    assert "demo entry" in caplog.text and "damaged" in caplog.text
    # the recomputed value replaced the damaged one
    assert json.loads(kv.get_many([hashing.json_sha256(req)], namespace="demo")[hashing.json_sha256(req)]) == c.value
    # a value the cache's check rejects is damaged too (a calibration record without its knots)
    kv.put_many([(hashing.json_sha256(req), json.dumps({"x": [0.0]}))], namespace="checked")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        got = K.KVCache(tmp_path, "checked", check=lambda v: v["y"]).get(req, c)
    assert got == c.value and c.calls == 2 and "damaged" in caplog.text
    kv.close()


def test_a_cache_that_cannot_be_written_costs_a_recompute_not_a_failure(tmp_path, caplog):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")  # fails for root too, unlike chmod
    c = Counter("v")
    with caplog.at_level(logging.WARNING):
        assert K.KVCache(blocked, "demo").get({"a": 1}, c) == "v"
        assert K.KVCache(blocked, "demo").get({"a": 1}, c) == "v"
        assert K.FileCache(blocked, "alignment", "alignment check").get({"a": 1}, c) == "v"
    assert c.calls == 3 and "cannot be opened" in caplog.text and "not written" in caplog.text
    assert identity.content_sha256(blocked, blocked / "cache") == hashing.file_sha256(blocked)


def test_file_cache_keeps_one_json_file_per_entry(tmp_path, caplog):
    fc = K.FileCache(tmp_path, "alignment", "alignment check", key_length=12)
    req = {"items": "f556b6d11c79040d", "bs": 8, "new": 32}
    path = fc.path(req)
    assert path == tmp_path / f"alignment-{identity.digest(req, 12)}.json"  # the name stored checks have
    c = Counter({"nmse": 0.5})
    assert fc.get(req, c) == c.value and fc.get(req, c) == c.value and c.calls == 1
    assert json.loads(path.read_text()) == c.value
    path.write_text('{"nmse": ')  # truncated
    with caplog.at_level(logging.WARNING):
        assert fc.lookup(req) is None
        assert fc.get(req, c) == c.value and c.calls == 2
    assert "damaged" in caplog.text and json.loads(path.read_text()) == c.value


def test_memo_cache_and_the_content_hash_cache(tmp_path):
    m = K.MemoCache("demo")
    c = Counter(object())
    assert m.get({"a": 1}, c) is m.get({"a": 1}, c) and c.calls == 1
    m.clear()
    m.get({"a": 1}, c)
    assert c.calls == 2
    # content hashes: remembered in the process and in the user's cache, keyed on the file's stamp
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    want = hashing.sha256_bytes(b"weights")
    assert identity.content_sha256(f, tmp_path / "c") == want
    kv = _kv(tmp_path / "c")
    stored = kv.get_many(
        [k for (k,) in kv._conn.execute("SELECT key FROM entries WHERE cache='content_sha256'")],
        namespace="content_sha256",
    )
    assert list(stored.values()) == [json.dumps(want)]
    identity._HASHES.clear()
    assert identity.content_sha256(f, tmp_path / "c") == want
    kv.close()


def test_atomic_path_keeps_the_old_file_on_error_and_follows_the_umask(tmp_path):
    target = tmp_path / "sub" / "ckpt.pt"
    with files.atomic_path(target) as tmp:
        tmp.write_bytes(b"one")
    assert target.read_bytes() == b"one"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~files.umask()
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"one" and sorted(p.name for p in target.parent.iterdir()) == ["ckpt.pt"]
    files.atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"


def test_atomic_dir_without_replace_keeps_the_first_writers_folder(tmp_path):
    out = tmp_path / "zero-lora"
    with files.atomic_dir(out, replace=False) as d:
        (d / "a").write_text("first")
    with files.atomic_dir(out, replace=False) as d:
        (d / "a").write_text("second")
    assert (out / "a").read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["zero-lora"]


def test_two_calibration_writers_never_share_a_temporary_file(tmp_path):
    """The calibration cache wrote `<key>.tmp`, one fixed name two jobs could both write; its entries are
    now sqlite rows, each written whole in one transaction: the last writer's value, never a mix."""
    a, b = K.KVCache(tmp_path, "calibration"), K.KVCache(tmp_path, "calibration")
    a.put({"k": 1}, {"x": [0.0], "y": [0.0]})
    b.put({"k": 1}, {"x": [1.0], "y": [1.0]})
    assert a.lookup({"k": 1}) == {"x": [1.0], "y": [1.0]}
