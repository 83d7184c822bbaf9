"""Scoring: one `Scorer` interface for toxicity, regard and LLM-judge measures.

`build_scorer(measure, scorer_cfg, cache_path)` picks the scorer a benchmark's `measure` needs;
`probe(measure, scorer_cfg)`, called at the start of each job before any generation, resets the
network circuit breakers and checks the network scorer that measure will use.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from value_harms.errors import EndpointUnreachable, ScorerError, ScorerUnavailable
from value_harms.scoring.base import MEASURES, Score, Scorer, cfg_get, text_key, unique_items
from value_harms.scoring.cache import CachedScorer, ScoreCache

__all__ = [
    "MEASURES",
    "CachedScorer",
    "EndpointUnreachable",
    "Score",
    "ScoreCache",
    "Scorer",
    "ScorerError",
    "ScorerUnavailable",
    "build_scorer",
    "probe",
    "reset_breakers",
    "text_key",
    "unique_items",
]


def build_scorer(measure: str, scorer_cfg: Any, cache_path: str | None = None) -> Scorer:
    """The scorer for a benchmark's `measure` ("toxicity" | "regard" | "harmfulness" | "flag").

    Backends are imported here, lazily, so importing the package costs nothing and a missing
    optional dependency only matters for the measure that needs it.
    """
    if measure == "toxicity":
        from value_harms.scoring.toxicity.chain import build_toxicity_scorer

        return build_toxicity_scorer(scorer_cfg, cache_path=cache_path)
    if measure == "regard":
        from value_harms.scoring.regard import build_regard_scorer

        return build_regard_scorer(scorer_cfg, cache_path=cache_path)
    if measure in ("harmfulness", "flag"):
        from value_harms.scoring.judge import build_judge_scorer

        return build_judge_scorer(measure, scorer_cfg, cache_path)
    raise ValueError(f"unknown measure {measure!r}: expected one of {', '.join(MEASURES)}")


log = logging.getLogger(__name__)


def reset_breakers() -> None:
    """Forget every endpoint's failures (each job starts with closed circuit breakers)."""
    from value_harms.scoring.http import reset_breakers as _reset

    _reset()


def probe(measure: str, scorer_cfg: Any) -> dict[str, Any]:
    """Reset the circuit breakers, then check the network scorer `measure` will use with ONE cheap
    request and a short timeout (`scorer.probe_timeout_s`), before any generation.

    - toxicity, when the chain has Perspective and its key variable is set: an unreachable endpoint
      opens its breaker and logs one warning (the chain then uses its fallback for every text without
      trying Perspective per text); a rejected key raises `ScorerError`.
    - harmfulness / flag with the openai judge backend: a missing key, a missing rubric, an
      unreachable endpoint (`EndpointUnreachable`), a rejected key or an unknown model (`ScorerError`)
      raise a one-line error: the judge has no fallback, so the job stops before generating.
    - anything else (regard, local judge, no Perspective in the chain): nothing to check.

    Returns what was checked, without secrets: {"measure", "scorer", "endpoint", "ok" (True / False /
    None when nothing was checked), "status", "reason", "seconds"}.
    """
    reset_breakers()
    info: dict[str, Any] = {"measure": measure, "scorer": None, "endpoint": None, "ok": None,
                            "status": None, "reason": "no network scorer for this measure", "seconds": 0.0}
    if not bool(cfg_get(scorer_cfg, "probe", True)):
        info["reason"] = "scorer.probe=false"
        return info
    from value_harms.scoring.http import DEFAULT_PROBE_TIMEOUT_S, endpoint_id

    timeout = float(cfg_get(scorer_cfg, "probe_timeout_s", DEFAULT_PROBE_TIMEOUT_S))
    t0 = time.monotonic()
    if measure == "toxicity":
        order = [str(b) for b in [scorer_cfg.toxicity, *list(scorer_cfg.fallback or [])]]
        if "perspective" not in order:
            return info
        pcfg = scorer_cfg.perspective
        env = str(pcfg.api_key_env)
        info.update(scorer="perspective", endpoint=endpoint_id(str(pcfg.endpoint)))
        key = os.environ.get(env, "").strip()
        if not key:
            info["reason"] = f"{env} not set: Perspective is not used"
            return info
        from value_harms.scoring.toxicity.perspective import PerspectiveScorer

        scorer = PerspectiveScorer(pcfg, key, breaker_cfg=cfg_get(scorer_cfg, "breaker"))
        try:
            scorer.probe(timeout)
        except EndpointUnreachable as exc:
            rest = [b for b in order if b != "perspective"]
            log.warning("Perspective at %s unreachable (%s): toxicity falls back to %s for this job, "
                        "without a request per text", info["endpoint"], exc.reason,
                        " > ".join(rest) if rest else "nothing (every score will be missing)")
            info.update(ok=False, reason=exc.reason)
        else:
            info.update(ok=True, status="reachable", reason="answered")
        finally:
            scorer.close()
    elif measure in ("harmfulness", "flag"):
        judge_cfg = cfg_get(scorer_cfg, "judge")
        backend = str(cfg_get(judge_cfg, "backend", "openai"))
        info["scorer"] = f"judge:{backend}"
        if backend != "openai":
            info["reason"] = "local judge: nothing to reach"
            return info
        from value_harms.scoring.judge import build_judge_scorer

        info["endpoint"] = endpoint_id(str(cfg_get(judge_cfg, "base_url")).rstrip("/") + "/chat/completions")
        judge = build_judge_scorer(measure, scorer_cfg, None)  # no key / no rubric: ScorerUnavailable
        try:
            info.update(ok=True, status=judge.probe(timeout), reason="answered")  # type: ignore[attr-defined]
        finally:
            judge.close()
    else:
        return info
    info["seconds"] = round(time.monotonic() - t0, 3)
    log.info("scorer probe: %s", info)
    return info
