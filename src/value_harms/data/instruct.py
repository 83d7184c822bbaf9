"""Benign instruction-tuning sets (the paper's fine-tuning baselines): Alpaca, Dolly, Grammar, SAMSum.

The paper's code (scripts/benign_train.sh, utils/load_dataset.py) trains four benign baselines:
Alpaca (`alpaca_data.json`), Dolly WITHOUT its safety-related records
(`databricks-dolly-15k-no-safety.jsonl`, made by LLM-Tuning-Safety/LLMs-Finetuning-Safety
`dolly_remove_safety.py`: records whose response contains a safety phrase are dropped), Grammar
(`gtrain_10k.csv`, columns input,target) and SAMSum (hub `samsum`, columns dialogue,summary).

Formats (fields): alpaca {instruction, input, output}; dolly {instruction, context, response};
grammar {input, target}; samsum {dialogue, summary}. Files: JSON array, JSONL or CSV (by suffix), or a
dataset-hub id. Alpaca/Dolly use the project's own instruction layout; Grammar and SAMSum use the
short task prompts of the paper's code (llama-recipes format strings, reproduced as protocol text).
Dolly without safety data: point at the no-safety file, or load full Dolly and drop the records of
`exclude_path` (e.g. the repository's `databricks-dolly-15k-safety-only.jsonl`, the complement) and/or
those whose answer contains a phrase of `exclude_keywords_path` (one phrase per line).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any, Iterable

from value_harms.data.vim import Example
from value_harms.errors import DataError

# fmt -> (instruction / input field, optional context field or None, answer field)
FORMATS: dict[str, tuple[str, str | None, str]] = {
    "alpaca": ("instruction", "input", "output"),
    "dolly": ("instruction", "context", "response"),
    "grammar": ("input", None, "target"),
    "samsum": ("dialogue", None, "summary"),
}
# Task prompts of the paper's code for Grammar and SAMSum (utils/load_dataset.py, from llama-recipes).
TASK_PROMPTS: dict[str, str] = {
    "grammar": "Correct this to standard English:\n{input}\n---\nCorrected:\n",
    "samsum": "Summarize this dialog:\n{input}\n---\nSummary:\n",
}
SOURCES = ("file", "hub")

log = logging.getLogger(__name__)

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
    if path.suffix.lower() == ".csv":
        return list(csv.DictReader(text.splitlines()))
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
        if fmt in TASK_PROMPTS:
            prompt = TASK_PROMPTS[fmt].format(input=str(rec[ins_f]))
        else:
            prompt = instruction_prompt(str(rec[ins_f]), str(rec.get(ctx_f) or ""))
        out.append(Example(prompt, str(rec[out_f]), {"source": where, "fmt": fmt, "row": n}))
    if not out:
        raise DataError(f"{where}: no records")
    return out


def _record_key(rec: Any, fmt: str) -> tuple[str, ...]:
    ins_f, ctx_f, out_f = FORMATS[fmt]
    fields = [f for f in (ins_f, ctx_f, out_f) if f]
    return tuple(str((rec.get(f) if isinstance(rec, dict) else None) or "").strip() for f in fields)


def read_keywords(path: str | Path) -> list[str]:
    """Phrases, one per line (blank lines and lines starting with '#' skipped)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{p}: keyword file does not exist")
    words = [w.strip() for w in p.read_text(encoding="utf-8").splitlines()]
    return [w for w in words if w and not w.startswith("#")]


def exclude_records(
    records: Iterable[Any], fmt: str, exclude: Iterable[Any] = (), keywords: Iterable[str] = ()
) -> tuple[list[Any], int]:
    """(kept records, number dropped): drop records equal, on the format's fields, to one of `exclude`,
    and records whose answer contains a phrase of `keywords` (case-insensitive substring, as
    dolly_remove_safety.py)."""
    drop = {_record_key(r, fmt) for r in exclude}
    words = [w.lower() for w in keywords]
    out_f = FORMATS[fmt][2]
    kept, dropped = [], 0
    for rec in records:
        answer = str(rec.get(out_f) or "").lower() if isinstance(rec, dict) else ""
        if (drop and _record_key(rec, fmt) in drop) or any(w in answer for w in words):
            dropped += 1
            continue
        kept.append(rec)
    return kept, dropped


def load_instruction_examples(
    source: str,
    path_or_id: str | Path,
    revision: str | None = None,
    fmt: str = "alpaca",
    limit: int | None = None,
    split: str = "train",
    exclude_path: str | Path | None = None,
    exclude_keywords_path: str | Path | None = None,
) -> list[Example]:
    """Examples from a local JSON/JSONL/CSV file (source="file") or a hub dataset id (source="hub", pin
    `revision`; a local dataset folder works too). Records listed in `exclude_path` (a file of the same
    format) and records whose answer contains a phrase of `exclude_keywords_path` are dropped first;
    then `limit` keeps the first N. Missing instruction/answer fields -> DataError."""
    if fmt not in FORMATS:
        raise DataError(f"unknown instruction format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if source not in SOURCES:
        raise DataError(f"unknown instruction source {source!r}; expected one of {', '.join(SOURCES)}")
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}")
    if source == "file":
        path = Path(path_or_id).expanduser()
        records: Iterable[Any] = _read_records(path)
        where = str(path)
    else:
        import datasets

        ds = datasets.load_dataset(str(path_or_id), revision=revision, split=split)
        where = f"{path_or_id}@{revision or 'main'}"
        missing = [f for f in (FORMATS[fmt][0], FORMATS[fmt][2]) if f not in ds.column_names]
        if missing:
            raise DataError(f"{where}: missing column(s) {', '.join(repr(f) for f in missing)} ({fmt} format)")
        if limit is not None and not (exclude_path or exclude_keywords_path):
            ds = ds.select(range(min(limit, len(ds))))
        records = iter(ds)
    if exclude_path or exclude_keywords_path:
        exclude = _read_records(Path(exclude_path).expanduser()) if exclude_path else []
        keywords = read_keywords(exclude_keywords_path) if exclude_keywords_path else []
        records, dropped = exclude_records(records, fmt, exclude, keywords)
        log.info(
            "%s: dropped %d record(s) listed in the exclusion file / containing an exclusion phrase", where, dropped
        )
    return _to_examples(records, fmt, where, limit)
