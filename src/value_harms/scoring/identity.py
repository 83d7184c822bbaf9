"""The part of a scorer config that changes the scores of a measure (never secrets, rates, retries or
timeouts); part of every evaluation key."""

from __future__ import annotations

import os
from typing import Any

from value_harms.store.files import to_plain
from value_harms.store.identity import content_sha256

# Scorer settings that change scores, per backend (rate limits, retries, timeouts, caches do not).
_SCORER_KEYS = {
    "perspective": ("endpoint", "attribute"),
    "detoxify": ("variant", "checkpoint_sha256"),
    "judge": (
        "backend",
        "model",
        "revision",
        "base_url",
        "rubric_file",
        "rubric_sha256",
        "temperature",
        "top_p",
        "max_tokens",
        "constrained",
        "stand_in",
        "dtype",
    ),
    "regard": ("model", "revision", "mask", "checkpoint"),
}
# Settings that change scores but were added after results were stored: part of the identity only when they
# differ from the value every earlier result was scored with, so stored keys hold.
_LATER_KEYS = {"perspective": {"languages": ["en"]}}


def scorer_identity(scorer_cfg: Any, measure: str) -> dict[str, Any]:
    """The part of the scorer config that changes the scores of `measure` (never secrets, rates,
    retries or timeouts). The toxicity chain's order is part of it: which backend is preferred."""
    sc = to_plain(scorer_cfg) or {}

    def pick(section: str) -> dict[str, Any]:
        d = sc.get(section) or {}
        out = {k: d.get(k) for k in _SCORER_KEYS[section] if k in d}
        for k, before in _LATER_KEYS.get(section, {}).items():
            if k in d and d[k] != before:
                out[k] = d[k]
        for f in ("rubric_file", "checkpoint"):
            if d.get(f) and os.path.isfile(os.path.expanduser(str(d[f]))):
                out[f] = content_sha256(d[f])
        return out

    if measure == "toxicity":
        out = {
            "toxicity": sc.get("toxicity"),
            "fallback": sc.get("fallback"),
            "perspective": pick("perspective"),
            "detoxify": pick("detoxify"),
        }
        cal = sc.get("calibration") or {}
        if cal.get("enabled"):  # calibrated scores are other scores (settings + data sha256)
            from value_harms.scoring.calibration import _job_paths, calibration_settings, data_identity

            where = {**cal, "data_dir": cal.get("data_dir") or _job_paths(scorer_cfg).get("data_dir")}
            out["calibration"] = {**calibration_settings(cal), "data_sha256": data_identity(where)}
        return out
    if measure == "regard":
        return {"regard": pick("regard")}
    if measure in ("harmfulness", "flag"):
        return {"judge": pick("judge")}
    return {}
