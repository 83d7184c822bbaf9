"""Scoring: one `Scorer` interface for toxicity, regard and LLM-judge measures.

`SCORERS` is the registry: scorer name (the `scorer` of a measure in value_harms.eval.measures) ->
`ScorerKind` (how to build it, how to probe its endpoint, which config backends it accepts).
`build_scorer(name, scorer_cfg, cache_path)` builds the one a benchmark's measure needs;
`probe(name, scorer_cfg)`, called at the start of each job before any generation, resets the network
circuit breakers and checks the network scorer that measure will use; `check_scorer_config(name,
scorer_cfg)` checks its backend names at load. A new scorer = its module in scoring/ + one entry here + its
settings section in the schema (config/schema/evaluate.py, transport settings marked) + conf/scorer/<name>.yaml;
its part of the evaluation key follows by rule from the sections it reads (scoring/identity.py).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from value_harms.errors import ConfigError, EndpointUnreachable, ScorerError, ScorerUnavailable
from value_harms.net import DEFAULT_PROBE_TIMEOUT_S, endpoint_id
from value_harms.net import reset_breakers as _reset
from value_harms.scoring.base import Score, Scorer, cfg_get, text_key, unique_items
from value_harms.scoring.cache import CachedScorer, ScoreCache
from value_harms.scoring.calibration import calibration_settings, data_identity, job_paths
from value_harms.scoring.judge import build_judge_scorer
from value_harms.scoring.judge.rubric import BACKENDS as JUDGE_BACKENDS
from value_harms.scoring.regard import build_regard_scorer
from value_harms.scoring.toxicity.chain import BACKENDS as TOXICITY_BACKENDS
from value_harms.scoring.toxicity.chain import build_toxicity_scorer, resolve_backend
from value_harms.scoring.toxicity.perspective import PerspectiveScorer
from value_harms.store.files import to_plain

__all__ = [
    "SCORERS",
    "CachedScorer",
    "EndpointUnreachable",
    "Score",
    "ScoreCache",
    "Scorer",
    "ScorerError",
    "ScorerKind",
    "ScorerUnavailable",
    "build_scorer",
    "check_scorer_config",
    "probe",
    "reset_breakers",
    "text_key",
    "unique_items",
]

log = logging.getLogger(__name__)

# Backends are imported inside the builders, lazily (a function-level import in this module always has
# that reason): importing the package costs nothing and a missing optional dependency (torch,
# transformers, detoxify, requests) only matters for the scorer that needs it.


def _build_toxicity(name: str, scorer_cfg: Any, cache_path: str | None) -> Scorer:

    return build_toxicity_scorer(scorer_cfg, cache_path=cache_path)


def _build_regard(name: str, scorer_cfg: Any, cache_path: str | None) -> Scorer:

    return build_regard_scorer(scorer_cfg, cache_path=cache_path)


def _build_judge(name: str, scorer_cfg: Any, cache_path: str | None) -> Scorer:

    return build_judge_scorer(name, scorer_cfg, cache_path)


def _toxicity_backends(scorer_cfg: Any) -> dict[str, tuple[list[str], tuple[str, ...]]]:

    primary, fallback = cfg_get(scorer_cfg, "toxicity", "perspective"), cfg_get(scorer_cfg, "fallback", [])
    names = [str(b) for b in [primary, *list(fallback)]]
    return {"scorer.toxicity / scorer.fallback": (names, tuple(TOXICITY_BACKENDS))}


def _judge_backends(scorer_cfg: Any) -> dict[str, tuple[list[str], tuple[str, ...]]]:

    return {"scorer.judge.backend": ([str(cfg_get(cfg_get(scorer_cfg, "judge"), "backend", "openai"))], JUDGE_BACKENDS)}


@dataclass(frozen=True)
class ScorerKind:
    """One scorer. `build(name, scorer_cfg, cache_path)`: the Scorer; `probe(name, scorer_cfg, info,
    timeout)`: check its network endpoint once before generation (None: nothing to reach); `check(name,
    scorer_cfg, info)`: what it needs to score at all, resolved before generation whatever
    `scorer.probe` says (None: nothing); `backends(scorer_cfg)`: {config key: (names configured, names
    known)} checked at load. `sections`: the keys of the scorer config it reads (empty: its own section,
    `scorer.<name>`); its identity, part of the evaluation key, is derived from them by rule
    (scoring/identity.py). `identity(scorer_cfg, derived)`: that identity refined, when the scorer adds
    what its settings cannot say (the calibration data's sha256)."""

    build: Callable[[str, Any, str | None], Scorer]
    probe: Callable[[str, Any, dict, float], None] | None = None
    backends: Callable[[Any], dict[str, tuple[list[str], tuple[str, ...]]]] | None = None
    check: Callable[[str, Any, dict], None] | None = None
    sections: tuple[str, ...] = ()
    identity: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None


def build_scorer(name: str, scorer_cfg: Any, cache_path: str | None = None) -> Scorer:
    """The registered scorer `name` (a measure's `scorer`: "toxicity" | "regard" | "harmfulness" | "flag")."""
    return _kind(name).build(name, scorer_cfg, cache_path)


def _kind(name: str) -> ScorerKind:
    if name not in SCORERS:
        raise ConfigError(
            f"unknown measure {name!r} for scoring: no scorer registered; expected one of {', '.join(SCORERS)}"
        )
    return SCORERS[name]


def check_scorer_config(name: str, scorer_cfg: Any) -> None:
    """The backend names `scorer_cfg` gives scorer `name`, checked against the registries (one line)."""
    kind = _kind(name)
    for key, (names, known) in (kind.backends(scorer_cfg) if kind.backends and scorer_cfg is not None else {}).items():
        bad = [b for b in names if b not in known]
        if bad:
            raise ConfigError(f"{key}: unknown backend {bad[0]!r}; expected one of {', '.join(known)}")


def reset_breakers() -> None:
    """Forget every endpoint's failures (each job starts with closed circuit breakers)."""

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
    - anything else (regard, local judge, no Perspective in the chain): nothing to reach.
    Then, whatever `scorer.probe` says, the scorer's `check` (toxicity: the chain resolved to the
    backend that will score, Detoxify's weights fetched with bounded timeouts): a job that cannot
    score stops here with a one-line `ScorerError`, before any generation.

    Returns what was checked, without secrets: {"measure", "scorer", "endpoint", "ok" (True / False /
    None when nothing was reached), "status", "reason", "seconds"} (+ "backend", "unavailable" from
    the toxicity check).
    """
    reset_breakers()
    info: dict[str, Any] = {
        "measure": measure,
        "scorer": None,
        "endpoint": None,
        "ok": None,
        "status": None,
        "reason": "no network scorer for this measure",
        "seconds": 0.0,
    }
    kind = SCORERS.get(measure)
    t0 = time.monotonic()
    if not bool(cfg_get(scorer_cfg, "probe", True)):
        info["reason"] = "scorer.probe=false"
    elif kind is not None and kind.probe is not None:
        timeout = float(cfg_get(scorer_cfg, "probe_timeout_s", DEFAULT_PROBE_TIMEOUT_S))
        if kind.probe(measure, scorer_cfg, info, timeout):
            info["seconds"] = round(time.monotonic() - t0, 3)
            log.info("scorer probe: %s", info)
    if kind is not None and kind.check is not None:
        kind.check(measure, scorer_cfg, info)
    return info


def _check_toxicity(name: str, scorer_cfg: Any, info: dict[str, Any]) -> None:
    """The backend the chain will score with, resolved now (ScorerError when none can)."""
    down = {"perspective": f"unreachable ({info['reason']})"} if info.get("scorer") == "perspective" else {}
    used, skipped = resolve_backend(scorer_cfg, down if info.get("ok") is False else None)
    info.update(backend=used, unavailable=skipped)


def _toxicity_identity(scorer_cfg: Any, derived: dict[str, Any]) -> dict[str, Any]:
    """Calibrated scores are other scores: the calibration's settings, fitting version and data sha256 (as
    its fit's cache key). Off, it has no part at all (keys of uncalibrated results hold)."""
    cal = cfg_get(scorer_cfg, "calibration") or {}
    settings = derived.pop("calibration", None) or {}
    if bool(cfg_get(cal, "enabled", False)):
        where = {**to_plain(cal), "data_dir": cfg_get(cal, "data_dir") or job_paths(scorer_cfg).get("data_dir")}
        derived["calibration"] = {**settings, **calibration_settings(cal), "data_sha256": data_identity(where)}
    return derived


def _probe_toxicity(name: str, scorer_cfg: Any, info: dict[str, Any], timeout: float) -> bool:
    """Perspective, when the chain has it and its key is set (else False: nothing was checked)."""

    order = [str(b) for b in [scorer_cfg.toxicity, *list(scorer_cfg.fallback or [])]]
    if "perspective" not in order:
        return False
    pcfg = scorer_cfg.perspective
    env = str(pcfg.api_key_env)
    info.update(scorer="perspective", endpoint=endpoint_id(str(pcfg.endpoint)))
    key = os.environ.get(env, "").strip()
    if not key:
        info["reason"] = f"{env} not set: Perspective is not used"
        return False

    scorer = PerspectiveScorer(pcfg, key, breaker_cfg=cfg_get(scorer_cfg, "breaker"))
    try:
        scorer.probe(timeout)
    except EndpointUnreachable as exc:
        rest = [b for b in order if b != "perspective"]
        log.warning(
            "Perspective at %s unreachable (%s): toxicity falls back to %s for this job, without a request per text",
            info["endpoint"],
            exc.reason,
            " > ".join(rest) if rest else "nothing (every score will be missing)",
        )
        info.update(ok=False, reason=exc.reason)
    else:
        info.update(ok=True, status="reachable", reason="answered")
    finally:
        scorer.close()
    return True


def _probe_judge(name: str, scorer_cfg: Any, info: dict[str, Any], timeout: float) -> bool:
    """The openai judge backend's endpoint, key, model and rubric (a local judge: False, nothing to reach)."""

    judge_cfg = cfg_get(scorer_cfg, "judge")
    backend = str(cfg_get(judge_cfg, "backend", "openai"))
    info["scorer"] = f"judge:{backend}"
    if backend != "openai":
        info["reason"] = "local judge: nothing to reach"
        return False

    info["endpoint"] = endpoint_id(str(cfg_get(judge_cfg, "base_url")).rstrip("/") + "/chat/completions")
    judge = build_judge_scorer(name, scorer_cfg, None)  # no key / no rubric: ScorerUnavailable
    try:
        info.update(ok=True, status=judge.probe(timeout), reason="answered")  # type: ignore[attr-defined]
    finally:
        judge.close()
    return True


# The registry: a measure's `scorer` -> how to build, probe and check it, and the config sections it reads.
_TOXICITY_SECTIONS = ("toxicity", "fallback", "perspective", "detoxify", "calibration")
SCORERS: dict[str, ScorerKind] = {
    "toxicity": ScorerKind(
        _build_toxicity,
        _probe_toxicity,
        _toxicity_backends,
        _check_toxicity,
        sections=_TOXICITY_SECTIONS,
        identity=_toxicity_identity,
    ),
    "regard": ScorerKind(_build_regard),
    "harmfulness": ScorerKind(_build_judge, _probe_judge, _judge_backends, sections=("judge",)),
    "flag": ScorerKind(_build_judge, _probe_judge, _judge_backends, sections=("judge",)),
}
