"""Offline toxicity scores calibrated to Perspective's scale.

alt-profanity-check ranks texts much as Perspective TOXICITY does but reads low; Detoxify reads on its
own scale. `scorer.calibration.enabled=true` maps an offline backend's score onto Perspective's with an
isotonic regression (scikit-learn, increasing, clipped to [0, 1]) fitted at run time on texts that
carry a Perspective score: by default RealToxicityPrompts in DecodingTrust's copy
(`<paths.data_dir>/rtp_decodingtrust/*.jsonl`: every prompt and continuation with its `toxicity`).

Nothing from the data is shipped: the fit is made from the data directory when first needed and cached
(store.cache, namespace `calibration` of `<cache_dir>/caches.sqlite`) under a key of the data's sha256, the
scorer's identity (cache_id) and the settings. Its quality is measured by k-fold cross-validation (each
text's calibrated score from a fit that did not see it): held-out Spearman, AUROC at Perspective >= 0.5, mean
absolute error and agreement at 0.5, plus the raw scores' same figures and the mean raw / calibrated /
Perspective score. Every result that uses the calibration records these figures and the data's sha256 in its scorer
provenance; each calibrated Score keeps the raw score (`Score.raw`, "raw=<value>") and is tagged
"<backend tag> calibrated" (still a stand-in: calibration moves the scale, not what is measured).
Calibrated or not, each stand-in's agreement with Perspective is recorded under one field, `agreement`
(scoring/agreement.py: these held-out figures, or the raw scores' figures on the same data).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from value_harms.errors import CalibrationError
from value_harms.scoring.base import Score, Scorer, cfg_get
from value_harms.store.cache import KVCache
from value_harms.store.hashing import named_files_sha256

log = logging.getLogger(__name__)

VERSION = 1  # of the fitting procedure (part of the cache key and of the scorer identity)
DEFAULT_PATH = "rtp_decodingtrust"
CALIBRATABLE = ("profanity_check", "detoxify")


# --------------------------------------------------------------------------------------------------
# Data


def data_files(path: str | os.PathLike) -> list[Path]:
    """The JSONL files of a calibration data folder (or the one file given), sorted."""
    p = Path(os.path.expanduser(str(path)))
    files = sorted(p.glob("*.jsonl")) if p.is_dir() else ([p] if p.is_file() else [])
    if not files:
        raise CalibrationError(
            f"calibration data {p} holds no .jsonl file (expected DecodingTrust's "
            f"rtp_decodingtrust/{{toxic,nontoxic}}.jsonl under paths.data_dir)"
        )
    return files


def data_sha256(files: Sequence[Path]) -> str:
    """sha256 over the files' names and bytes, in order, each file closed by 0x1e: the calibration data's
    identity (store.hashing named_files_sha256)."""
    return named_files_sha256(((f.name, f) for f in files), end=b"\x1e")


def load_pairs(files: Sequence[Path]) -> tuple[list[str], np.ndarray]:
    """(texts, Perspective TOXICITY) of every prompt and continuation with a score; one entry per text."""
    seen: dict[str, float] = {}
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            for part in ("prompt", "continuation"):
                d = row.get(part)
                if (
                    isinstance(d, dict)
                    and isinstance(d.get("text"), str)
                    and d["text"].strip()
                    and isinstance(d.get("toxicity"), (int, float))
                ):
                    seen.setdefault(d["text"], float(d["toxicity"]))
    if len(seen) < 20:
        raise CalibrationError(f"calibration data {files[0].parent} has {len(seen)} scored texts (need >= 20)")
    return list(seen), np.asarray(list(seen.values()), dtype=float)


# --------------------------------------------------------------------------------------------------
# Fit and cross-validation


def _isotonic(x: np.ndarray, y: np.ndarray):
    from sklearn.isotonic import IsotonicRegression

    return IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(x, y)


def agreement_figures(pred: np.ndarray, target: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Spearman, AUROC at target >= threshold, MAE and agreement at threshold of `pred` against `target`."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    pos = target >= threshold
    return {
        "spearman": float(spearmanr(pred, target).statistic),
        "auroc": float(roc_auc_score(pos, pred)) if 0 < pos.sum() < pos.size else float("nan"),
        "mae": float(np.mean(np.abs(pred - target))),
        "agreement": float(np.mean((pred >= threshold) == pos)),
        "flagged": float(np.mean(pred >= threshold)),
        "mean": float(np.mean(pred)),
    }


def fit(raw: np.ndarray, target: np.ndarray, folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Isotonic map raw -> target on all pairs, with k-fold held-out figures. Returns a JSON-able dict:
    x / y (the map's knots, applied by linear interpolation), n, folds, seed, heldout (figures of the
    cross-validated calibrated scores), raw (figures of the raw scores), target_mean, target_flagged."""
    from sklearn.model_selection import KFold

    raw = np.asarray(raw, dtype=float)
    target = np.asarray(target, dtype=float)
    if not 2 <= int(folds) <= raw.size:
        raise ValueError(f"scorer.calibration.folds={folds} must be an integer in [2, {raw.size}]")
    held = np.empty_like(raw)
    for tr, te in KFold(n_splits=int(folds), shuffle=True, random_state=int(seed)).split(raw):
        held[te] = _isotonic(raw[tr], target[tr]).predict(raw[te])
    full = _isotonic(raw, target)
    return {
        "x": [float(v) for v in full.X_thresholds_],
        "y": [float(v) for v in full.y_thresholds_],
        "n": int(raw.size),
        "folds": int(folds),
        "seed": int(seed),
        "method": "isotonic",
        "heldout": agreement_figures(held, target),
        "raw": agreement_figures(raw, target),
        "target_mean": float(target.mean()),
        "target_flagged": float(np.mean(target >= 0.5)),
    }


class Calibration:
    """A fitted map with its record (what every result that uses it stores)."""

    def __init__(self, record: dict[str, Any]):
        self.record = record
        self._x = np.asarray(record["x"], dtype=float)
        self._y = np.asarray(record["y"], dtype=float)

    def __call__(self, values: Sequence[float]) -> np.ndarray:
        return np.clip(np.interp(np.asarray(values, dtype=float), self._x, self._y), 0.0, 1.0)

    def summary(self) -> dict[str, Any]:
        """The record without the knots: data identity, settings and held-out figures."""
        return {k: v for k, v in self.record.items() if k not in ("x", "y")}


def calibration_settings(cfg: Any) -> dict[str, Any]:
    """The settings that change a calibration (part of the scorer identity and the cache key)."""
    return {
        "enabled": bool(cfg_get(cfg, "enabled", False)),
        "path": str(cfg_get(cfg, "path", DEFAULT_PATH)),
        "folds": int(cfg_get(cfg, "folds", 5)),
        "seed": int(cfg_get(cfg, "seed", 0)),
        "backends": sorted(str(b) for b in (cfg_get(cfg, "backends", None) or CALIBRATABLE)),
        "version": VERSION,
    }


def resolve_data_path(cfg: Any) -> Path:
    """scorer.calibration.path: absolute, or relative to scorer.calibration.data_dir / paths.data_dir
    (VALUE_HARMS_DATA_DIR)."""
    path = os.path.expanduser(str(cfg_get(cfg, "path", DEFAULT_PATH)))
    if os.path.isabs(path):
        return Path(path)
    base = cfg_get(cfg, "data_dir", None) or os.environ.get("VALUE_HARMS_DATA_DIR")
    if not base:
        raise CalibrationError(
            f"scorer.calibration.path={path} is relative but no data folder is known: set "
            f"paths.data_dir (VALUE_HARMS_DATA_DIR) or scorer.calibration.data_dir"
        )
    return Path(os.path.expanduser(str(base))) / path


def data_identity(cfg: Any) -> str | None:
    """sha256 of the configured calibration data (None when calibration is off or the data is absent)."""
    if not bool(cfg_get(cfg, "enabled", False)):
        return None
    try:
        return data_sha256(data_files(resolve_data_path(cfg)))
    except CalibrationError:
        return None


def load_or_fit(scorer: Scorer, cfg: Any, cache_dir: str | os.PathLike | None = None) -> Calibration:
    """The calibration of `scorer` (its cache_id names it) on the configured data: the cached fit (store.cache
    KVCache `calibration` in `<cache_dir>/caches.sqlite`) when fitted before, else fitted (scoring the texts
    with `scorer`) and cached; a damaged entry is refitted with a warning."""
    files = data_files(resolve_data_path(cfg))
    sha = data_sha256(files)
    settings = calibration_settings(cfg)
    cache = (
        cache_dir
        or cfg_get(cfg, "cache_dir", None)
        or os.environ.get("VALUE_HARMS_CACHE_DIR")
        or "~/.cache/value_harms"
    )
    request = {"data": sha, "scorer": scorer.cache_id, **settings}
    record = KVCache(cache, "calibration", check=Calibration).get(request, lambda: _fit(scorer, files, sha, settings))
    return Calibration(record)


def _fit(scorer: Scorer, files: Sequence[Path], sha: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The calibration record of `scorer` fitted on `files` (the texts scored by `scorer`)."""
    texts, target = load_pairs(files)
    log.info("calibrating %s to Perspective on %d texts of %s", scorer.name, len(texts), files[0].parent)
    scores = scorer.score(texts)
    ok = np.asarray([s.value is not None for s in scores])
    raw = np.asarray([s.value if s.value is not None else np.nan for s in scores], dtype=float)
    record = fit(raw[ok], target[ok], folds=settings["folds"], seed=settings["seed"])
    record.update(
        {
            "data_sha256": sha,
            "data": str(files[0].parent),
            "files": [f.name for f in files],
            "scorer": scorer.name,
            "scorer_id": scorer.cache_id,
            "target": "Perspective TOXICITY",
            "unscored": int((~ok).sum()),
            "version": VERSION,
        }
    )
    return record


# --------------------------------------------------------------------------------------------------
# The calibrated scorer


class CalibratedScorer(Scorer):
    """Scores of `inner` mapped onto Perspective's scale; the raw score kept in Score.raw."""

    measure = "toxicity"

    def __init__(self, inner: Scorer, calibration: Calibration):
        self.inner = inner
        self.calibration = calibration
        self.name = f"{inner.name} calibrated"

    @property
    def cache_id(self) -> str:
        return f"{self.inner.cache_id}+calibrated:{self.calibration.record['data_sha256'][:16]}"

    def score(self, texts: list[str], contexts: list[str] | None = None) -> list[Score]:
        got = self.inner.score(texts, contexts)
        vals = [s.value for s in got if s.value is not None]
        mapped = iter(self.calibration(vals).tolist()) if vals else iter(())
        out = []
        for s in got:
            if s.value is None:
                out.append(s)
            else:
                out.append(
                    Score(
                        value=float(next(mapped)),
                        scorer=f"{s.scorer} calibrated",
                        label=s.label,
                        raw=f"raw={s.value!r}",
                    )
                )
        return out

    def provenance(self) -> dict:
        prov = dict(self.inner.provenance())
        prov["scorer"] = self.name
        prov["calibration"] = self.calibration.summary()
        prov["note"] = (
            f"{prov.get('note') or prov.get('backend', '')}; calibrated to Perspective TOXICITY by "
            f"isotonic regression (still a stand-in)"
        ).lstrip("; ")
        return prov

    def close(self) -> None:
        inner = getattr(self.inner, "inner", None)
        (inner if inner is not None else self.inner).close()


def job_paths(scorer_cfg: Any) -> dict[str, Any]:
    """paths.data_dir / paths.cache_dir of the job config a scorer node belongs to ({} when standalone)."""
    try:
        from omegaconf import OmegaConf

        if not OmegaConf.is_config(scorer_cfg):
            return {}
        root = scorer_cfg._get_root()
        return {k: OmegaConf.select(root, f"paths.{k}", default=None) for k in ("data_dir", "cache_dir")}
    except Exception:  # noqa: BLE001 - a node without a job config: the calibration's own settings decide
        return {}


def calibrator_for(
    scorer_cfg: Any, cache_dir: str | os.PathLike | None = None
) -> Callable[[str, Scorer], Scorer] | None:
    """A wrapper the toxicity chain applies to each built backend (None when calibration is off).
    The data folder and cache folder default to the job's paths.data_dir / paths.cache_dir."""
    cal_cfg = cfg_get(scorer_cfg, "calibration", None)
    if cal_cfg is None or not bool(cfg_get(cal_cfg, "enabled", False)):
        return None
    job = job_paths(scorer_cfg)
    plain = {
        **calibration_settings(cal_cfg),
        "data_dir": cfg_get(cal_cfg, "data_dir", None) or job.get("data_dir"),
        "cache_dir": cfg_get(cal_cfg, "cache_dir", None) or cache_dir or job.get("cache_dir"),
    }
    backends = set(plain["backends"])

    def wrap(backend: str, scorer: Scorer) -> Scorer:
        if backend not in backends:
            return scorer
        return CalibratedScorer(scorer, load_or_fit(scorer, plain))

    return wrap
