"""Prompt-level values of each result's samples.jsonl, parsed once and cached by the file's checksum.

A paper-sized store holds ~4 GB of samples (154 profiles x 2 mitigations x 3,000 RTP prompts x 10
samples); analysis needs only one value per (result, metric, prompt). Re-reading every sample each
time a researcher changes an analysis option is the cost this module removes:

- reading: samples.jsonl is parsed by pyarrow's JSON reader (only `id`, `score`, `label`), with the
  standard-library parser as the fallback for anything pyarrow will not type (numeric ids, booleans);
  both give the same values (each measure's MeasureSpec in value_harms.metrics, declared beside its
  functions, is the one definition);
- caching: each result's prompt-level table is stored in a sqlite file (store.kv) under the key
  sha256(samples.jsonl) + measure + toxicity threshold + the source that defines the measure's prompt
  values and their sampling variances (the modules of its functions and metrics/registry.py) +
  PARSER_VERSION: any change to what the numbers depend on misses the cache;
- the key costs no re-hash: a result's COMPLETE / PARTIAL marker records the sha256 of its
  samples.jsonl (store.records.write_result), used while the samples file is not newer than the
  marker (mtime and ctime); otherwise a (path, size, mtime, inode, device, ctime) -> sha256 memo from an
  earlier read; otherwise the bytes are read and hashed (the same bytes are parsed on a miss). An edited
  samples file is newer than its marker (its ctime, even with its mtime restored): it is hashed again,
  and misses.
"""

from __future__ import annotations

import base64
import inspect
import io
import json
import logging
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from value_harms.metrics import measure_spec
from value_harms.metrics import registry as measure_registry
from value_harms.store import records
from value_harms.store.hashing import sha256_bytes, sha256_text
from value_harms.store.kv import KVStore, Table

log = logging.getLogger(__name__)

__all__ = ["PARSER_VERSION", "CACHE_FILE", "ParseStats", "prompt_level", "parse_samples"]

# Bump when the parse itself changes (which rows count, how a prompt id is read); the measure
# functions' own source is part of the key already.
PARSER_VERSION = 2
CACHE_FILE = "parsed_samples.sqlite"  # under paths.cache_dir, beside the score and generation caches
_TABLE = Table("parsed", namespace="kind")
_OUT = ("metric", "prompt", "value", "samples", "sample_var")
_DTYPES = {"metric": np.int32, "prompt": np.int32, "value": np.float64, "samples": np.int64, "sample_var": np.float64}


@dataclass
class ParseStats:
    """What one prompt_level call did: results read from the cache, parsed, and without samples."""

    hits: int = 0
    parsed: int = 0
    lacking: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"hits": self.hits, "parsed": self.parsed, "lacking": len(self.lacking)}


# --------------------------------------------------------------------------------------------------
# Parsing one samples file


def _columns_pyarrow(data: bytes) -> tuple[list[str], np.ndarray, list[Any]] | None:
    """(ids, scores, labels) of the scored rows by pyarrow, or None when pyarrow cannot type the file
    as strings / numbers / strings (the caller then uses the standard parser)."""
    try:
        import pyarrow as pa
        import pyarrow.json as pj
    except ImportError:  # optional: the standard-library parser reads everything, only slower
        return None
    schema = pa.schema([("id", pa.string()), ("score", pa.float64()), ("label", pa.string())])
    try:
        tab = pj.read_json(
            io.BytesIO(data),
            read_options=pj.ReadOptions(block_size=1 << 24),
            parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
    except pa.ArrowException:  # e.g. "changed from string to number": the standard parser reads it
        return None
    if tab.column("id").null_count:  # a missing id reads as "None" in the standard parser's rows
        return None
    scores = tab.column("score").to_numpy(zero_copy_only=False).astype(float)
    keep = ~np.isnan(scores)  # null and NaN: a missing score, left out (counted by the result itself)
    ids = np.asarray(tab.column("id").to_pylist(), dtype=object)[keep].tolist()
    labels = np.asarray(tab.column("label").to_pylist(), dtype=object)[keep].tolist()
    return ids, scores[keep], labels


def _columns_json(data: bytes) -> tuple[list[str], np.ndarray, list[Any]]:
    """(ids, scores, labels) of the scored rows by the standard-library parser (any JSON types)."""
    ids, scores, labels = [], [], []
    for line in data.decode("utf-8").splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        s = r.get("score")
        if s is None or (isinstance(s, float) and math.isnan(s)):
            continue
        ids.append(str(r.get("id")))
        scores.append(float(s))
        labels.append(r.get("label"))
    return ids, np.asarray(scores, dtype=float), labels


def parse_samples(data: bytes, measure: str, threshold: float) -> dict[str, Any]:
    """The prompt-level table of one result's samples.jsonl bytes: {"metrics": names, "prompts": ids
    (first appearance), "metric": codes, "prompt": codes, "value", "samples", "sample_var"} in the row order metric
    by metric, prompts in order of first appearance. ValueError / UnicodeDecodeError on a bad file."""
    spec = measure_spec(measure)
    if spec is None or not spec.has_prompt_values:  # a measure without prompt-level values (alignment)
        return {"metrics": [], "prompts": [], **{k: np.zeros(0, dtype=t) for k, t in _DTYPES.items()}}
    cols = _columns_pyarrow(data)
    ids, scores, labels = cols if cols is not None else _columns_json(data)
    codes, prompts = pd.factorize(pd.Series(ids, dtype=object), sort=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes, minlength=len(prompts)))[:-1]
    by_metric: dict[str, list[tuple[int, float, int, float]]] = {}
    labels_sorted = [labels[i] for i in order]
    starts = np.concatenate([[0], bounds]).astype(int)
    for p, group in enumerate(np.split(scores[order], bounds) if len(prompts) else []):
        lab = labels_sorted[starts[p] : starts[p] + group.size]
        sv = spec.sampling_variance(group, lab)
        for k, v in spec.prompt_values(group, lab, threshold).items():
            by_metric.setdefault(k, []).append((p, v, int(group.size), sv.get(k, math.nan)))
    names = list(by_metric)
    cells = [c for m in names for c in by_metric[m]]
    table: dict[str, Any] = {"metrics": names, "prompts": [str(x) for x in prompts]}
    table["metric"] = np.repeat(np.arange(len(names), dtype=np.int32), [len(by_metric[m]) for m in names])
    for j, k in enumerate(("prompt", "value", "samples", "sample_var")):
        table[k] = np.asarray([c[j] for c in cells], dtype=_DTYPES[k])
    return table


# --------------------------------------------------------------------------------------------------
# The cache


def _encode(table: dict[str, Any]) -> str:
    """One line of JSON (names, and each array's dtype and length), then the arrays' bytes in base64:
    decoded in ~1 ms (an .npz entry took 5 ms, most of a re-analysis's reading)."""
    arrays = {k: np.ascontiguousarray(table[k], dtype=_DTYPES[k]) for k in _OUT}
    head = {"metrics": table["metrics"], "prompts": table["prompts"], "n": {k: len(v) for k, v in arrays.items()}}
    body = base64.b64encode(b"".join(v.tobytes() for v in arrays.values())).decode("ascii")
    return json.dumps(head) + "\n" + body


def _decode(text: str) -> dict[str, Any]:
    head_text, body = text.split("\n", 1)
    head = json.loads(head_text)
    raw = base64.b64decode(body, validate=True)
    out: dict[str, Any] = {"metrics": list(head["metrics"]), "prompts": list(head["prompts"])}
    offset = 0
    for k in _OUT:
        dtype = np.dtype(_DTYPES[k])
        out[k] = np.frombuffer(raw, dtype=dtype, count=int(head["n"][k]), offset=offset)
        offset += out[k].nbytes
    if offset != len(raw):
        raise ValueError("cached table has trailing or missing bytes")
    return out


def _marker_sha(samples: Path, st) -> str | None:
    """The sha256 of samples.jsonl its result's marker records, while the file is not newer than the
    marker (store.records.write_result writes the marker last); None otherwise."""
    for name in (records.COMPLETE, records.PARTIAL):
        marker = samples.with_name(name)
        try:
            # written before or with the samples, or the samples changed since (ctime: also an in-place edit
            # that restored the mtime): not trusted
            if marker.stat().st_mtime_ns <= max(st.st_mtime_ns, st.st_ctime_ns):
                continue
            sha = json.loads(marker.read_text())["sha256"][records.SAMPLES]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(sha, str) and len(sha) == 64:
            return sha
    return None


def _functions_id(measure: str) -> str:
    """A hash of the source that defines `measure`'s prompt values and their sampling variances: the
    module of each of its functions (where its MeasureSpec is declared, e.g. metrics/toxicity.py, with
    their helpers) and metrics/registry.py (how values and variances are taken from them). A change to
    any of it misses that measure's cached tables."""
    spec = measure_spec(measure)
    fns = [] if spec is None else [f for m in spec.all_metrics for f in (m.per_sample, m.prompt_value) if f]
    parts = {measure_registry.__name__: inspect.getsource(measure_registry)}
    for f in fns:
        mod = inspect.getmodule(f)
        try:
            parts[mod.__name__ if mod else repr(f)] = inspect.getsource(mod if mod else f)
        except (OSError, TypeError):  # no source file (built at run time): its compiled code stands in
            parts[f"{f.__module__}.{f.__qualname__}"] = repr((f.__code__.co_code, f.__code__.co_consts))
    text = "\n".join(parts[k] for k in sorted(parts))
    return sha256_text(text)[:16]


def _threshold(results_json: Path) -> float:
    """The result's toxicity threshold (benchmark.settings), 0.5 when it names none."""
    try:
        return float(json.loads(results_json.read_text())["benchmark"]["settings"].get("toxicity_threshold", 0.5))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 0.5


class _Cache:
    """Parsed tables by key, and the (path, size, mtime, inode, device, ctime) -> sha256 memo, in one sqlite file."""

    def __init__(self, cache_dir: str | Path | None):
        self.kv = None
        if cache_dir:
            try:
                self.kv = KVStore(Path(cache_dir).expanduser() / CACHE_FILE, _TABLE, what="parse cache")
            except (OSError, sqlite3.Error) as exc:  # a cache only ever saves time: analyse without it
                log.warning("parse cache under %s unusable (%s): every samples file is parsed", cache_dir, exc)
        self._functions: dict[str, str] = {}  # measure -> _functions_id, hashed once per analysis

    def key(self, sha: str, measure: str, threshold: float) -> str:
        if measure not in self._functions:
            self._functions[measure] = _functions_id(measure)
        return f"v{PARSER_VERSION}:{sha}:{measure}:{self._functions[measure]}:{threshold!r}"

    def sha(self, samples: Path) -> str | None:
        """A known sha256 of the file without reading it: its marker's, else the memo's."""
        if self.kv is None:
            return None
        st = samples.stat()
        return _marker_sha(samples, st) or self.kv.get_many([self._stamp(samples, st)], "stat").get(
            self._stamp(samples, st)
        )

    @staticmethod
    def _stamp(samples: Path, st) -> str:
        # what a copy or an in-place edit changes, as store.identity's content-hash stamp
        return f"{samples.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_dev}|{st.st_ctime_ns}"

    def get(self, key: str) -> dict[str, Any] | None:
        if self.kv is None:
            return None
        text = self.kv.get_many([key], "table").get(key)
        try:
            return _decode(text) if text is not None else None
        except (ValueError, KeyError, TypeError):  # a damaged entry costs a re-parse, never a failed run
            return None

    def put(self, key: str, table: dict[str, Any], samples: Path, st, sha: str) -> None:
        if self.kv is None:
            return
        try:
            self.kv.put_many([(key, _encode(table))], "table")
            self.kv.put_many([(self._stamp(samples, st), sha)], "stat")
        except sqlite3.Error as exc:  # a full disk, a read-only file: the analysis goes on uncached
            log.warning("parse cache %s not written (%s): the rest of this analysis is not cached", self.kv.path, exc)
            self.close()
            self.kv = None

    def close(self) -> None:
        if self.kv is not None:
            self.kv.close()


def _table_of(cache: _Cache, samples: Path, measure: str, threshold: float, stats: ParseStats) -> dict[str, Any]:
    """One result's prompt-level table, from the cache when its key is known and stored, else parsed."""
    if cache.kv is None:
        stats.parsed += 1
        return parse_samples(samples.read_bytes(), measure, threshold)
    known = cache.sha(samples)
    if known is not None:
        hit = cache.get(cache.key(known, measure, threshold))
        if hit is not None:
            stats.hits += 1
            return hit
    st = samples.stat()
    data = samples.read_bytes()
    sha = sha256_bytes(data)
    key = cache.key(sha, measure, threshold)
    table = cache.get(key) if sha != known else None
    if table is None:
        table = parse_samples(data, measure, threshold)
        stats.parsed += 1
        cache.put(key, table, samples, st, sha)
    else:
        stats.hits += 1
    return table


# --------------------------------------------------------------------------------------------------
# The prompt-level frame of many results


def prompt_level(per: pd.DataFrame, cols: list[str], cache_dir: str | Path | None = None) -> pd.DataFrame:
    """Prompt-level values of the results in `per` (one tidy 'overall' row per result, with its `path`
    and `measure`), in the columns `cols`: the result's own columns, then metric, prompt, value,
    samples, sample_var. Results without a readable samples.jsonl are left out (one warning with a count).
    `cache_dir`: where the parse cache lives (None: no cache). The frame's attrs["parse_cache"] says
    how many results came from the cache and how many were parsed."""
    base_cols = [c for c in cols if c not in _OUT]
    stats, cache = ParseStats(), _Cache(cache_dir)
    parts: list[tuple[Any, dict[str, Any]]] = []
    try:
        for r in per.itertuples(index=False):
            path = Path(str(r.path))
            samples = path.with_name(records.SAMPLES)
            try:
                table = _table_of(cache, samples, str(r.measure), _threshold(path), stats)
            except (OSError, ValueError) as exc:
                stats.lacking.append(f"{samples} ({type(exc).__name__})")
                continue
            parts.append((r, table))
    finally:
        cache.close()
    if stats.lacking:
        log.warning(
            "%d result(s) have no readable samples.jsonl (e.g. %s): their comparisons fall back to "
            "model-level tests that ignore prompt sampling",
            len(stats.lacking),
            stats.lacking[0],
        )
    log.info("prompt-level values: %d result(s) from the parse cache, %d parsed", stats.hits, stats.parsed)
    out = _assemble(parts, base_cols, cols)
    out.attrs["parse_cache"] = stats.as_dict()
    return out


def _arrow_strings() -> bool:
    """Whether pandas infers text as its pyarrow-backed string dtype (pandas 3 with pyarrow installed)."""
    try:
        import pyarrow  # noqa: F401 - optional: without it pandas keeps text in Python objects
    except ImportError:
        return False
    return pd.Series(["x"]).dtype == pd.StringDtype("pyarrow", na_value=np.nan)


def _text(values: list[Any]) -> bool:
    """Whether a column of these values is text (str, missing as None / NaN) pandas keeps in pyarrow."""
    text = all(v is None or isinstance(v, str) or (isinstance(v, float) and math.isnan(v)) for v in values)
    return text and _arrow_strings()


def _column(values: list[Any], index: np.ndarray) -> Any:
    """values[index] as one column: text built by pyarrow in pandas' string dtype directly, as pandas
    would infer it (16x faster than inferring it from 3.7 M Python objects); else objects to infer."""
    if _text(values):
        import pyarrow as pa  # optional dependency, present here (_arrow_strings checked it)

        texts = pa.array([v if isinstance(v, str) else None for v in values], type=pa.large_string())
        return pd.array(texts.take(pa.array(index)), dtype=pd.StringDtype("pyarrow", na_value=np.nan))
    own = np.empty(len(values), dtype=object)
    own[:] = values
    return own[index]


def _repeated(values: list[Any], counts: np.ndarray) -> Any:
    """Each of values repeated counts times, as one column (a result's own columns: one value per
    result). Text is laid out as pyarrow's buffers at once (a copy of bytes, 5x faster than a take)."""
    if not _text(values):
        return _column(values, np.repeat(np.arange(len(values)), counts))
    import pyarrow as pa  # optional dependency, present here (_text checked it)

    enc = [v.encode() if isinstance(v, str) else b"" for v in values]
    lengths = np.repeat(np.asarray([len(e) for e in enc], dtype=np.int64), counts)
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    valid = np.repeat(np.asarray([isinstance(v, str) for v in values]), counts)
    bitmap = None if valid.all() else pa.array(valid, type=pa.bool_()).buffers()[1]
    data = pa.py_buffer(b"".join(e * int(n) for e, n in zip(enc, counts)))
    arr = pa.LargeStringArray.from_buffers(lengths.size, pa.py_buffer(offsets), data, bitmap)
    return pd.array(arr, dtype=pd.StringDtype("pyarrow", na_value=np.nan))


def _assemble(parts: list[tuple[Any, dict[str, Any]]], base_cols: list[str], cols: list[str]) -> pd.DataFrame:
    """One frame from the per-result tables, built column by column, never row by row."""
    if not parts:
        return pd.DataFrame(columns=cols)
    counts = np.asarray([len(t["value"]) for _, t in parts])
    data: dict[str, Any] = {c: _repeated([getattr(r, c, "") for r, _ in parts], counts) for c in base_cols}
    for c, names in (("metric", "metrics"), ("prompt", "prompts")):
        seen: dict[str, int] = {}  # one dictionary of names over all results; each result's codes mapped into it
        codes, last, mapped = [], None, np.zeros(0, dtype=np.int64)
        for _, t in parts:
            if t[names] != last:  # results of one benchmark share their prompt list: mapped once
                last, mapped = t[names], np.asarray([seen.setdefault(x, len(seen)) for x in t[names]], dtype=np.int64)
            codes.append(mapped[t[c]])
        data[c] = _column(list(seen), np.concatenate(codes))
    for c in ("value", "samples", "sample_var"):
        data[c] = np.concatenate([t[c] for _, t in parts]).astype(_DTYPES[c], copy=False)
    return pd.DataFrame(data, columns=cols)
