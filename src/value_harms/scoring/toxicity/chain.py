"""The toxicity scorer: a chain of backends with per-text fallback.

primary = `scorer.toxicity`, then `scorer.fallback` in order, from
  perspective      Perspective API TOXICITY (the paper's scorer; needs a key in the environment)
  detoxify         Detoxify, offline once weights are local
  profanity_check  alt-profanity-check, a stand-in that every result marks as such
A backend that cannot be built here (no key, no weights, package missing) is skipped. Texts the
primary leaves missing after its retries (400, gave up) are re-scored by the next backend; every
`Score.scorer` says which backend produced it, and `provenance()` counts them. Before any
generation, `resolve_backend` (called by scoring.probe) builds the backends in turn until one can
score, so a job with none stops with a one-line error before generating; Detoxify's weights download
is bounded and an unavailable backend is decided once per process. After generation only the first
available backend is built up front; later ones are built the first time a text needs them.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from omegaconf import OmegaConf

from value_harms.errors import ScorerError, ScorerUnavailable
from value_harms.scoring.agreement import Attach, agreement_for
from value_harms.scoring.base import Score, Scorer, cfg_get, unique_items
from value_harms.scoring.cache import CachedScorer, ScoreCache
from value_harms.scoring.calibration import calibrator_for
from value_harms.scoring.toxicity.perspective import PerspectiveScorer

log = logging.getLogger(__name__)

CIRCUIT_OPEN = "circuit open"  # = perspective.CIRCUIT_OPEN (not imported: requests stays lazy)
_LOGGED_ONCE: set[str] = set()


def _log_once(key: str, level: int, msg: str, *args: Any) -> None:
    if key not in _LOGGED_ONCE:
        _LOGGED_ONCE.add(key)
        log.log(level, msg, *args)


_DETOXIFY_UNAVAILABLE: dict[str, str] = {}


def _make_perspective(scorer_cfg: Any) -> Scorer:
    # backends are imported when built: a missing optional dependency only matters to its backend

    env = scorer_cfg.perspective.api_key_env
    key = os.environ.get(env, "").strip()
    if not key:
        raise ScorerUnavailable(f"{env} not set")
    return PerspectiveScorer(scorer_cfg.perspective, key, breaker_cfg=cfg_get(scorer_cfg, "breaker"))


def _make_detoxify(scorer_cfg: Any) -> Scorer:
    from value_harms.scoring.toxicity.detoxify import DetoxifyScorer  # optional heavy dependency (torch)

    # Hub weights that failed to download once in this process will fail again: remember
    # it, so a multirun does not retry (and log) the download for every job.
    key = json.dumps(
        OmegaConf.to_container(scorer_cfg.detoxify, resolve=True)
        if OmegaConf.is_config(scorer_cfg.detoxify)
        else str(scorer_cfg.detoxify),
        sort_keys=True,
    )
    if key in _DETOXIFY_UNAVAILABLE:
        raise ScorerUnavailable(f"{_DETOXIFY_UNAVAILABLE[key]} (decided earlier in this process; not retried)")
    # the weights download (when they are not in the torch hub cache) is bounded like the probe:
    # the breaker's connect timeout, and the probe's timeout as the longest wait for the next bytes
    timeouts = {
        "connect_timeout_s": float(cfg_get(cfg_get(scorer_cfg, "breaker"), "connect_timeout_s", 5.0)),
        "read_timeout_s": float(cfg_get(scorer_cfg, "probe_timeout_s", 10.0)),
    }
    try:
        return DetoxifyScorer(scorer_cfg.detoxify, **timeouts)
    except ScorerUnavailable as exc:
        _DETOXIFY_UNAVAILABLE[key] = str(exc)
        raise


def _make_profanity_check(scorer_cfg: Any) -> Scorer:
    from value_harms.scoring.toxicity.profanity import ProfanityCheckScorer  # optional dependency

    return ProfanityCheckScorer()


def _perspective_available(scorer_cfg: Any) -> bool:
    return bool(os.environ.get(str(scorer_cfg.perspective.api_key_env), "").strip())


def _detoxify_available(scorer_cfg: Any) -> bool:
    ckpt = scorer_cfg.detoxify.get("checkpoint") if hasattr(scorer_cfg.detoxify, "get") else None
    if ckpt:
        return os.path.isfile(os.path.expanduser(str(ckpt)))
    try:
        import torch  # optional heavy dependency
        from detoxify.detoxify import MODEL_URLS

        url = MODEL_URLS.get(str(scorer_cfg.detoxify.variant), "")
        return bool(url) and os.path.isfile(os.path.join(torch.hub.get_dir(), "checkpoints", url.split("/")[-1]))
    except Exception:  # noqa: BLE001 - detoxify not installed or an unexpected layout: not available
        return False


def _profanity_check_available(scorer_cfg: Any) -> bool:
    return importlib.util.find_spec("profanity_check") is not None


@dataclass(frozen=True)
class Backend:
    """One toxicity backend: `make(scorer_cfg)` builds it (ScorerUnavailable when it cannot run here),
    `available(scorer_cfg)` says cheaply whether it could, `hint(scorer_cfg)` what to do when it cannot."""

    make: Callable[[Any], Scorer]
    available: Callable[[Any], bool]
    hint: Callable[[Any], str]


# The toxicity backends `scorer.toxicity` / `scorer.fallback` may name. A new backend = its module in
# scoring/toxicity/ + one entry here.
BACKENDS: dict[str, Backend] = {
    "perspective": Backend(_make_perspective, _perspective_available, lambda c: f"set {c.perspective.api_key_env}"),
    "detoxify": Backend(
        _make_detoxify,
        _detoxify_available,
        lambda c: (
            "put Detoxify weights in the torch hub cache or set scorer.detoxify.checkpoint + huggingface_config_path"
        ),
    ),
    "profanity_check": Backend(
        _make_profanity_check, _profanity_check_available, lambda c: "pip install alt-profanity-check"
    ),
}


def _factory(backend: str, scorer_cfg: Any) -> Callable[[], Scorer]:
    if backend not in BACKENDS:
        raise ValueError(f"unknown toxicity backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    make = BACKENDS[backend].make
    return lambda: make(scorer_cfg)


class ToxicityChain(Scorer):
    """Scores with the first backend, then re-scores its missing texts with the next, and so on."""

    measure = "toxicity"

    def __init__(self, order: list[str], factories: dict[str, Callable[[], Scorer]], cache: ScoreCache | None = None):
        self.order = order
        self.name = "toxicity:" + ">".join(order)
        self._factories = factories
        self._cache = cache
        self._built: dict[str, Scorer] = {}
        self.unavailable: dict[str, str] = {}
        self.counts: Counter[str] = Counter()  # Score.scorer -> texts it scored (all positions)
        self.missing = 0
        self.fallback_texts = 0  # texts scored by a backend after the first available one
        self.unreachable_texts: dict[str, int] = {}  # backend -> texts passed on (endpoint down)
        self.calibrate: Callable[[str, Scorer], Scorer] | None = None  # scoring.calibration.calibrator_for
        self.agreement: Attach | None = None  # a stand-in's agreement with Perspective (scoring.agreement)

    def _get(self, backend: str) -> Scorer | None:
        """The built backend, building it on first use; None when it cannot be built here."""
        if backend in self._built:
            return self._built[backend]
        if backend in self.unavailable:
            return None
        try:
            scorer = self._factories[backend]()
        except ScorerUnavailable as exc:
            self.unavailable[backend] = str(exc)
            log.info("toxicity backend %s unavailable: %s", backend, exc)
            return None
        if self._cache is not None:
            scorer = CachedScorer(scorer, self._cache)
        if self.calibrate is not None:  # onto Perspective's scale (raw scores stay cached)
            scorer = self.calibrate(backend, scorer)
        self._built[backend] = scorer
        return scorer

    def first_available(self) -> str | None:
        for b in self.order:
            if self._get(b) is not None:
                return b
        return None

    @property
    def stand_in(self) -> bool:
        """True when any score so far came from the profanity_check stand-in."""
        return any(k.startswith("profanity_check") for k, n in self.counts.items() if n)

    def score(self, texts: list[str], contexts: list[str] | None = None) -> list[Score]:
        uniq, index = unique_items(texts, None)  # toxicity is a property of the text alone
        utexts = [t for t, _ in uniq]
        results: list[Score | None] = [None] * len(utexts)
        errors: list[list[str]] = [[] for _ in utexts]
        pending = list(range(len(utexts)))
        copies = Counter(index)  # how many input positions each unique text stands for
        down: dict[str, list[int]] = {}  # backend -> texts it left missing when its breaker opened
        first = True
        for backend in self.order:
            if not pending:
                break
            scorer = self._get(backend)
            if scorer is None:
                continue
            got = scorer.score([utexts[i] for i in pending])  # ScorerError propagates: stop
            still = []
            for i, s in zip(pending, got):
                if s.value is not None:
                    results[i] = s
                    if not first:
                        self.fallback_texts += copies[i]
                else:
                    errors[i].append(f"{s.scorer}: {s.error}")
                    still.append(i)
            if any((s.error or "").startswith(CIRCUIT_OPEN) for s in got):
                down[backend] = list(still)  # every text it left, also those that failed before
            if still and len(self.order) > 1:
                log.info("%s left %d of %d texts missing; passing them on", backend, len(still), len(pending))
            pending = still
            first = False
        for i in pending:
            results[i] = Score.missing("toxicity:none", "; ".join(errors[i]) or "no toxicity backend available")
        for backend, idx in down.items():
            self._warn_down(backend, idx, results, copies, len(index))
        out = [results[j] for j in index]
        for s in out:
            if s is not None and s.value is not None:
                self.counts[s.scorer] += 1
            else:
                self.missing += 1
        return out  # type: ignore[return-value]

    def _warn_down(
        self, backend: str, idx: list[int], results: list[Score | None], copies: Counter, total: int
    ) -> None:
        """ONE warning for the texts a backend left to the fallback because its endpoint is down."""
        n = sum(copies[i] for i in idx)
        self.unreachable_texts[backend] = self.unreachable_texts.get(backend, 0) + n
        by: Counter[str] = Counter()
        for i in idx:
            r = results[i]
            by[r.scorer.split(" ")[0] if r is not None and r.value is not None else "missing"] += copies[i]
        inner = self._built.get(backend)
        http = getattr(getattr(inner, "inner", inner), "http", None)
        where = f" at {http.endpoint}" if http is not None else ""
        reason = http.breaker.open_reason if http is not None else "circuit open"
        log.warning(
            "%s%s unreachable (%s): %d of %d texts scored by the fallback instead (%s)",
            backend,
            where,
            reason,
            n,
            total,
            ", ".join(f"{k}: {v}" for k, v in sorted(by.items())),
        )

    def provenance(self) -> dict:
        return {
            "measure": "toxicity",
            "unreachable_texts": dict(self.unreachable_texts),
            "chain": list(self.order),
            "backends": self._backend_provenance(),
            "unavailable": dict(self.unavailable),
            "counts": dict(self.counts),
            "missing": self.missing,
            "fallback_texts": self.fallback_texts,
            "stand_in": self.stand_in,
        }

    def _backend_provenance(self) -> dict[str, dict]:
        """Each built backend's provenance; a stand-in's with its measured agreement with Perspective."""
        out = {b: dict(s.provenance()) for b, s in self._built.items()}
        for b, s in self._built.items():
            found = self.agreement(b, s, out[b]) if self.agreement is not None else None
            if found is not None:
                out[b]["agreement"] = found
        return out

    def close(self) -> None:
        for s in self._built.values():
            if isinstance(s, CachedScorer):
                s.inner.close()
            else:
                s.close()
        if self._cache is not None:
            self._cache.close()


def chain_order(scorer_cfg: Any) -> list[str]:
    """`scorer.toxicity` then `scorer.fallback`, without repeats."""
    order: list[str] = []
    for b in [scorer_cfg.toxicity, *list(scorer_cfg.fallback or [])]:
        if str(b) not in order:
            order.append(str(b))
    return order


def _no_backend(order: list[str], unavailable: dict[str, str], scorer_cfg: Any) -> ScorerError:
    hints = []
    for b in order:
        down = b == "perspective" and unavailable.get(b, "").startswith("unreachable")
        hints.append(f"make {scorer_cfg.perspective.endpoint} reachable" if down else BACKENDS[b].hint(scorer_cfg))
    return ScorerError(
        "no toxicity backend available ("
        + "; ".join(f"{b}: {unavailable.get(b, '?')}" for b in order)
        + "): "
        + ", or ".join(hints)
    )


def resolve_backend(scorer_cfg: Any, down: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """(the backend the chain will score with first, {backend skipped: why}), decided before any
    generation by building each backend in turn (Detoxify: weights fetched with bounded timeouts,
    loaded once per process, so scoring reuses the load). `down`: backends already found unusable
    (an unreachable Perspective). Raises `ScorerError` (one line, what to set) when none can score."""
    order = chain_order(scorer_cfg)
    unavailable = dict(down or {})
    for b in order:
        if b not in BACKENDS:
            raise ValueError(f"unknown toxicity backend {b!r}: expected one of {', '.join(BACKENDS)}")
        if b in unavailable:
            continue
        try:
            BACKENDS[b].make(scorer_cfg).close()
        except ScorerUnavailable as exc:
            unavailable[b] = str(exc)
            continue
        return b, unavailable
    raise _no_backend(order, unavailable, scorer_cfg)


def build_toxicity_scorer(scorer_cfg: Any, cache_path: str | os.PathLike | None = None) -> ToxicityChain:
    """The toxicity chain for `scorer_cfg` (a `ScorerConfig`). Raises `ScorerError` when no
    backend at all can run here, naming what to set or install."""
    order = chain_order(scorer_cfg)
    factories = {b: _factory(b, scorer_cfg) for b in order}  # unknown names fail here
    cache = ScoreCache(cache_path) if cache_path is not None and scorer_cfg.cache else None
    chain = ToxicityChain(order, factories, cache)

    cache_dir = os.path.dirname(os.fspath(cache_path)) if cache_path else None
    chain.calibrate = calibrator_for(scorer_cfg, cache_dir)
    chain.agreement = agreement_for(scorer_cfg, cache_dir)
    used = chain.first_available()
    if used is None:
        if cache is not None:
            cache.close()
        raise _no_backend(order, chain.unavailable, scorer_cfg)
    if order[0] == "perspective" and used != "perspective":
        env = scorer_cfg.perspective.api_key_env
        _log_once(f"perspective-{env}", logging.WARNING, "%s not set: toxicity falls back to %s", env, used)
    elif used != order[0]:
        _log_once(
            f"{order[0]}->{used}",
            logging.WARNING,
            "toxicity backend %s unavailable (%s): falls back to %s",
            order[0],
            chain.unavailable.get(order[0]),
            used,
        )
    if used == "profanity_check":
        _log_once(
            "stand-in",
            logging.WARNING,
            "toxicity scores come from profanity_check, a "
            "stand-in (not Perspective/Detoxify); results are marked stand_in",
        )
    return chain


def backend_available(backend: str, scorer_cfg: Any) -> bool:
    """Cheap check, without building the scorer, that `backend` could score here now: Perspective
    when its key variable is set; Detoxify when its checkpoint file (configured, or the variant's
    release asset in the torch hub cache) is on disk; profanity_check when installed. Used to tell
    whether a result scored by a fallback should be re-scored by the preferred backend."""
    entry = BACKENDS.get(backend)
    return entry is not None and entry.available(scorer_cfg)
