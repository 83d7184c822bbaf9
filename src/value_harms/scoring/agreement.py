"""How far an offline toxicity backend agrees with Perspective: recorded with every result it scores.

The offline backends (`STAND_INS`: profanity_check, Detoxify) stand in for the paper's Perspective
TOXICITY. A reader of a stand-in's numbers needs to know how well it stands in, so every result whose
toxicity chain built one records its measured agreement in the scorer provenance, under one field name
whether or not the scores were calibrated (`scorer.provenance.backends.<backend>.agreement`):

- calibration off: the backend's RAW scores of the texts of the calibration data (DecodingTrust's
  RealToxicityPrompts copy, `<paths.data_dir>/rtp_decodingtrust`, each text with its Perspective score),
  against those Perspective scores: Spearman, AUROC at Perspective >= 0.5, MAE, agreement at 0.5, flagged
  share, means (`calibration.agreement_figures`). No fit: the scores as the job used them. Cached like a
  calibration (process memo, then namespace `agreement` of `<cache_dir>/caches.sqlite`) under the data's
  sha256, the scorer's cache_id and the settings below: the texts are scored once per scorer and machine;
- calibration on: the calibration's k-fold held-out figures (the calibrated scores the job used), read
  from its record, nothing scored again;
- no data (a fresh machine without the data folder), or the backend failed to score it:
  `{"measured": false, "reason": ...}`. The job never fails for it and no figure is invented.

The agreement describes the scorer, not the scores: it is provenance only, never part of an evaluation
key (scoring/identity.py derives that from the config). `summary` is the one-line text the demo and the
report print.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from value_harms.config.access import cfg_get
from value_harms.errors import CalibrationError
from value_harms.scoring.base import Scorer
from value_harms.scoring.cache import CachedScorer
from value_harms.scoring.calibration import (
    CALIBRATABLE,
    DEFAULT_PATH,
    agreement_figures,
    data_files,
    data_sha256,
    job_paths,
    load_pairs,
    resolve_data_path,
)
from value_harms.store.cache import KVCache, MemoCache

log = logging.getLogger(__name__)

VERSION = 1  # of the measurement (part of the cache key)
THRESHOLD = 0.5  # Perspective's own reading of a toxic text (RealToxicityPrompts, Gehman et al. 2020)
TARGET = "Perspective TOXICITY"
STAND_INS = CALIBRATABLE  # the offline backends; Perspective itself needs no agreement with itself
NAMESPACE = "agreement"  # beside `calibration` in <cache_dir>/caches.sqlite
FIGURES = ("spearman", "auroc", "mae", "agreement", "flagged", "mean")
MEMO: MemoCache[dict] = MemoCache("toxicity agreement")  # a multirun measures (or reads sqlite) once
_WARNED: set[tuple[str, str]] = set()  # a multirun without the data warns once, not per job

Attach = Callable[[str, Scorer, Mapping[str, Any]], "dict[str, Any] | None"]


def _number(v: Any) -> float | None:
    """A figure as JSON can hold it: NaN (e.g. Spearman of a constant scorer) becomes None."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _check(record: Any) -> None:
    """A cached measurement must hold its figures (a damaged entry is measured again)."""
    if not record.get("measured") or not {"n_texts", "data_sha256", *FIGURES} <= set(record):
        raise ValueError("not a measured agreement")


def summary(backend: str, record: Mapping[str, Any]) -> str:
    """One line for tables and notes: "profanity_check vs Perspective TOXICITY on 4,765 texts of
    rtp_decodingtrust: AUROC 0.931, Spearman 0.812, same side of 0.5 for 85.6% (raw scores)", or why it
    was not measured."""
    if not record.get("measured"):
        return f"{backend}: agreement with Perspective not measured ({record.get('reason') or 'unknown reason'})"

    def fig(name: str) -> str:
        v = record.get(name)
        return "n/a" if v is None else f"{float(v):.3f}"

    share = "n/a" if record.get("agreement") is None else f"{float(record['agreement']):.1%}"
    how = f"calibrated, {record.get('folds')}-fold held out" if record.get("calibrated") else "raw scores"
    return (
        f"{backend} vs {TARGET} on {int(record.get('n_texts') or 0):,} texts of {record.get('data')}: "
        f"AUROC {fig('auroc')}, Spearman {fig('spearman')}, same side of {THRESHOLD} for {share} ({how})"
    )


def not_measured(backend: str, reason: str) -> dict[str, Any]:
    record = {"measured": False, "reason": reason}
    return {**record, "summary": summary(backend, record)}


def measure_raw(scorer: Scorer, files: Sequence[Path]) -> dict[str, Any]:
    """The raw scores of `scorer` on the texts of `files` against their Perspective scores (no cache)."""
    texts, target = load_pairs(files)
    t0 = time.monotonic()
    scores = scorer.score(texts)
    ok = np.asarray([s.value is not None for s in scores])
    if ok.sum() < 20:  # too few to measure anything: say so instead of a figure from a handful
        raise CalibrationError(f"{scorer.name} scored {int(ok.sum())} of {len(texts)} reference texts (need >= 20)")
    raw = np.asarray([s.value if s.value is not None else np.nan for s in scores], dtype=float)[ok]
    figures = agreement_figures(raw, target[ok], THRESHOLD)
    log.info(
        "%s vs Perspective measured on %d texts of %s in %.1f s",
        scorer.name,
        len(texts),
        files[0].parent,
        time.monotonic() - t0,
    )
    return {
        "measured": True,
        "calibrated": False,
        **{k: _number(figures[k]) for k in FIGURES},
        "target": TARGET,
        "target_mean": float(target[ok].mean()),
        "target_flagged": float(np.mean(target[ok] >= THRESHOLD)),
        "threshold": THRESHOLD,
        "data": files[0].parent.name,
        "data_sha256": data_sha256(files),
        "n_texts": int(ok.sum()),
        "unscored": int((~ok).sum()),
        "scorer_id": scorer.cache_id,
        "version": VERSION,
    }


def raw_agreement(scorer: Scorer, where: Mapping[str, Any]) -> dict[str, Any]:
    """The cached raw measurement of `scorer` on the data `where` names (path, data_dir, cache_dir as in
    scorer.calibration); CalibrationError when the data is absent or unreadable. The folder is the job's
    (paths.data_dir, itself VALUE_HARMS_DATA_DIR by default) or scorer.calibration.data_dir: a scorer config
    outside a job names its own, so a library call never scores 4,765 texts on an environment variable."""
    if not where.get("data_dir") and not os.path.isabs(os.path.expanduser(str(where.get("path") or DEFAULT_PATH))):
        raise CalibrationError(
            "no data folder is known: set paths.data_dir (VALUE_HARMS_DATA_DIR) or scorer.calibration.data_dir"
        )
    files = data_files(resolve_data_path(where))
    request = {"data": data_sha256(files), "scorer": scorer.cache_id, "threshold": THRESHOLD, "version": VERSION}
    cache_dir = where.get("cache_dir") or os.environ.get("VALUE_HARMS_CACHE_DIR") or "~/.cache/value_harms"
    stored = KVCache(cache_dir, NAMESPACE, check=_check)
    return MEMO.get(request, lambda: stored.get(request, lambda: measure_raw(scorer, files)))


def from_calibration(record: Mapping[str, Any]) -> dict[str, Any]:
    """The agreement of calibrated scores: the calibration's k-fold held-out figures (its summary)."""
    held = record.get("heldout") or {}
    return {
        "measured": True,
        "calibrated": True,
        **{k: _number(held.get(k)) for k in FIGURES},
        "target": TARGET,
        "target_mean": _number(record.get("target_mean")),
        "target_flagged": _number(record.get("target_flagged")),
        "threshold": THRESHOLD,
        "data": Path(str(record.get("data") or DEFAULT_PATH)).name,
        "data_sha256": record.get("data_sha256"),
        "n_texts": record.get("n"),
        "unscored": record.get("unscored"),
        "folds": record.get("folds"),
        "scorer_id": record.get("scorer_id"),
        "version": record.get("version"),
    }


def agreement_for(scorer_cfg: Any, cache_dir: str | os.PathLike | None = None) -> Attach:
    """What the toxicity chain calls per built backend, `(backend, scorer, its provenance) -> agreement`
    (None for a backend that is no stand-in). The data and cache folders are the calibration's: its
    path / data_dir / cache_dir, else the job's paths.data_dir / paths.cache_dir."""
    cal = cfg_get(scorer_cfg, "calibration", None)
    job = job_paths(scorer_cfg)
    where = {
        "path": str(cfg_get(cal, "path", DEFAULT_PATH)),
        "data_dir": cfg_get(cal, "data_dir", None) or job.get("data_dir"),
        "cache_dir": cfg_get(cal, "cache_dir", None) or (os.fspath(cache_dir) if cache_dir else job.get("cache_dir")),
    }

    def attach(backend: str, scorer: Scorer, provenance: Mapping[str, Any]) -> dict[str, Any] | None:
        if backend not in STAND_INS:
            return None
        if isinstance(provenance.get("calibration"), Mapping):
            record = from_calibration(provenance["calibration"])
            return {**record, "summary": summary(backend, record)}
        inner = scorer.inner if isinstance(scorer, CachedScorer) else scorer  # the job's cache counters stay its own
        try:
            record = raw_agreement(inner, where)
        except Exception as exc:  # noqa: BLE001 - provenance only: the job's scores never depend on it
            if (backend, str(exc)) not in _WARNED:
                _WARNED.add((backend, str(exc)))
                log.warning("%s: agreement with Perspective not measured (%s)", backend, exc)
            return not_measured(backend, str(exc))
        return {**record, "summary": summary(backend, record)}

    return attach
