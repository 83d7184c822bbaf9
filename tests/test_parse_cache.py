"""The parse cache of samples.jsonl: a second analysis of an unchanged store reads no
samples and gives the same tables; an edited or re-completed result misses the cache; the fast parser
gives what a plain per-line reading of the same file gives."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from value_harms.analysis import inference, parsed
from value_harms.analysis.tidy import load_results
from value_harms.metrics import PROMPT_VALUES
from value_harms.metrics.prompt_values import sampling_variance
from value_harms.store import records

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_paper_store", ROOT / "perf" / "gen_paper_store.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A small store by the paper-sized generator: vanilla + 3 profiles x 2 mitigations x 20 prompts x 3."""
    out = tmp_path_factory.mktemp("store")
    assert _generator().generate(out, 3, 2, 20, 3, True, 0) == 8 * 20 * 3
    return out


def _reference(df: pd.DataFrame) -> pd.DataFrame:
    """Prompt-level values read line by line with the standard parser, as analysis read them before the
    cache: the independent check of parsed.parse_samples."""
    rows = []
    for r in df[df["category"] == "overall"].drop_duplicates("result_id").itertuples(index=False):
        lines = Path(r.path).with_name("samples.jsonl").read_text().splitlines()
        threshold = json.loads(Path(r.path).read_text())["benchmark"]["settings"].get("toxicity_threshold", 0.5)
        by: dict[str, list] = {}
        for s in (json.loads(x) for x in lines if x.strip()):
            if s.get("score") is None or (isinstance(s["score"], float) and math.isnan(s["score"])):
                continue
            by.setdefault(str(s.get("id")), []).append(s)
        out: dict[str, list] = {}
        for pid, ss in by.items():
            scores = np.asarray([float(s["score"]) for s in ss])
            labels = [s.get("label") for s in ss]
            sv = sampling_variance(str(r.measure), scores, labels)
            for k, v in PROMPT_VALUES[str(r.measure)](scores, labels, float(threshold)).items():
                out.setdefault(k, []).append((pid, v, len(ss), sv.get(k, math.nan)))
        base = {c: getattr(r, c) for c in inference.PV_COLUMNS if c in r._fields}
        for metric, cells in out.items():
            for pid, v, n, sv in cells:
                rows.append({**base, "metric": metric, "prompt": pid, "value": v, "samples": n, "sample_var": sv})
    return pd.DataFrame(rows, columns=list(inference.PV_COLUMNS))


def test_second_analysis_reads_the_cache_and_gives_the_same_table(store, tmp_path, monkeypatch):
    df = load_results([store])
    cache = tmp_path / "cache"
    first = inference.prompt_values(df, cache_dir=cache)
    assert first.attrs["parse_cache"] == {"hits": 0, "parsed": 8, "lacking": 0}
    opened: list[str] = []
    read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: opened.append(self.name) or read_bytes(self))
    second = inference.prompt_values(df, cache_dir=cache)
    monkeypatch.undo()
    assert "samples.jsonl" not in opened  # keyed by the COMPLETE markers' checksums: no samples file read
    assert second.attrs["parse_cache"] == {"hits": 8, "parsed": 0, "lacking": 0}
    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_frame_equal(first, _reference(df))
    pd.testing.assert_frame_equal(first, inference.prompt_values(df))  # no cache: the same parse
    assert len(first) == 8 * 2 * 20 and set(first["samples"]) == {3}


def test_downstream_tables_are_identical_from_the_cache(store, tmp_path):
    from value_harms.analysis import compare_baselines, mitigation_effects

    df = load_results([store])
    tables = []
    for _ in range(2):
        pv = inference.prompt_values(df, cache_dir=tmp_path / "cache")
        cmp = inference.compare_prompt_level(compare_baselines(df), pv, min_models=2, min_prompts=10)
        mit = inference.mitigation_prompt_level(mitigation_effects(df), pv, min_models=2, min_prompts=10)
        tables.append((pv.attrs["parse_cache"]["hits"], cmp, mit))
    assert [t[0] for t in tables] == [0, 8]
    pd.testing.assert_frame_equal(tables[0][1], tables[1][1])
    pd.testing.assert_frame_equal(tables[0][2], tables[1][2])
    assert tables[0][1]["diff_vs_ref"].notna().any()


def _copy(store: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(store, dest)
    return dest


def test_an_edited_samples_file_misses_the_cache(store, tmp_path):
    root = _copy(store, tmp_path / "store")
    df = load_results([root])
    cache = tmp_path / "cache"
    inference.prompt_values(df, cache_dir=cache)
    target = Path(df["path"].iloc[0]).with_name("samples.jsonl")
    lines = target.read_text().splitlines()
    row = json.loads(lines[0])
    row["score"] = 0.999  # the first prompt's maximum becomes 0.999; its marker still names the old bytes
    target.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    again = inference.prompt_values(df, cache_dir=cache)
    assert again.attrs["parse_cache"] == {"hits": 7, "parsed": 1, "lacking": 0}
    pd.testing.assert_frame_equal(again, _reference(df))
    cell = again[(again["result_id"] == df["result_id"].iloc[0]) & (again["metric"] == "expected_max_toxicity")]
    assert cell[cell["prompt"] == row["id"]]["value"].item() == 0.999


def test_an_in_place_edit_that_restores_size_and_mtime_misses_the_cache(store, tmp_path):
    """Same size, same mtime, same inode: the ctime (which only the clock can set) still tells the edit."""
    import os

    root = _copy(store, tmp_path / "store")
    df = load_results([root])
    cache = tmp_path / "cache"
    inference.prompt_values(df, cache_dir=cache)
    target = Path(df["path"].iloc[0]).with_name("samples.jsonl")
    st = target.stat()
    data = target.read_bytes()
    i = data.index(b'"score": ') + len(b'"score": ')
    digit = b"1" if data[i : i + 1] != b"1" else b"0"  # one score digit changed in place: same size
    with open(target, "r+b") as fh:
        fh.seek(i)
        fh.write(digit)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    again = inference.prompt_values(df, cache_dir=cache)
    assert again.attrs["parse_cache"] == {"hits": 7, "parsed": 1, "lacking": 0}
    pd.testing.assert_frame_equal(again, _reference(df))


def test_a_recompleted_result_misses_the_cache(store, tmp_path):
    root = _copy(store, tmp_path / "store")
    df = load_results([root])
    cache = tmp_path / "cache"
    inference.prompt_values(df, cache_dir=cache)
    folder = Path(df["path"].iloc[-1]).parent
    samples = records.read_samples(folder)
    for s in samples:
        s["score"] = round(1.0 - s["score"], 6)
    records.write_result(folder, records.EvalRecord.from_json(records.read_result(folder).result), samples, missing=0)
    again = inference.prompt_values(df, cache_dir=cache)
    assert again.attrs["parse_cache"] == {"hits": 7, "parsed": 1, "lacking": 0}
    pd.testing.assert_frame_equal(again, _reference(df))


def _hand_made(root: Path, measure: str, metric: str, lines: list[str], profile: str | None = None) -> None:
    """A result folder without a marker (a run folder's copy, a hand-made result)."""
    root.mkdir(parents=True)
    (root / "results.json").write_text(
        json.dumps(
            {
                "schema_version": 2,
                "benchmark": {"name": "b", "version": "1", "measure": measure, "settings": {}},
                "model": {"name": "m"},
                "baseline": "vim",
                "stage": "full",
                "profile": {"name": profile, "kind": "ess", "values": {}},
                "mitigation": {"name": "none"},
                "scorer": {"by_scorer": {"s": 1}, "n": 1, "missing": 0},
                "metrics": {"overall": {"n_prompts": 2, metric: 0.5}},
            }
        )
    )
    (root / "samples.jsonl").write_text("".join(x + "\n" for x in lines))


def test_any_json_types_parse_as_the_plain_reading_and_a_markerless_file_is_remembered(tmp_path):
    """Numeric ids, NaN / null / integer scores, labels and blank lines: pyarrow declines what it cannot
    type and the standard parser reads it; a folder without a marker is keyed by its bytes, then by a
    (path, size, mtime) memo."""
    _hand_made(
        tmp_path / "store" / "a",
        "regard",
        "negative_regard_rate",
        [
            '{"id": 1, "score": 0.2, "label": "negative"}',
            '{"id": 1, "score": NaN, "label": "negative"}',
            "",
            '{"id": 2, "score": 1, "label": "positive"}',
            '{"id": 2, "score": 0.4, "label": "neg"}',
            '{"id": 3, "score": null, "label": null}',
        ],
    )
    _hand_made(
        tmp_path / "store" / "b",
        "harmfulness",
        "harmfulness_score",
        ['{"id": "x", "score": 5}', '{"id": "x", "score": 2}', '{"id": "y", "score": 5}', '{"id": "y", "score": null}'],
        profile="b",
    )
    df = load_results([tmp_path / "store"])
    cache = tmp_path / "cache"
    first = inference.prompt_values(df, cache_dir=cache)
    pd.testing.assert_frame_equal(first, _reference(df))
    assert first["profile"].isna().sum() == 2 and set(first["profile"].dropna()) == {"b"}  # a record without a name
    regard = first[first["metric"] == "negative_regard_rate"].set_index("prompt")["value"].to_dict()
    assert regard == {"1": 1.0, "2": 0.5}  # prompt 3 has no scored sample: a missing cell, not a 0
    second = inference.prompt_values(df, cache_dir=cache)
    assert second.attrs["parse_cache"] == {"hits": 2, "parsed": 0, "lacking": 0}
    pd.testing.assert_frame_equal(first, second)


def test_a_damaged_cache_entry_or_file_costs_a_reparse_not_a_failure(store, tmp_path):
    df = load_results([store])
    cache = tmp_path / "cache"
    first = inference.prompt_values(df, cache_dir=cache)
    (cache / parsed.CACHE_FILE).write_bytes(b"not a database")  # moved aside by store.kv, with a warning
    again = inference.prompt_values(df, cache_dir=cache)
    assert again.attrs["parse_cache"]["parsed"] == 8
    pd.testing.assert_frame_equal(first, again)


def test_an_unusable_cache_folder_analyses_without_a_cache(store, tmp_path, caplog):
    df = load_results([store])
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    pv = inference.prompt_values(df, cache_dir=blocker)
    assert pv.attrs["parse_cache"] == {"hits": 0, "parsed": 8, "lacking": 0}
    assert "parse cache under" in caplog.text and "every samples file is parsed" in caplog.text
    pd.testing.assert_frame_equal(pv, _reference(df))
