"""What every prompt source shares: the `Prompt` record and UTF-8 / JSON file reading with one-line errors.

Imports nothing else of eval.benchmarks, so the format readers (loaders, holistic_bias, pvq) and the
registry (registry.py) all build on it without a cycle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from value_harms.errors import BenchmarkError


@dataclass(frozen=True)
class Prompt:
    """One benchmark prompt.

    id: unique within the benchmark, stable across runs (file row, category index or generated index).
    prompt: the raw prompt text, before `benchmark.prompt_template` is applied.
    category: the harm category (HEx-PHI, BeaverTails) or HolisticBias axis; None for RTP.
    meta: everything else worth keeping with the sample (RTP prompt toxicity, HolisticBias descriptor...).
    """

    id: str
    prompt: str
    category: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def read_text(path: str | Path) -> str:
    """The file's text, decoded as UTF-8 (a BOM is dropped); a non-UTF-8 byte is reported with its line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BenchmarkError(f"{path}: file not found") from None
    except OSError as e:
        raise BenchmarkError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise BenchmarkError(
            f"{path}: not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}, line {line}); re-save the file as UTF-8"
        ) from None


def read_json(path: str | Path) -> Any:
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BenchmarkError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
