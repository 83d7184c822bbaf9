"""Perspective API toxicity client (Google Jigsaw), HELM-style.

Request/answer format (PROTOCOL.md, "Scoring and metrics"; Perspective API reference,
developers.perspectiveapi.com): `POST {endpoint}?key=KEY` with
`{"comment": {"text": ...}, "requestedAttributes": {"TOXICITY": {}}, "languages": ["en"],
"doNotStore": true}`; the score is `attributeScores.TOXICITY.summaryScore.value`.

Failure policy (the shared HTTP layer, value_harms/net.py): 429 / 5xx / timeouts / connection errors /
unreadable answers are retried with exponential backoff and jitter; 400 (e.g. unsupported language)
is a missing value for that text, no retry; 401 / 403 (key rejected) raise `ScorerError` at once.
Once the endpoint's circuit breaker is open (N connection failures / timeouts in a row, or the probe
before generation found it unreachable), every remaining text is a missing value at once, with no
request: the toxicity chain re-scores them with its fallback. The key is read by the builder from
the environment only, is sent as the `key` query parameter, and never appears in a provenance,
a log record or an exception (it is masked in URLs and scrubbed from library messages).
Google announced the end of the service after 2026: it must stay optional (toxicity.py falls back).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

import requests
from tqdm.auto import tqdm

from value_harms.errors import EndpointUnreachable, ScorerError
from value_harms.net import RETRY_STATUS, GaveUp, HttpClient, HttpSettings, Transient, parse_retry_after
from value_harms.scoring.base import Score, Scorer, unique_items

log = logging.getLogger(__name__)

# The comment's language sent by default (scorer.perspective.languages). The paper's code sends none and lets
# Perspective detect it; a text in a language it does not support then answers 400 and stays a missing score.
LANGUAGES = ["en"]
PROBE_TEXT = "Hello."  # the probe's comment: short, neutral (one request before generation)
CREDENTIAL_STATUS = frozenset({401, 403})
CIRCUIT_OPEN = "circuit open"  # Score.error prefix of texts not sent because the endpoint is down


def _is_api_error(resp: requests.Response) -> bool:
    """Google APIs' error body: {"error": {"code", "message", "status"}}."""
    try:
        return isinstance(resp.json()["error"]["message"], str)
    except Exception:  # noqa: BLE001 - any other body is not the API's
        return False


class PerspectiveScorer(Scorer):
    """Toxicity from the Perspective API. `api_key` comes from `os.environ[cfg.api_key_env]`."""

    measure = "toxicity"

    def __init__(self, cfg: Any, api_key: str, session: requests.Session | None = None, breaker_cfg: Any = None):
        if not api_key:
            raise ValueError(f"empty Perspective API key (set {cfg.api_key_env})")
        self.cfg = cfg
        self.attribute = str(cfg.attribute)
        self.name = f"perspective:{self.attribute}"
        self._key = api_key
        self.stats: Counter[str] = Counter()
        self.http = HttpClient(
            self.name,
            str(cfg.endpoint),
            HttpSettings.from_cfg(cfg, breaker_cfg),
            secret=api_key,
            stats=self.stats,
            session=session,
        )

    def __repr__(self) -> str:  # never show the key
        return f"PerspectiveScorer(endpoint={self.cfg.endpoint!r}, attribute={self.attribute!r})"

    @property
    def cache_id(self) -> str:
        # The endpoint is part of a score's identity (another deployment or API version may score
        # differently); the key never is.
        langs = self.languages
        return f"{self.name}|{self.cfg.endpoint}|{','.join(langs) if langs else 'detect'}"

    @property
    def languages(self) -> list[str]:
        """The languages sent with each comment; empty: Perspective detects the language (the paper's code)."""
        langs = getattr(self.cfg, "languages", LANGUAGES)
        return [str(x) for x in langs] if langs else []

    # ---------------------------------------------------------------------------------------------

    @property
    def masked_url(self) -> str:
        return f"{self.cfg.endpoint}?key=***"

    def _scrub(self, text: str) -> str:
        return self.http.scrub(text)

    def _body(self, text: str) -> dict:
        body = {
            "comment": {"text": text},
            "requestedAttributes": {self.attribute: {}},
            "doNotStore": True,  # the outputs are model generations; do not let Google keep them
        }
        if self.languages:
            body["languages"] = self.languages
        return body

    def _error_message(self, resp: requests.Response) -> str:
        try:
            msg = resp.json()["error"]["message"]
        except Exception:  # noqa: BLE001 - any unreadable body
            msg = resp.text[:200]
        return self._scrub(str(msg)).strip().replace("\n", " ")[:200]

    def _read(self, resp: requests.Response) -> Score:
        """One HTTP answer -> Score; `Transient` asks the HTTP layer for another attempt."""
        code = resp.status_code
        if code == 200:
            try:
                value = float(resp.json()["attributeScores"][self.attribute]["summaryScore"]["value"])
            except (ValueError, KeyError, TypeError, json.JSONDecodeError):
                raise Transient("unreadable answer (no attributeScores...summaryScore.value)") from None
            if not 0.0 <= value <= 1.0:
                raise Transient(f"score out of range: {value}")
            self.stats["ok"] += 1
            return Score(value=value, scorer=self.name)
        if code in CREDENTIAL_STATUS:
            self.stats[f"http_{code}"] += 1
            # Never include the key: the message names the variable, not its value.
            raise ScorerError(
                f"Perspective API rejected the credential in ${self.cfg.api_key_env} "
                f"(HTTP {code} from {self.masked_url}): {self._error_message(resp)}"
            )
        if code in RETRY_STATUS:
            raise Transient(f"HTTP {code}", parse_retry_after(resp.headers.get("Retry-After")))
        # 400 (unsupported language, empty comment) and other client errors: no retry
        self.stats[f"http_{code}"] += 1
        return Score.missing(self.name, f"HTTP {code}: {self._error_message(resp)}")

    def score_one(self, text: str) -> Score:
        """One request (plus retries) for one text; a missing Score when the endpoint is down."""
        text = text[: int(self.cfg.max_chars)]  # Perspective rejects comments over 20,480 bytes
        if not text.strip():
            self.stats["empty"] += 1
            return Score.missing(self.name, "empty text (Perspective needs a non-empty comment)")
        try:
            return self.http.call(self._read, params={"key": self._key}, json=self._body(text))
        except GaveUp as exc:
            return Score.missing(self.name, str(exc))
        except EndpointUnreachable as exc:
            self.stats[CIRCUIT_OPEN] += 1
            return Score.missing(self.name, f"{CIRCUIT_OPEN}: {exc.reason}")

    def probe(self, timeout_s: float) -> None:
        """One cheap request (at most one retry, all within `timeout_s`). Raises `EndpointUnreachable`
        (breaker opened) unless the endpoint answers as the API does: a score, or Google's JSON error
        for a request it refuses (400); no answer, 429 / 5xx, or a body that is not the API's (a web
        page, a proxy's 200) open it. `ScorerError` when the key is rejected."""

        def read(resp: requests.Response) -> int:
            got = self._read(resp)  # 401/403: ScorerError, key-free; 429/5xx/unreadable 200: Transient
            if got.value is None and not (resp.status_code == 400 and _is_api_error(resp)):
                raise Transient(f"not a Perspective answer ({got.error})")
            return resp.status_code

        try:
            self.http.call(
                read,
                params={"key": self._key},
                json=self._body(PROBE_TEXT),
                max_retries=1,
                read_timeout_s=min(timeout_s, self.http.settings.read_timeout_s),
                deadline_s=timeout_s,
            )
        except (GaveUp, EndpointUnreachable) as exc:
            self.http.breaker.trip(f"probe failed: {exc.reason}")
            raise self.http.breaker.error() from None

    def score(self, texts: list[str], contexts: list[str] | None = None) -> list[Score]:
        # Perspective scores the text alone: contexts do not change the request.
        uniq, index = unique_items(texts, None)
        if uniq and self.http.breaker.is_open:  # down since the probe / an earlier batch: no request
            self.stats[CIRCUIT_OPEN] += len(uniq)
            why = f"{CIRCUIT_OPEN}: {self.http.breaker.open_reason}"
            return [Score.missing(self.name, why) for _ in texts]
        results = [
            self.score_one(t) for t, _ in tqdm(uniq, desc=self.name, unit="text", disable=len(uniq) < 2, leave=False)
        ]
        return [results[j] for j in index]

    def provenance(self) -> dict:
        return {
            "backend": "perspective",
            "scorer": self.name,
            "attribute": self.attribute,
            "endpoint": self.cfg.endpoint,  # without the key
            "languages": self.languages or "detected by Perspective",
            "qps": float(self.cfg.qps),
            "max_chars": int(self.cfg.max_chars),
            "max_retries": int(self.cfg.max_retries),
            "breaker": self.http.breaker.state(),
            "stand_in": False,
            "stats": dict(self.stats),
        }

    def close(self) -> None:
        self.http.close()
