"""Result folders: written whole, read back only when whole.

An evaluation result folder holds `results.json`, `samples.jsonl` and one marker:
- `COMPLETE`: nothing is missing; the marker records the sha256 of both files;
- `PARTIAL`: some generations or scores are missing (an outage, a filtered answer...); the result is
  kept with its counts so nothing computed is lost, but it is not reused as complete: rerunning the
  same command retries only what is missing (generations and successful scores are cached per text)
  and promotes it to COMPLETE.
A file whose bytes no longer match the marker (a truncated samples.jsonl, an edited results.json) is
*damaged*: reported with one warning naming the file, and recomputed.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from value_harms.errors import ValueHarmsError
from value_harms.store import files, hashing
from value_harms.store.identity import SCHEMA_VERSION

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
PARTIAL = "PARTIAL"
RESULTS = "results.json"
SAMPLES = "samples.jsonl"


class RecordError(ValueHarmsError, ValueError):
    """A results.json that is not an evaluation record of a schema this code reads."""


# Keys of results.json that only some records carry (run-folder copies, records of older writers):
# written back only when present, so a record round-trips to the same keys.
_OPTIONAL = ("seeds", "alignment", "status", "store_dir", "run_dir", "skipped")


class _Absent:
    """A key this writer does not produce: left out of results.json (None is written as null)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


class _Section:
    """A typed section of results.json: its fields are its keys; ABSENT ones are left out."""

    def to_json(self) -> dict[str, Any]:
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not ABSENT}


@dataclass(frozen=True)
class BenchmarkInfo(_Section):
    """`benchmark`: what was evaluated. Three different hashes of "the prompts", each under its own name
    (records written before this split held the first or the third as `prompts_sha256`; from_json renames it):
    - `prompt_set_sha256`: sha256 of the prompts' ids and texts, in order (store.identity `prompt_set_sha256`):
      the prompt set, e.g. the one a vanilla bias baseline must share;
    - `key_prompts_sha256`: the prompts' part of the evaluation key (store.identity `key_prompts_sha256`: ids, texts,
      categories and metadata);
    - `items_content_id`: benchmark=pvq: the first 16 hex digits of the item file's content sha256."""

    name: str
    version: str
    measure: str
    n_prompts: int
    settings: dict[str, Any]
    prompt_set_sha256: str = ABSENT
    key_prompts_sha256: str = ABSENT
    items_content_id: str = ABSENT
    items_source: str = ABSENT  # benchmark=pvq: configured | demo_items


@dataclass(frozen=True)
class ModelInfo(_Section):
    """`model`: the model that answered, by name and by content."""

    name: str
    base: str
    revision: str | None
    dtype: str
    adapter_dir: str | None
    adapter_sha256: str | None


@dataclass(frozen=True)
class GenerationInfo(_Section):
    """`generation`: decoding settings and row counts (the PVQ check: greedy, uncached, the first five only)."""

    max_new_tokens: int
    do_sample: bool
    requested: int
    cached: int
    generated: int
    num_samples: int = ABSENT
    temperature: float = ABSENT
    top_p: float = ABSENT
    stop: list[str] = ABSENT
    seed: int = ABSENT
    engine: dict[str, Any] = ABSENT
    batch_size: int = ABSENT
    seconds: float = ABSENT
    empty: int = ABSENT  # empty continuations: scored and counted like any other, reported to be visible


@dataclass(frozen=True)
class ScorerInfo(_Section):
    """`scorer`: who scored, how many texts, how many are missing; per-text fallback shares for scored texts."""

    measure: str
    provenance: Any
    by_scorer: dict[str, int]
    missing: int
    n: int
    stand_in: bool
    primary: str | None = ABSENT
    share_by_scorer: dict[str, float] = ABSENT
    fallback_share: float | None = ABSENT
    filtered: int = ABSENT


@dataclass(frozen=True)
class Seeds(_Section):
    generation: int
    benchmark: int = ABSENT


def _migrated_benchmark(bench: Mapping[str, Any]) -> dict[str, Any]:
    """A `benchmark` section with the one-time rename applied: an older record's `prompts_sha256` is the PVQ item
    file's id when the record names its items' source (only the PVQ writer did), else the prompt set's hash."""
    out = dict(bench)
    if "prompts_sha256" in out:
        old = out.pop("prompts_sha256")
        out.setdefault("items_content_id" if "items_source" in out else "prompt_set_sha256", old)
    return out


@dataclass
class EvalRecord:
    """One evaluation result as results.json holds it: the one owner of that schema. Both writers (eval.job's
    generation jobs, eval.task's PVQ job) build it with `build` from the typed sections above (through
    eval.publish `build_record`); `write_result` and eval.publish write it; every reader (analysis.tidy,
    eval.bias_baseline, tools.status through `read_result`) reads it with `from_json`, which also reads records
    of older writers. Sections are kept as plain objects when read, so a record of any writer reads; keys the
    record does not name (none today) travel verbatim in `extra`."""

    key: str
    benchmark: dict[str, Any]
    model: dict[str, Any]
    profile: dict[str, Any]
    baseline: str
    stage: str
    mitigation: dict[str, Any]
    metrics: dict[str, Any]
    scorer: dict[str, Any] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    train_key: str | None = None
    prefix: Any = None
    git: str | None = None
    seconds: float | None = None
    seeds: dict[str, Any] | None = None
    alignment: dict[str, Any] | None = None  # benchmark=pvq: greedy / expected answers per value, histogram
    status: str | None = None  # complete | partial, set by write_result
    store_dir: str | None = None  # run-folder copies only: where the stored result is
    run_dir: str | None = None
    skipped: bool | None = None  # run-folder copies only: reused from the store, not recomputed
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        *,
        key: str,
        train_key: str | None,
        benchmark: BenchmarkInfo,
        model: ModelInfo,
        profile: dict[str, Any],
        baseline: str,
        stage: str,
        mitigation: dict[str, Any],
        prefix: str,
        generation: GenerationInfo,
        scorer: ScorerInfo,
        metrics: dict[str, Any],
        seeds: Seeds,
        git: str | None,
        seconds: float,
        alignment: dict[str, Any] | None = None,
    ) -> EvalRecord:
        """A new record from its typed sections (every key a writer produces is named here or in a section)."""
        return cls(
            key=key,
            benchmark=benchmark.to_json(),
            model=model.to_json(),
            profile=dict(profile),
            baseline=baseline,
            stage=stage,
            mitigation=dict(mitigation),
            metrics=metrics,
            scorer=scorer.to_json(),
            generation=generation.to_json(),
            schema_version=SCHEMA_VERSION,
            train_key=train_key,
            prefix=prefix,
            git=git,
            seconds=seconds,
            seeds=seeds.to_json(),
            alignment=alignment,
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "results.json") -> EvalRecord:
        """The record of a results.json object; one-line RecordError when it is not one this code reads."""
        if not isinstance(data, Mapping) or not isinstance(data.get("metrics"), Mapping):
            raise RecordError(f"{where}: no 'metrics' object; not an evaluation result")
        schema = data.get("schema_version")
        if isinstance(schema, int) and schema > SCHEMA_VERSION:
            raise RecordError(
                f"{where}: results schema {schema} is newer than this code's {SCHEMA_VERSION}; "
                f"update value-harms to read it"
            )
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names and v is not None}
        for k in ("benchmark", "model", "profile", "mitigation", "scorer", "generation"):
            known[k] = dict(known.get(k) or {})
        known["benchmark"] = _migrated_benchmark(known["benchmark"])
        known.setdefault("key", "")
        known.setdefault("baseline", "")
        known.setdefault("stage", "none")
        known.setdefault("schema_version", schema if schema is not None else 0)
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})

    def to_json(self) -> dict[str, Any]:
        """The results.json object (the keys of the record; an older record's `prompts_sha256` under its new name)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        for k in _OPTIONAL:
            if out[k] is None:
                del out[k]
        out.update(self.extra)
        return out

    @property
    def prompt_set_sha256(self) -> str | None:
        """The prompt set's hash (ids and texts in order); None for a PVQ record, whose items are a file."""
        return self.benchmark.get("prompt_set_sha256")

    @property
    def benchmark_name(self) -> str:
        return str(self.benchmark.get("name") or "")

    @property
    def measure(self) -> str | None:
        return self.benchmark.get("measure")

    @property
    def profile_name(self) -> str:
        return str(self.profile.get("name") or "")

    @property
    def mitigation_name(self) -> str:
        return str(self.mitigation.get("name") or "none")

    @property
    def overall(self) -> dict[str, Any]:
        return dict(self.metrics.get("overall") or {})

    @property
    def complete(self) -> bool:
        return (self.status or "complete") == "complete"

    def identity(self) -> str | None:
        """What every copy of this stored result shares, from the record alone (never its path):
        the facts the store layout files it under plus its content key. None without a key."""
        if not self.key:
            return None
        return "/".join(
            [
                "eval",
                str(self.model.get("name")),
                self.baseline,
                self.stage,
                self.profile_name,
                self.benchmark_name,
                self.mitigation_name,
                self.key,
            ]
        )


def record_identity(data: Mapping[str, Any]) -> str | None:
    """`EvalRecord.identity` of a results.json object, or for a train_result.json object the same
    from its own facts (model, stage, profile, training key); None when the object has no key."""
    if isinstance(data.get("metrics"), Mapping):
        try:
            return EvalRecord.from_json(data).identity()
        except RecordError:
            return None
    train_key = data.get("train_key")
    if not train_key:
        return None
    profile = data.get("profile") if isinstance(data.get("profile"), Mapping) else {}
    return "/".join(["train", str(data.get("model")), str(data.get("stage")), str(profile.get("name")), str(train_key)])


@dataclass
class ResultState:
    """What a result folder holds: state is absent | complete | partial | damaged."""

    state: str
    result: dict[str, Any] | None = None
    problem: str | None = None

    @property
    def complete(self) -> bool:
        return self.state == "complete"


def write_result(
    folder: str | os.PathLike, result: EvalRecord | dict[str, Any], samples: list[dict[str, Any]], *, missing: int
) -> str:
    """Write samples + results and the marker (COMPLETE when `missing` == 0, else PARTIAL). The
    marker is written last, so a kill in between leaves a folder that reads as absent or damaged,
    never as complete. Returns the state written."""
    folder = Path(folder)
    state = "complete" if missing == 0 else "partial"
    record = result if isinstance(result, EvalRecord) else EvalRecord.from_json(result, str(folder / RESULTS))
    record.status = state
    result = record.to_json()
    for name in (COMPLETE, PARTIAL):  # an old marker must not survive the files it described
        try:
            (folder / name).unlink()
        except FileNotFoundError:
            pass
    files.atomic_write_text(folder / SAMPLES, "".join(json.dumps(s) + "\n" for s in samples))
    files.atomic_write_json(folder / RESULTS, result)
    marker = {
        "results": RESULTS,
        "samples": SAMPLES,
        "missing": int(missing),
        "sha256": {RESULTS: hashing.file_sha256(folder / RESULTS), SAMPLES: hashing.file_sha256(folder / SAMPLES)},
    }
    files.atomic_write_json(folder / (COMPLETE if state == "complete" else PARTIAL), marker)
    return state


def result_state(folder: str | os.PathLike) -> str:
    """Cheap state from the markers only (no checksum): complete | partial | absent."""
    folder = Path(folder)
    if (folder / COMPLETE).is_file():
        return "complete"
    if (folder / PARTIAL).is_file():
        return "partial"
    return "absent"


def read_result(folder: str | os.PathLike, quiet: bool = False) -> ResultState:
    """The stored result of `folder` with its state; files are checked against the marker's sha256.
    `quiet`: no warning for a damaged file (a second look under the lock, after one that warned)."""
    folder = Path(folder)
    marker_name = COMPLETE if (folder / COMPLETE).is_file() else PARTIAL if (folder / PARTIAL).is_file() else None
    if marker_name is None:
        return ResultState("absent")
    try:
        marker = files.read_json(folder / marker_name)
        sums = marker["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return _damaged(folder / marker_name, f"unreadable marker ({type(exc).__name__})", quiet)
    for name in (RESULTS, SAMPLES):
        path = folder / name
        if not path.is_file():
            return _damaged(path, "missing", quiet)
        if hashing.file_sha256(path) != sums.get(name):
            return _damaged(path, "its bytes differ from the checksum written with it (truncated or edited)", quiet)
    try:
        result = files.read_json(folder / RESULTS)
    except (OSError, ValueError) as exc:
        return _damaged(folder / RESULTS, f"unreadable ({type(exc).__name__})", quiet)
    return ResultState("complete" if marker_name == COMPLETE else "partial", result)


def _damaged(path: Path, why: str, quiet: bool = False) -> ResultState:
    msg = f"stored result file {path} is damaged: {why}; recomputing it"
    if not quiet:
        log.warning(msg)
    return ResultState("damaged", None, msg)


def read_samples(folder: str | os.PathLike) -> list[dict[str, Any]]:
    text = (Path(folder) / SAMPLES).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line]
