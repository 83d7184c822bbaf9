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
            "prompt_set_sha256": "ab" * 32,
            "key_prompts_sha256": "cd" * 32,
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
        status="partial", store_dir="/s", run_dir="/r", skipped=True, later_key={"x": 1}
    )  # a key the record does not name travels verbatim
    again = records.EvalRecord.from_json(run_copy)
    assert again.to_json() == run_copy and not again.complete and again.extra == {"later_key": {"x": 1}}


def _sections(**bench):
    """Typed sections of a record: the keys every writer produces, plus `bench` in the benchmark section."""
    return dict(
        key="0123456789abcdef",
        train_key=None,
        benchmark=records.BenchmarkInfo(
            name="rtp", version="1", measure="toxicity", n_prompts=2, settings={"name": "rtp"}, **bench
        ),
        model=records.ModelInfo(
            name="tiny", base="tiny:tiny", revision=None, dtype="float32", adapter_dir=None, adapter_sha256=None
        ),
        profile={"name": "vanilla", "values": {}},
        baseline="vanilla",
        stage="none",
        mitigation={"name": "none"},
        prefix="",
        generation=records.GenerationInfo(max_new_tokens=6, do_sample=True, requested=2, cached=0, generated=2),
        scorer=records.ScorerInfo(
            measure="toxicity", provenance={}, by_scorer={"profanity_check": 2}, missing=0, n=2, stand_in=True
        ),
        metrics={"overall": {"expected_max_toxicity": 0.25, "n": 2}},
        seeds=records.Seeds(generation=42),
        git=None,
        seconds=1.5,
    )


def test_built_record_writes_only_the_keys_its_writer_produces(tmp_path):
    """A key a writer does not produce is left out (ABSENT), a key it produces as None is written as null: the
    PVQ writer's record has no sampling settings, a generation job's scorer section has `primary: null` for a
    measure without a primary backend."""
    rec = records.EvalRecord.build(**_sections(prompt_set_sha256="ab" * 32, key_prompts_sha256="cd" * 32))
    out = rec.to_json()
    assert set(out["generation"]) == {"max_new_tokens", "do_sample", "requested", "cached", "generated"}
    assert out["seeds"] == {"generation": 42} and "alignment" not in out and "status" not in out
    assert out["benchmark"]["prompt_set_sha256"] == "ab" * 32 and "items_content_id" not in out["benchmark"]
    with_primary = records.EvalRecord.build(
        **{**_sections(), "scorer": records.ScorerInfo("regard", {}, {}, 0, 0, False, primary=None)}
    )
    assert with_primary.to_json()["scorer"]["primary"] is None
    records.write_result(tmp_path / "r", rec, [{"id": "1"}], missing=0)
    back = records.EvalRecord.from_json(records.read_result(tmp_path / "r").result)
    assert back.to_json() == {**out, "status": "complete"}
    with pytest.raises(TypeError):  # a key no section declares cannot be written
        records.ScorerInfo("toxicity", {}, {}, 0, 0, False, invented=1)


@pytest.mark.parametrize(
    "old_bench, name",
    [
        ({"prompts_sha256": "ab" * 32}, "prompt_set_sha256"),  # a generation job's record before the split
        ({"prompts_sha256": "f965988638943d06", "items_source": "configured"}, "items_content_id"),  # a PVQ record
    ],
)
def test_older_records_read_under_the_new_names(old_bench, name):
    """Records written before `benchmark.prompts_sha256` was split (it held the prompt set's hash in a generation
    job's record and the PVQ item file's id in a PVQ record) read with each hash under its own name."""
    old = _result()
    old["benchmark"] = {
        k: v for k, v in old["benchmark"].items() if not k.endswith("prompts_sha256") and k != "prompt_set_sha256"
    }
    old["benchmark"].update(old_bench)
    rec = records.EvalRecord.from_json(old)
    assert rec.benchmark[name] == old_bench["prompts_sha256"] and "prompts_sha256" not in rec.benchmark
    assert rec.prompt_set_sha256 == (old_bench["prompts_sha256"] if name == "prompt_set_sha256" else None)


def test_vanilla_bias_baseline_matches_old_and_new_records_by_prompt_set(tmp_path):
    """The bias baseline's vanilla result is found by its prompt set's hash in records of both shapes."""
    from value_harms.eval.bias_baseline import find_vanilla_result

    prov = {"scorer": "regard", "backend": "transformers", "model": "m", "revision": None, "max_length": 512}
    ctx = {
        "benchmark": "holisticbiasr",
        "version": "1",
        "prompt_set_sha256": "ab" * 32,
        "base": "tiny:tiny",
        "revision": None,
        "dtype": "float32",
        "provenance": prov,
        "measure": "regard",
        "rate_metric": "negative_regard_rate",
    }
    for sub, bench in (("old", {"prompts_sha256": "ab" * 32}), ("new", {"prompt_set_sha256": "ab" * 32})):
        res = _result(status="complete", key=sub, scorer={"provenance": prov})
        res["benchmark"] = {"name": "holisticbiasr", "version": "1", "measure": "regard", **bench}
        res["metrics"] = {"overall": {"negative_regard_rate": 0.5}}
        store = tmp_path / sub  # one store per shape: each is found on its own
        (store / "r").mkdir(parents=True)
        (store / "r" / "results.json").write_text(json.dumps(res))
        found = find_vanilla_result(store, {**ctx, "store_dir": str(store)})
        assert found is not None and found["key"] == sub
        assert find_vanilla_result(store, {**ctx, "prompt_set_sha256": "ef" * 32}) is None


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
