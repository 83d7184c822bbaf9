"""The one HTTP layer of the project: every network scorer (Perspective, the OpenAI-compatible judge),
the generation engines' client and metadata calls, the health checks of servers the project starts and
the W&B reachability check. It imports nothing of the package but the error classes and the config
getter, so every layer may use it (docs/ARCHITECTURE.md).

- Two timeouts: a short connect timeout (`scorer.breaker.connect_timeout_s`: a host that cannot be
  reached costs seconds) and the client's own read timeout (`timeout_s`: a judge may think a while).
- Retries with exponential backoff and equal jitter, for transient failures only: HTTP 429 / 5xx,
  timeouts, dropped connections and answers the caller cannot read (the caller raises `Transient`).
  Every other answer goes back to the caller unchanged, which decides (401/403 stop the run, 400 is a
  missing score, ...).
- A circuit breaker per endpoint (scheme://host:port/path), shared by every client of that endpoint
  in the process: after `max_consecutive_failures` failed attempts in a row, or once a run of at
  least two of them has lasted `max_outage_s`, the breaker opens and no client calls that endpoint
  again until `reset_breakers()` (the scoring probe calls it at the start of every job, so one job's
  outage does not poison the next job of an in-process multirun). A failed attempt is a connection
  failure / timeout OR an answer the caller cannot use (429, 5xx, a 200 whose body is not the API's:
  the caller raises `Transient`); only a usable answer resets the count, so an endpoint that answers
  but refuses, or is not the API at all, is given up as fast as one that is down. While failures
  run, each attempt's read timeout and each backoff wait is cut to what is left of `max_outage_s`
  (a Retry-After longer than that opens the breaker instead of sleeping), so a dead, wrong or
  refusing endpoint costs about `max_outage_s` at most.
- A total budget per call (`deadline_s`, used by the probe before generation): every attempt and
  wait fits in it, so the probe of a black hole costs `scorer.probe_timeout_s`, not two timeouts.
- A rate limiter per endpoint (request starts at least 1/qps apart).
- Secrets never leave: `RedactFilter` masks the key in urllib3's request-URL log lines, `scrub`
  masks it in any text, and failure reasons are built from exception types, never from messages
  (a requests exception message quotes the full URL, query key included).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

import requests

from value_harms.config.access import cfg_get
from value_harms.errors import EndpointUnreachable, ScorerError

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})  # HELM: back off on rate limit / server errors
URL_LOGGERS = ("urllib3.connectionpool", "requests.packages.urllib3.connectionpool")

DEFAULT_MAX_FAILURES = 5
DEFAULT_MAX_OUTAGE_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_PROBE_TIMEOUT_S = 10.0

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_MAX_FAILURES",
    "DEFAULT_MAX_OUTAGE_S",
    "DEFAULT_PROBE_TIMEOUT_S",
    "RETRY_STATUS",
    "CircuitBreaker",
    "GaveUp",
    "HttpClient",
    "HttpSettings",
    "RateLimiter",
    "RedactFilter",
    "Transient",
    "backoff_delay",
    "breaker_for",
    "breaker_states",
    "describe_failure",
    "endpoint_id",
    "limiter_for",
    "parse_retry_after",
    "reset_breakers",
]


def endpoint_id(url: str) -> str:
    """scheme://host:port/path of `url`: no user info, query or fragment (where secrets may sit)."""
    parts = urlsplit(str(url))
    try:
        port = parts.port
    except ValueError:
        port = None
    port = port or {"http": 80, "https": 443}.get(parts.scheme)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{':' + str(port) if port else ''}{parts.path}"


# --------------------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class HttpSettings:
    """What one client needs; `from_cfg` reads a client's section (a scorer's perspective / judge,
    generation.vllm) plus `scorer.breaker`."""

    read_timeout_s: float = 30.0
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    max_retries: int = 6
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    qps: float = 0.0
    max_consecutive_failures: int = DEFAULT_MAX_FAILURES
    max_outage_s: float = DEFAULT_MAX_OUTAGE_S

    @classmethod
    def from_cfg(cls, client_cfg: Any, breaker_cfg: Any = None) -> "HttpSettings":
        return cls(
            read_timeout_s=float(cfg_get(client_cfg, "timeout_s", 30.0)),
            connect_timeout_s=float(cfg_get(breaker_cfg, "connect_timeout_s", DEFAULT_CONNECT_TIMEOUT_S)),
            max_retries=max(0, int(cfg_get(client_cfg, "max_retries", 6))),
            backoff_base_s=float(cfg_get(client_cfg, "backoff_base_s", 1.0)),
            backoff_max_s=float(cfg_get(client_cfg, "backoff_max_s", 60.0)),
            qps=float(cfg_get(client_cfg, "qps", 0.0) or 0.0),
            max_consecutive_failures=max(
                1, int(cfg_get(breaker_cfg, "max_consecutive_failures", DEFAULT_MAX_FAILURES))
            ),
            max_outage_s=float(cfg_get(breaker_cfg, "max_outage_s", DEFAULT_MAX_OUTAGE_S)),
        )


# --------------------------------------------------------------------------------------------------
# rate limit, backoff, redaction


class RateLimiter:
    """Spaces request starts at least 1/qps apart (a token bucket of capacity 1); thread-safe."""

    def __init__(self, qps: float):
        self.interval = 1.0 / qps if qps and qps > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


def backoff_delay(attempt: int, base_s: float, cap_s: float, retry_after: float | None = None) -> float:
    """Delay before retry `attempt + 1`: min(cap, base * 2**attempt) with "equal jitter" (uniform in
    [d/2, d], spreading clients apart); a server's Retry-After (capped too) is a lower bound."""
    delay = min(cap_s, base_s * (2**attempt))
    delay = random.uniform(delay / 2, delay)
    if retry_after is not None:
        delay = max(delay, min(cap_s, retry_after))
    return delay


def parse_retry_after(value: str | None) -> float | None:
    """Seconds of a Retry-After header given in seconds (RFC 9110 10.2.3); None otherwise."""
    try:
        return float(value) if value else None
    except ValueError:  # an HTTP date: ignored, the backoff applies
        return None


class RedactFilter(logging.Filter):
    """Masks a secret in the records of libraries that log request URLs (urllib3 at DEBUG)."""

    def __init__(self, secret: str):
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is not ours to fix
            return True
        if self.secret and self.secret in msg:
            record.msg = msg.replace(self.secret, "***")
            record.args = None
        return True


# --------------------------------------------------------------------------------------------------
# circuit breaker


class CircuitBreaker:
    """Consecutive failed attempts (no answer, or an answer that cannot be used) of one endpoint;
    open = do not call it."""

    def __init__(
        self, endpoint: str, max_failures: int = DEFAULT_MAX_FAILURES, max_outage_s: float = DEFAULT_MAX_OUTAGE_S
    ):
        self.endpoint = endpoint
        self.max_failures = max_failures
        self.max_outage_s = max_outage_s
        self.failures = 0
        self.total_failures = 0
        self.refused = 0  # calls not made because the breaker was open
        self.streak_start: float | None = None
        self.open_reason: str | None = None
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self.open_reason is not None

    def error(self) -> EndpointUnreachable:
        return EndpointUnreachable(self.endpoint, self.open_reason or "circuit open")

    def admit(self, read_timeout_s: float, floor_s: float) -> float:
        """Raise `EndpointUnreachable` when open; else the read timeout for the next attempt (cut to
        what is left of `max_outage_s` while failures run, never below `floor_s`)."""
        with self._lock:
            if self.open_reason is not None:
                self.refused += 1
                raise self.error()
            if self.streak_start is None or self.max_outage_s <= 0:
                return read_timeout_s
            left = self.streak_start + self.max_outage_s - time.monotonic()
            return max(floor_s, min(read_timeout_s, left))

    def wait_left(self) -> float | None:
        """Seconds left of `max_outage_s` in the current run of failures (None: no run, or no limit):
        a backoff wait longer than this would only prolong an outage the breaker is about to call."""
        with self._lock:
            if self.streak_start is None or self.max_outage_s <= 0:
                return None
            return self.streak_start + self.max_outage_s - time.monotonic()

    def success(self) -> None:
        with self._lock:
            self.failures = 0
            self.streak_start = None

    def failure(self, reason: str, started: float) -> bool:
        """Record a failed attempt that began at `started` (monotonic); True when this opens it."""
        with self._lock:
            if self.open_reason is not None:
                return True
            self.failures += 1
            self.total_failures += 1
            if self.streak_start is None:
                self.streak_start = started
            span = time.monotonic() - self.streak_start
            if self.failures >= self.max_failures or (
                self.failures >= 2 and self.max_outage_s > 0 and span >= self.max_outage_s
            ):
                self.open_reason = f"{self.failures} consecutive failure(s) in {span:.1f} s (last: {reason})"
                log.info("circuit breaker for %s opened: %s", self.endpoint, self.open_reason)
                return True
            return False

    def trip(self, reason: str) -> None:
        """Open now (e.g. the probe before generation found the endpoint unreachable)."""
        with self._lock:
            if self.open_reason is None:
                self.open_reason = reason
                log.info("circuit breaker for %s opened: %s", self.endpoint, reason)

    def state(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "open": self.is_open,
            "reason": self.open_reason,
            "consecutive_failures": self.failures,
            "failures": self.total_failures,
            "refused_calls": self.refused,
        }


_BREAKERS: dict[str, CircuitBreaker] = {}
_LIMITERS: dict[tuple[str, float], RateLimiter] = {}
_REGISTRY_LOCK = threading.Lock()


def breaker_for(url: str, settings: HttpSettings | None = None) -> CircuitBreaker:
    """The process-wide breaker of `url`'s endpoint; `settings` (when given) update its limits."""
    key = endpoint_id(url)
    with _REGISTRY_LOCK:
        br = _BREAKERS.get(key)
        if br is None:
            br = _BREAKERS[key] = CircuitBreaker(key)
        if settings is not None:
            br.max_failures = settings.max_consecutive_failures
            br.max_outage_s = settings.max_outage_s
        return br


def limiter_for(url: str, qps: float) -> RateLimiter:
    """One rate limiter per endpoint (and rate) for the whole process: two scorers on one endpoint
    share its quota."""
    key = (endpoint_id(url), float(qps or 0.0))
    with _REGISTRY_LOCK:
        lim = _LIMITERS.get(key)
        if lim is None:
            lim = _LIMITERS[key] = RateLimiter(key[1])
        return lim


def reset_breakers() -> None:
    """Forget every endpoint's failures (call at the start of each job)."""
    with _REGISTRY_LOCK:
        _BREAKERS.clear()


def breaker_states() -> dict[str, dict[str, Any]]:
    with _REGISTRY_LOCK:
        return {k: b.state() for k, b in _BREAKERS.items()}


# --------------------------------------------------------------------------------------------------
# client


class Transient(Exception):
    """Raised by a caller's `read(resp)`: this answer is worth another attempt (429, 5xx, garbage)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class GaveUp(Exception):
    """Every attempt failed transiently; `reason` is the last failure (secret-free)."""

    def __init__(self, reason: str, attempts: int):
        super().__init__(f"gave up after {attempts} attempts: {reason}")
        self.reason = reason
        self.attempts = attempts


def describe_failure(exc: BaseException, read_timeout_s: float) -> str:
    """A short, secret-free reason for a connection-level failure (never the exception message:
    requests quotes the full URL in it, query key included)."""
    if isinstance(exc, requests.ConnectTimeout):
        return "connection error (connect timeout)"
    if isinstance(exc, requests.Timeout):
        return f"timeout (no answer within {read_timeout_s:.3g} s)"
    text = repr(exc)
    for needle, name in (
        ("Connection refused", "refused"),
        ("No route to host", "no route to host"),
        ("Network is unreachable", "network unreachable"),
        ("Name or service not known", "name not resolved"),
        ("Temporary failure in name resolution", "name not resolved"),
        ("Connection reset", "reset by peer"),
        ("RemoteDisconnected", "closed by peer"),
    ):
        if needle in text:
            return f"connection error ({name})"
    return f"connection error ({type(exc).__name__})"


def _kind(reason: str) -> str:
    """Counter key of a failure reason: "timeout", "connection error", "HTTP 429", ..."""
    return reason.split(" (")[0].split(":")[0]


class HttpClient:
    """Requests to one URL through the shared breaker, rate limiter, retries and redaction.

    `call(read, ...)` sends the request and hands each HTTP answer to `read(resp)`, which returns
    the result, raises `Transient` to retry, or raises anything else to stop. Raises `GaveUp` when
    the retries are spent and `EndpointUnreachable` when the breaker is (or becomes) open.
    `stats` counts requests, retries, failure kinds and gave_up. `error`: the class raised for a
    request that can never work (an invalid URL or scheme): each layer's own error.
    """

    def __init__(
        self,
        name: str,
        url: str,
        settings: HttpSettings,
        *,
        secret: str | None = None,
        stats: Counter | None = None,
        session: requests.Session | None = None,
        retry_log_level: int = logging.DEBUG,
        error: type[Exception] = ScorerError,
    ):
        self.name = name
        self.retry_log_level = retry_log_level  # of retries after an HTTP answer (429, 5xx, garbage)
        self.url = url
        self.endpoint = endpoint_id(url)
        self.settings = settings
        self.secret = secret or None
        self.stats: Counter = stats if stats is not None else Counter()
        self._session = session
        self.error = error
        self.limiter = limiter_for(url, settings.qps)
        self._filter = RedactFilter(self.secret) if self.secret else None
        if self._filter is not None:
            for name_ in URL_LOGGERS:
                logging.getLogger(name_).addFilter(self._filter)

    @property
    def breaker(self) -> CircuitBreaker:
        """Looked up at every use: `reset_breakers()` between jobs reaches clients already built."""
        return breaker_for(self.url, self.settings)

    @property
    def session(self) -> requests.Session:
        if self._session is None:  # created lazily (HELM): no client until the first request
            self._session = requests.Session()
        return self._session

    def scrub(self, text: str) -> str:
        return text.replace(self.secret, "***") if self.secret and text else text

    def call(
        self,
        read: Callable[[requests.Response], T],
        *,
        method: str = "POST",
        params: dict | None = None,
        json: Any = None,
        headers: dict | None = None,
        max_retries: int | None = None,
        read_timeout_s: float | None = None,
        deadline_s: float | None = None,
        allow_redirects: bool = True,
    ) -> T:
        """`deadline_s`: the whole call (attempts and waits) ends within it; GaveUp when it is spent.
        `allow_redirects=False`: a redirect is the answer (a reachability check needs no more)."""
        # size: one request loop: breaker, budget, retries with backoff, each class of error answered in place
        s = self.settings
        retries = s.max_retries if max_retries is None else max(0, int(max_retries))
        base_read = s.read_timeout_s if read_timeout_s is None else read_timeout_s
        end = time.monotonic() + deadline_s if deadline_s else None
        last = "no attempt"
        made = 0
        breaker = self.breaker
        for attempt in range(retries + 1):
            read_t = breaker.admit(base_read, floor_s=min(s.connect_timeout_s, base_read))
            connect_t = s.connect_timeout_s
            if end is not None:
                left = end - time.monotonic()
                if left < 0.05:
                    break
                read_t, connect_t = min(read_t, left), min(connect_t, left)
            if attempt:
                self.stats["retries"] += 1
            self.limiter.wait()
            self.stats["requests"] += 1
            made += 1
            retry_after = None
            level = logging.INFO  # connection failures: the breaker keeps them bounded
            started = time.monotonic()
            try:
                resp = self.session.request(
                    method,
                    self.url,
                    params=params,
                    json=json,
                    headers=headers,
                    timeout=(connect_t, read_t),
                    allow_redirects=allow_redirects,
                )
            except (
                requests.Timeout,
                requests.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ) as exc:
                last = describe_failure(exc, read_t)
            except requests.RequestException as exc:  # invalid URL, bad scheme: not transient
                raise self.error(f"{self.name}: request to {self.endpoint} failed: {type(exc).__name__}") from None
            else:
                try:
                    result = read(resp)
                except Transient as t:  # it answered, but not usably: a failure for the breaker too
                    last, retry_after = self.scrub(t.reason), t.retry_after
                    level = self.retry_log_level
                else:
                    breaker.success()  # a usable answer: the endpoint works
                    return result
            self.stats[_kind(last)] += 1
            if breaker.failure(last, started):
                raise breaker.error() from None
            if attempt < retries:
                delay = backoff_delay(attempt, s.backoff_base_s, s.backoff_max_s, retry_after)
                if not self._wait(delay, end, breaker, last):
                    break
                log.log(
                    level,
                    "%s %s: %s; retry %d/%d in %.2f s",
                    self.name,
                    self.endpoint,
                    last,
                    attempt + 1,
                    retries,
                    delay,
                )
                time.sleep(delay)
        self.stats["gave_up"] += 1
        raise GaveUp(last, made)

    def _wait(self, delay: float, end: float | None, breaker: CircuitBreaker, last: str) -> bool:
        """Whether a backoff wait of `delay` fits: False when it would pass the call's deadline; the
        breaker opens (EndpointUnreachable) when it would pass the outage limit (a long Retry-After)."""
        if end is not None and time.monotonic() + delay >= end:
            return False
        left = breaker.wait_left()
        if left is not None and delay >= left:
            breaker.trip(
                f"{breaker.failures} failure(s) in a row, next retry in {delay:.0f} s would pass "
                f"max_outage_s={breaker.max_outage_s:g} (last: {last})"
            )
            raise breaker.error()
        return True

    def close(self) -> None:
        if self._filter is not None:
            for name_ in URL_LOGGERS:
                logging.getLogger(name_).removeFilter(self._filter)
            self._filter = None
        if self._session is not None:
            self._session.close()
            self._session = None
