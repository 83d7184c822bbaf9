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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from value_harms.store import files

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
PARTIAL = "PARTIAL"
RESULTS = "results.json"
SAMPLES = "samples.jsonl"


@dataclass
class ResultState:
    """What a result folder holds: state is absent | complete | partial | damaged."""

    state: str
    result: dict[str, Any] | None = None
    problem: str | None = None

    @property
    def complete(self) -> bool:
        return self.state == "complete"


def write_result(folder: str | os.PathLike, result: dict[str, Any], samples: list[dict[str, Any]],
                 *, missing: int) -> str:
    """Write samples + results and the marker (COMPLETE when `missing` == 0, else PARTIAL). The
    marker is written last, so a kill in between leaves a folder that reads as absent or damaged,
    never as complete. Returns the state written."""
    folder = Path(folder)
    state = "complete" if missing == 0 else "partial"
    result = dict(result)
    result["status"] = state
    for name in (COMPLETE, PARTIAL):  # an old marker must not survive the files it described
        try:
            (folder / name).unlink()
        except FileNotFoundError:
            pass
    files.atomic_write_text(folder / SAMPLES, "".join(json.dumps(s) + "\n" for s in samples))
    files.atomic_write_json(folder / RESULTS, result)
    marker = {"results": RESULTS, "samples": SAMPLES, "missing": int(missing),
              "sha256": {RESULTS: files.file_sha256(folder / RESULTS), SAMPLES: files.file_sha256(folder / SAMPLES)}}
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


def read_result(folder: str | os.PathLike) -> ResultState:
    """The stored result of `folder` with its state; files are checked against the marker's sha256."""
    folder = Path(folder)
    marker_name = COMPLETE if (folder / COMPLETE).is_file() else PARTIAL if (folder / PARTIAL).is_file() else None
    if marker_name is None:
        return ResultState("absent")
    try:
        marker = files.read_json(folder / marker_name)
        sums = marker["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return _damaged(folder / marker_name, f"unreadable marker ({type(exc).__name__})")
    for name in (RESULTS, SAMPLES):
        path = folder / name
        if not path.is_file():
            return _damaged(path, "missing")
        if files.file_sha256(path) != sums.get(name):
            return _damaged(path, "its bytes differ from the checksum written with it (truncated or edited)")
    try:
        result = files.read_json(folder / RESULTS)
    except (OSError, ValueError) as exc:
        return _damaged(folder / RESULTS, f"unreadable ({type(exc).__name__})")
    return ResultState("complete" if marker_name == COMPLETE else "partial", result)


def _damaged(path: Path, why: str) -> ResultState:
    msg = f"stored result file {path} is damaged: {why}; recomputing it"
    log.warning(msg)
    return ResultState("damaged", None, msg)


def read_samples(folder: str | os.PathLike) -> list[dict[str, Any]]:
    text = (Path(folder) / SAMPLES).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line]
