"""Benign instruction-tuning sets (the paper's fine-tuning baselines): Alpaca and Dolly.

Alpaca: a JSON array (or JSONL) of {instruction, input, output}. Dolly: JSONL (or a JSON array) of
{instruction, context, response}. Local file or dataset-hub id. The prompt layout is the project's own
(a plain instruction / optional input / response layout); the target is the reference answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from value_harms.data import DataError
from value_harms.data.vim import Example

# fmt -> (instruction field, optional context field, answer field)
FORMATS: dict[str, tuple[str, str, str]] = {
    "alpaca": ("instruction", "input", "output"),
    "dolly": ("instruction", "context", "response"),
}
SOURCES = ("file", "hub")

PROMPT_WITH_CONTEXT = "Instruction:\n{instruction}\n\nInput:\n{context}\n\nResponse:"
PROMPT_NO_CONTEXT = "Instruction:\n{instruction}\n\nResponse:"


def instruction_prompt(instruction: str, context: str = "") -> str:
    """The project's instruction prompt; the context block is left out when empty."""
    if context and context.strip():
        return PROMPT_WITH_CONTEXT.format(instruction=instruction, context=context)
    return PROMPT_NO_CONTEXT.format(instruction=instruction)


def _read_records(path: Path) -> list[Any]:
    if not path.is_file():
        raise DataError(f"{path}: instruction file does not exist")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
        return records
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid JSON on line {n} ({e.msg})") from None
    return records


def _to_examples(records: Iterable[Any], fmt: str, where: str, limit: int | None) -> list[Example]:
    ins_f, ctx_f, out_f = FORMATS[fmt]
    out: list[Example] = []
    for n, rec in enumerate(records):
        if limit is not None and len(out) >= limit:
            break
        if not isinstance(rec, dict):
            raise DataError(f"{where}: record {n} is not an object")
        missing = [f for f in (ins_f, out_f) if f not in rec or rec[f] is None]
        if missing:
            raise DataError(f"{where}: record {n} lacks field(s) {', '.join(repr(f) for f in missing)} ({fmt} format)")
        ctx = rec.get(ctx_f) or ""
        out.append(
            Example(
                instruction_prompt(str(rec[ins_f]), str(ctx)),
                str(rec[out_f]),
                {"source": where, "fmt": fmt, "row": n},
            )
        )
    if not out:
        raise DataError(f"{where}: no records")
    return out


def load_instruction_examples(
    source: str,
    path_or_id: str | Path,
    revision: str | None = None,
    fmt: str = "alpaca",
    limit: int | None = None,
    split: str = "train",
) -> list[Example]:
    """Examples from a local JSON/JSONL file (source="file") or a hub dataset id (source="hub", pin
    `revision`). `limit` keeps the first N records. Missing instruction/answer fields -> DataError."""
    if fmt not in FORMATS:
        raise DataError(f"unknown instruction format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if source not in SOURCES:
        raise DataError(f"unknown instruction source {source!r}; expected one of {', '.join(SOURCES)}")
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}")
    if source == "file":
        path = Path(path_or_id).expanduser()
        return _to_examples(_read_records(path), fmt, str(path), limit)
    import datasets

    ds = datasets.load_dataset(str(path_or_id), revision=revision, split=split)
    where = f"{path_or_id}@{revision or 'main'}"
    missing = [f for f in (FORMATS[fmt][0], FORMATS[fmt][2]) if f not in ds.column_names]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(repr(f) for f in missing)} ({fmt} format)")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return _to_examples(iter(ds), fmt, where, limit)
