"""store.records.EvalRecord: the typed results.json record, and readers that never parse store paths."""

from __future__ import annotations

import json
import shutil

import pytest

from value_harms.analysis import tidy
from value_harms.store import layout, records
from value_harms.store.identity import SCHEMA_VERSION


def _result(**over):
    """A results.json object with every key the evaluate writers put in it."""
    res = {
        "schema_version": SCHEMA_VERSION,
        "key": "0123456789abcdef",
        "train_key": None,
        "benchmark": {
            "name": "rtp",
            "version": "1",
            "measure": "toxicity",
            "n_prompts": 2,
            "prompts_sha256": "ab" * 32,
            "settings": {"name": "rtp"},
        },
        "model": {
            "name": "tiny",
            "base": "tiny:tiny",
            "revision": None,
            "dtype": "float32",
            "adapter_dir": None,
            "adapter_sha256": None,
        },
        "profile": {"name": "vanilla", "values": {}},
        "baseline": "vanilla",
        "stage": "none",
        "mitigation": {"name": "none"},
        "prefix": "",
        "generation": {"generated": 2, "cached": 0},
        "scorer": {"measure": "toxicity", "by_scorer": {"profanity_check": 2}, "missing": 0},
        "metrics": {"overall": {"expected_max_toxicity": 0.25, "n": 2}},
        "seeds": {"generation": 42, "benchmark": 0},
        "git": None,
        "seconds": 1.5,
    }
    res.update(over)
    return res


def test_record_round_trips_store_and_run_copies():
    stored = _result(status="complete")
    rec = records.EvalRecord.from_json(stored)
    assert rec.to_json() == stored  # same keys, same values (files are written with sorted keys)
    assert (rec.benchmark_name, rec.measure, rec.profile_name, rec.mitigation_name) == (
        "rtp",
        "toxicity",
        "vanilla",
        "none",
    )
    assert rec.overall["expected_max_toxicity"] == 0.25 and rec.complete
    run_copy = _result(
        status="partial", store_dir="/s", run_dir="/r", skipped=True, alignment={"greedy": {}}
    )  # a key the record does not name travels verbatim
    again = records.EvalRecord.from_json(run_copy)
    assert again.to_json() == run_copy and not again.complete and again.extra == {"alignment": {"greedy": {}}}


def test_record_refuses_what_it_cannot_read_in_one_line():
    with pytest.raises(records.RecordError, match="no 'metrics' object"):
        records.EvalRecord.from_json({"key": "x"}, "a/results.json")
    with pytest.raises(records.RecordError, match=f"schema {SCHEMA_VERSION + 1} is newer") as exc:
        records.EvalRecord.from_json(_result(schema_version=SCHEMA_VERSION + 1))
    assert "\n" not in str(exc.value)


def test_write_result_writes_through_the_record(tmp_path):
    folder = tmp_path / "r"
    assert records.write_result(folder, _result(), [{"id": "1"}], missing=0) == "complete"
    back = records.read_result(folder)
    assert back.complete and back.result == _result(status="complete")
    with pytest.raises(records.RecordError):
        records.write_result(tmp_path / "bad", {"key": "x"}, [], missing=0)


def test_tidy_counts_copies_once_after_the_store_is_moved_and_renamed(tmp_path):
    """tidy identifies a result by its record, not by its path: a store moved to another machine and
    whose folders were renamed still matches the run folder that names its old location."""
    res = _result()
    old = layout.eval_dir(
        tmp_path / "old_store",
        model="tiny",
        variant="vanilla",
        stage="none",
        profile="vanilla",
        benchmark="rtp",
        mitigation="none",
        key=res["key"],
    )
    records.write_result(old, res, [{"id": "1"}], missing=0)
    run = tmp_path / "runs" / "job0"
    run.mkdir(parents=True)
    (run / "results.json").write_text(
        json.dumps(_result(status="complete", store_dir=str(old), run_dir=str(run), skipped=False))
    )
    moved = tmp_path / "elsewhere" / "renamed"  # not <...>/eval/<model>/.../<key> any more
    shutil.move(str(old), str(moved))
    found = tidy.find_results([tmp_path / "elsewhere", tmp_path / "runs"])
    assert found == [moved / "results.json"]
    other = _result(profile={"name": "power", "values": {}})  # same key, another profile: another result
    records.write_result(tmp_path / "elsewhere" / "p2", other, [{"id": "1"}], missing=0)
    assert len(tidy.find_results([tmp_path / "elsewhere", tmp_path / "runs"])) == 2
    copy = tmp_path / "second_store" / "x"  # the same stored result given twice (a copy of the store)
    shutil.copytree(moved, copy)
    assert len(tidy.find_results([tmp_path / "elsewhere", tmp_path / "runs", tmp_path / "second_store"])) == 2


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_stored_files_and_folders_follow_the_umask(tmp_path, mask):
    """Atomic writes give the mode a plain open() / mkdir() gives under the umask, not mkstemp's 0600 / 0700, so a
    team sharing a store can read each other's results."""
    import os
    import stat

    from value_harms.store import files

    old = os.umask(mask)
    files._UMASK = None
    try:
        files.atomic_write_json(tmp_path / "results.json", {"a": 1})
        with files.atomic_dir(tmp_path / "adapter") as d:
            (d / "w.bin").write_bytes(b"x")
        files.mark_complete(tmp_path / "adapter", {"n": 1})
    finally:
        os.umask(old)
        files._UMASK = None
    assert stat.S_IMODE((tmp_path / "results.json").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "adapter").stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((tmp_path / "adapter" / "COMPLETE").stat().st_mode) == 0o666 & ~mask
