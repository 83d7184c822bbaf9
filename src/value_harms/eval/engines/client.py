"""OpenAI-compatible completions, sent concurrently, one request per (prompt, sample) row.

Every row carries its own `seed`, derived exactly like the HF path's per-row seed
(`GenRequest.row_seed`), so a row's text does not depend on which other rows share the server's batch
(vLLM's per-request generator; measured facts in docs/DECISIONS.md "Generation engines"). Requests go through
the project's one HTTP layer (value_harms/net.py): a connect timeout of seconds, retries with backoff on 429 / 5xx /
timeouts / dropped connections, and the endpoint's circuit breaker, so a dead server fails the job in
seconds instead of hanging every row.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import requests

from value_harms.errors import EndpointUnreachable, EngineError
from value_harms.eval.generation import GenRequest, GenSettings, truncate_at_stop
from value_harms.net import RETRY_STATUS, GaveUp, HttpClient, HttpSettings, Transient, parse_retry_after


def error_text(resp: requests.Response) -> str:
    try:
        body = resp.json()
        err = body.get("error") if isinstance(body, dict) else None
        msg = err.get("message") if isinstance(err, dict) else (body.get("message") if isinstance(body, dict) else None)
        return str(msg or body)[:300].replace("\n", " ")
    except ValueError:
        return resp.text[:300].replace("\n", " ")


def read_completion(resp: requests.Response) -> str:
    """The text of a `text_completion` answer; Transient for what deserves another attempt."""
    if resp.status_code in RETRY_STATUS:
        raise Transient(f"HTTP {resp.status_code}", parse_retry_after(resp.headers.get("Retry-After")))
    if resp.status_code != 200:
        raise EngineError(f"generation server answered HTTP {resp.status_code}: {error_text(resp)}")
    try:
        choice = resp.json()["choices"][0]
        text = choice["text"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise Transient("garbage (not a text_completion answer)") from None
    if not isinstance(text, str):
        raise Transient("garbage (choices[0].text is not a string)")
    return text


class CompletionClient:
    """POST {base_url}/completions for many rows at once; thread-safe, one HTTP session per thread."""

    def __init__(
        self, base_url: str, settings: HttpSettings, *, api_key: str | None, concurrency: int, name: str = "engine"
    ) -> None:
        self.url = base_url.rstrip("/") + "/completions"
        self.settings = settings
        self.api_key = api_key
        self.concurrency = max(1, int(concurrency))
        self.name = name
        self._local = threading.local()
        self._clients: list[HttpClient] = []
        self._lock = threading.Lock()

    def _client(self) -> HttpClient:
        c = getattr(self._local, "client", None)
        if c is None:
            c = HttpClient(self.name, self.url, self.settings, secret=self.api_key)
            self._local.client = c
            with self._lock:
                self._clients.append(c)
        return c

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def body(self, model: str, text: str, settings: GenSettings, seed: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "prompt": text,
            "max_tokens": int(settings.max_new_tokens),
            "n": 1,
            "temperature": float(settings.temperature) if settings.do_sample else 0.0,
            "top_p": float(settings.top_p) if settings.do_sample else 1.0,
            "skip_special_tokens": True,
        }
        if settings.do_sample and seed is not None:
            body["seed"] = int(seed)
        if settings.stop:
            body["stop"] = list(settings.stop)
        return body

    def one(self, body: dict[str, Any]) -> str:
        try:
            return self._client().call(read_completion, json=body, headers=self.headers())
        except EndpointUnreachable as exc:
            raise EngineError(f"generation server {self.url} is unreachable: {exc.reason}") from None
        except GaveUp as exc:
            raise EngineError(
                f"generation server {self.url}: gave up after {exc.attempts} attempts: {exc.reason}"
            ) from None

    def complete(self, reqs: Sequence[GenRequest], settings: GenSettings, model_of) -> list[list[str]]:
        """`settings.num_samples` continuations per request; `model_of(req)` names the served model or
        adapter. Raises EngineError when a row cannot be generated (nothing of the batch is kept)."""
        n = settings.num_samples
        bodies = [
            self.body(model_of(r), r.text, settings, r.row_seed(settings.seed, s)) for r in reqs for s in range(n)
        ]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(bodies)) or 1) as pool:
            texts = list(pool.map(self.one, bodies))
        texts = [truncate_at_stop(t, settings.stop) for t in texts]
        return [texts[i * n : (i + 1) * n] for i in range(len(reqs))]

    def close(self) -> None:
        with self._lock:
            for c in self._clients:
                c.close()
            self._clients.clear()
