"""Training-data audit: score the VIM training texts with the configured toxicity scorer.

`python evaluate.py mode=audit [scorer=...] [audit.limit=N]` scores every distinct argument text
(conclusion + premise, the content VIM teaches the model to produce) and reports how many reach
the toxicity threshold. The paper reports 5 flagged of 8K+ texts with Perspective.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from value_harms.data.touche import load_arguments
from value_harms.runtime import runs
from value_harms.runtime.runs import output_dir
from value_harms.scoring import build_scorer, probe
from value_harms.store import files

log = logging.getLogger(__name__)


def audit_texts(args_df) -> list[tuple[str, str]]:
    """(id, text) for each distinct argument text, in table order."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for idx, row in args_df.iterrows():
        text = f"{str(row['Conclusion']).strip()}. {str(row['Premise']).strip()}"
        if text not in seen:
            seen.add(text)
            out.append((str(idx), text))
    return out


def run_audit(cfg) -> dict[str, Any]:

    run_dir = output_dir(cfg)
    args_df = load_arguments(
        cfg.data.source,
        cfg.data.path,
        data_dir=cfg.paths.data_dir,
        hub_id=cfg.data.hub_id,
        revision=cfg.data.revision,
        path_key="data.path",
        data_dir_key="paths.data_dir",
    )
    items = audit_texts(args_df)
    if cfg.audit.limit:
        items = items[: int(cfg.audit.limit)]
    cache_path = Path(os.path.expanduser(cfg.paths.cache_dir)) / "scores.sqlite" if cfg.scorer.cache else None
    probe("toxicity", cfg.scorer)  # resets the breakers; an unreachable Perspective falls back from the start
    scorer = build_scorer("toxicity", cfg.scorer, cache_path=cache_path)
    try:
        scores = scorer.score([t for _, t in items])
        provenance = scorer.provenance()
    finally:
        scorer.close()
    thr = float(cfg.audit.threshold)
    scored = [(i, s) for (i, _), s in zip(items, scores) if s.value is not None]
    flagged = [(i, s.value) for i, s in scored if s.value >= thr]
    top = sorted(scored, key=lambda x: -x[1].value)[: int(cfg.audit.show)]
    result = {
        "texts": len(items),
        "scored": len(scored),
        "missing": len(items) - len(scored),
        "threshold": thr,
        "flagged": len(flagged),
        "flagged_ids": [i for i, _ in flagged],
        "most_toxic": [{"id": i, "score": s.value, "scorer": s.scorer} for i, s in top],
        "scorer": provenance,
        "data": {"source": cfg.data.source, "path": cfg.data.path},
        "git": runs.git_hash(),
    }
    files.atomic_write_json(run_dir / "audit.json", result)
    stand_in = isinstance(provenance, dict) and provenance.get("stand_in")
    print(
        f"training-data audit: {len(flagged)} of {len(scored)} scored texts reach toxicity >= {thr}"
        f" ({len(items) - len(scored)} missing){' [scorer: stand-in, see audit.json]' if stand_in else ''}"
    )
    return result
