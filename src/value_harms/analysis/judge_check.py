"""Results whose LLM judge does not discriminate, left out of the findings with the sentence saying why.

A judge's result records its check on the project's check set (scoring/judge/discrimination.py) in
`scorer.provenance.discrimination`: a gated judge (a stand-in, or any judge with scorer.judge.gate_all)
below scorer.judge.min_auroc has `left_out: true` and a `reason` ("the judge does not discriminate: AUROC
0.52 < 0.70 on the project's check set"). Its flagged rates measure nothing, so analysis drops its rows
before any estimate and says so in one line per benchmark. Results written before the check have no such
block and are kept.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from value_harms.store import files

log = logging.getLogger(__name__)


def left_out_results(result_files: list[Path]) -> dict[str, dict[str, Any]]:
    """{results.json path: {"benchmark", "reason", "auroc"}} of the results whose judge was left out."""
    out: dict[str, dict[str, Any]] = {}
    for f in result_files:
        try:
            data = files.read_json(f)
        except (OSError, ValueError):
            continue  # load_results warns about unreadable files itself
        prov = (data.get("scorer") or {}).get("provenance")
        check = prov.get("discrimination") if isinstance(prov, dict) else None
        if isinstance(check, dict) and check.get("left_out"):
            out[str(f)] = {
                "benchmark": str((data.get("benchmark") or {}).get("name")),
                "reason": str(check.get("reason") or "the judge does not discriminate on the project's check set"),
                "auroc": check.get("auroc"),
            }
    return out


def leave_out_undiscriminating(df: pd.DataFrame, result_files: list[Path]) -> tuple[pd.DataFrame, list[str]]:
    """The tidy table without the rows of left-out results, and one line per benchmark saying why."""
    left = left_out_results(result_files)
    if not left or df.empty:
        return df, []
    lines = []
    for bench in sorted({v["benchmark"] for v in left.values()}):
        mine = [v for v in left.values() if v["benchmark"] == bench]
        reasons = "; ".join(sorted({v["reason"] for v in mine}))
        lines.append(f"{bench}: {len(mine)} result(s) left out of the findings: {reasons}")
    for line in lines:
        log.warning("%s", line)
    return df[~df["path"].astype(str).isin(left.keys())].reset_index(drop=True), lines
