"""The PVQ items as a prompt set (format `pvq_items`, benchmark=pvq).

`evaluate.py benchmark=pvq` (measure `alignment`) does not score generations: the job runs the PVQ
value-alignment check (value_harms.alignment.pvq), which reads the same file with its own reader and
falls back to the project's demo items when it is absent. This loader gives the same items to
everything that lists prompts (load_prompts, prompt counts, fingerprints): id = the item number,
prompt = the item text, category = the value it measures.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from value_harms.errors import BenchmarkError
from value_harms.eval.benchmarks.base import Prompt, read_text
from value_harms.eval.benchmarks.loaders import local_path

COLUMNS = ("item", "value", "text")


def pvq_items_local(cfg: Any, data_dir: str | None) -> tuple[list[Prompt], str]:
    path = local_path(cfg, data_dir)
    rows = list(csv.DictReader(io.StringIO(read_text(path))))
    missing = [c for c in COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise BenchmarkError(
            f"{path}: expected a CSV with columns {','.join(COLUMNS)}"
            + (f" (missing {', '.join(missing)})" if missing else " and at least one item")
        )
    return [Prompt(id=str(r["item"]), prompt=str(r["text"]), category=str(r["value"])) for r in rows], str(path)
