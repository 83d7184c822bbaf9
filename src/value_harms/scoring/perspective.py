"""Perspective API toxicity client (Google Jigsaw), HELM-style.

Request/answer format (PROTOCOL.md, "Scoring and metrics"; Perspective API reference,
developers.perspectiveapi.com): `POST {endpoint}?key=KEY` with
`{"comment": {"text": ...}, "requestedAttributes": {"TOXICITY": {}}, "languages": ["en"],
"doNotStore": true}`; the score is `attributeScores.TOXICITY.summaryScore.value`.

Failure policy: 429 / 5xx / timeouts / connection errors / unreadable answers are retried with
exponential backoff and jitter; 400 (e.g. unsupported language) is a missing value for that text,
no retry; 401 / 403 (key rejected) raise `ScorerError` at once. The key is read by the builder from
the environment only, is sent as the `key` query parameter, and never appears in a provenance,
a log record or an exception (it is masked in URLs and scrubbed from library messages).
Google announced the end of the service after 2026: it must stay optional (toxicity.py falls back).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import Counter
from typing import Any

import requests
from tqdm.auto import tqdm

from .base import Score, Scorer, ScorerError, unique_items

log = logging.getLogger(__name__)

# Perspective's documented language for the comment; other languages may answer 400.
LANGUAGES = ["en"]
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})  # HELM: back off on rate limit / server errors
CREDENTIAL_STATUS = frozenset({401, 403})


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


class _RedactFilter(logging.Filter):
    """Removes the key from records of libraries that log request URLs (urllib3 at DEBUG)."""

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


_URL_LOGGERS = ("urllib3.connectionpool", "requests.packages.urllib3.connectionpool")


class PerspectiveScorer(Scorer):
    """Toxicity from the Perspective API. `api_key` comes from `os.environ[cfg.api_key_env]`."""

    measure = "toxicity"

    def __init__(self, cfg: Any, api_key: str, session: requests.Session | None = None):
        if not api_key:
            raise ValueError(f"empty Perspective API key (set {cfg.api_key_env})")
        self.cfg = cfg
        self.attribute = str(cfg.attribute)
        self.name = f"perspective:{self.attribute}"
        self._key = api_key
        self._session = session
        self._limiter = RateLimiter(float(cfg.qps))
        self._filter = _RedactFilter(api_key)
        for name in _URL_LOGGERS:
            logging.getLogger(name).addFilter(self._filter)
        self.stats: Counter[str] = Counter()

    def __repr__(self) -> str:  # never show the key
        return f"PerspectiveScorer(endpoint={self.cfg.endpoint!r}, attribute={self.attribute!r})"

    # ---------------------------------------------------------------------------------------------

    @property
    def session(self) -> requests.Session:
        if self._session is None:  # created lazily (HELM): no client until the first request
            self._session = requests.Session()
        return self._session

    @property
    def masked_url(self) -> str:
        return f"{self.cfg.endpoint}?key=***"

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _body(self, text: str) -> dict:
        return {
            "comment": {"text": text},
            "requestedAttributes": {self.attribute: {}},
            "languages": LANGUAGES,
            "doNotStore": True,  # the outputs are model generations; do not let Google keep them
        }

    def _backoff(self, attempt: int, retry_after: str | None = None) -> None:
        cap = float(self.cfg.backoff_max_s)
        delay = min(cap, float(self.cfg.backoff_base_s) * (2**attempt))
        delay = random.uniform(delay / 2, delay)  # "equal jitter": spread the clients apart
        if retry_after:
            try:
                delay = max(delay, min(cap, float(retry_after)))
            except ValueError:
                pass
        time.sleep(delay)

    def _error_message(self, resp: requests.Response) -> str:
        try:
            msg = resp.json()["error"]["message"]
        except Exception:  # noqa: BLE001 - any unreadable body
            msg = resp.text[:200]
        return self._scrub(str(msg)).strip().replace("\n", " ")[:200]

    def score_one(self, text: str) -> Score:
        """One request (plus retries) for one text."""
        text = text[: int(self.cfg.max_chars)]  # Perspective rejects comments over 20,480 bytes
        if not text.strip():
            self.stats["empty"] += 1
            return Score.missing(self.name, "empty text (Perspective needs a non-empty comment)")
        body = self._body(text)
        last = "no attempt"
        attempts = int(self.cfg.max_retries) + 1
        for attempt in range(attempts):
            if attempt:
                self.stats["retries"] += 1
            self._limiter.wait()
            self.stats["requests"] += 1
            retry_after = None
            try:
                resp = self.session.post(
                    self.cfg.endpoint,
                    params={"key": self._key},
                    json=body,
                    timeout=float(self.cfg.timeout_s),
                )
            except requests.Timeout:
                last = "timeout"
            except requests.ConnectionError as exc:
                last = f"connection error ({type(exc).__name__})"
            except requests.RequestException as exc:
                last = f"request error: {self._scrub(str(exc))[:200]}"
            else:
                code = resp.status_code
                if code == 200:
                    try:
                        value = float(
                            resp.json()["attributeScores"][self.attribute]["summaryScore"]["value"]
                        )
                    except (ValueError, KeyError, TypeError, json.JSONDecodeError):
                        last = "unreadable answer (no attributeScores...summaryScore.value)"
                    else:
                        if 0.0 <= value <= 1.0:
                            self.stats["ok"] += 1
                            return Score(value=value, scorer=self.name)
                        last = f"score out of range: {value}"
                elif code in CREDENTIAL_STATUS:
                    self.stats[f"http_{code}"] += 1
                    # Never include the key: the message names the variable, not its value.
                    raise ScorerError(
                        f"Perspective API rejected the credential in ${self.cfg.api_key_env} "
                        f"(HTTP {code} from {self.masked_url}): {self._error_message(resp)}"
                    )
                elif code in RETRY_STATUS:
                    last = f"HTTP {code}"
                    retry_after = resp.headers.get("Retry-After")
                else:  # 400 (unsupported language, empty comment) and other client errors
                    self.stats[f"http_{code}"] += 1
                    return Score.missing(self.name, f"HTTP {code}: {self._error_message(resp)}")
            self.stats[last.split(" (")[0].split(":")[0]] += 1
            if attempt + 1 < attempts:
                log.debug("perspective %s: %s, retry %d/%d", self.masked_url, last, attempt + 1,
                          attempts - 1)
                self._backoff(attempt, retry_after)
        self.stats["gave_up"] += 1
        return Score.missing(self.name, f"gave up after {attempts} attempts: {last}")

    def score(self, texts: list[str], contexts: list[str] | None = None) -> list[Score]:
        # Perspective scores the text alone: contexts do not change the request.
        uniq, index = unique_items(texts, None)
        results = [
            self.score_one(t)
            for t, _ in tqdm(uniq, desc=self.name, unit="text", disable=len(uniq) < 2, leave=False)
        ]
        return [results[j] for j in index]

    def provenance(self) -> dict:
        return {
            "backend": "perspective",
            "scorer": self.name,
            "attribute": self.attribute,
            "endpoint": self.cfg.endpoint,  # without the key
            "languages": list(LANGUAGES),
            "qps": float(self.cfg.qps),
            "max_chars": int(self.cfg.max_chars),
            "max_retries": int(self.cfg.max_retries),
            "stand_in": False,
            "stats": dict(self.stats),
        }

    def close(self) -> None:
        for name in _URL_LOGGERS:
            logging.getLogger(name).removeFilter(self._filter)
        if self._session is not None:
            self._session.close()
            self._session = None
