"""A fake OpenAI-compatible chat.completions server on 127.0.0.1, for offline judge tests.

    with FakeOpenAI(key="sk-test", model="judge-model", answer=lambda req: "#score: 3") as srv:
        srv.base_url            # "http://127.0.0.1:<port>/v1"
        srv.script(["429", "500", "ok"])   # modes for the next requests, then "ok"
        ...
        srv.requests            # every JSON body received (checked ones)
        srv.problems            # request checks that failed (tests assert it stays empty)

Modes: ok | 429 | 500 | 503 | timeout (sleeps `slow_s` before answering) | garbage (200, not JSON) |
schema (200, JSON without `choices`) | 401 | 403 | 400 | unparseable (200, an answer with no verdict) |
content_filter (400 with error code "content_filter", Azure's format) | filtered_answer (200, content
null, finish_reason "content_filter").
Every request is checked: path `/v1/chat/completions`, `Authorization: Bearer <key>`, the model, a
non-empty `messages` list of {role, content}, temperature 0 and top_p 0 (PROTOCOL judge settings).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


def chat_completion(content: str | None, model: str, finish_reason: str = "stop") -> dict:
    """A response body in the real `chat.completion` schema."""
    return {
        "id": "chatcmpl-fake0001",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


class FakeOpenAI:
    def __init__(
        self,
        key: str = "sk-test-key",
        model: str = "judge-model",
        answer: Callable[[dict], str] | None = None,
        slow_s: float = 0.6,
    ):
        self.key = key
        self.model = model
        self.answer = answer or (lambda body: "Looks fine.\n#score: 1")
        self.slow_s = slow_s
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.modes_seen: list[str] = []
        self.problems: list[str] = []
        self._script: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- control -----------------------------------------------------------------------------

    def script(self, modes: list[str]) -> None:
        """Modes for the next requests, in order; "ok" once they are used up."""
        with self._lock:
            self._script = list(modes)

    def _next_mode(self) -> str:
        with self._lock:
            return self._script.pop(0) if self._script else "ok"

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAI":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json", extra=None):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in (extra or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

            def _json(self, status: int, obj: dict, extra=None):
                self._send(status, json.dumps(obj).encode(), extra=extra)

            def do_POST(self):  # noqa: N802 - http.server API
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                mode = fake._next_mode()
                with fake._lock:
                    fake.modes_seen.append(mode)
                    fake.headers.append(dict(self.headers))
                if mode in ("401", "403"):
                    # Real providers echo part of the key: the client must not repeat the body.
                    return self._json(
                        int(mode),
                        {
                            "error": {
                                "message": f"Incorrect API key provided: {fake.key}",
                                "type": "invalid_request_error",
                                "code": "invalid_api_key",
                            }
                        },
                    )
                problems = fake._check(self.path, self.headers, raw)
                if problems:
                    with fake._lock:
                        fake.problems.extend(problems)
                    return self._json(400, {"error": {"message": "; ".join(problems)}})
                body = json.loads(raw)
                with fake._lock:
                    fake.requests.append(body)
                if mode == "429":
                    return self._json(429, {"error": {"message": "Rate limit reached", "type": "requests"}})
                if mode in ("500", "503"):
                    return self._json(int(mode), {"error": {"message": "server error"}})
                if mode == "400":
                    return self._json(400, {"error": {"message": "context too long"}})
                if mode == "content_filter":  # Azure OpenAI's content filter, in the OpenAI error format
                    return self._json(
                        400,
                        {
                            "error": {
                                "message": "The response was filtered due to the prompt triggering content management "
                                "policy.",
                                "type": None,
                                "param": "prompt",
                                "code": "content_filter",
                                "status": 400,
                                "innererror": {
                                    "code": "ResponsibleAIPolicyViolation",
                                    "content_filter_result": {"violence": {"filtered": True, "severity": "high"}},
                                },
                            }
                        },
                    )
                if mode == "filtered_answer":  # 200, the answer withheld by an output filter
                    return self._json(200, chat_completion(None, fake.model, finish_reason="content_filter"))
                if mode == "garbage":
                    return self._send(200, b"<html>upstream hiccup", ctype="text/html")
                if mode == "schema":
                    return self._json(200, {"object": "chat.completion", "oops": True})
                if mode == "timeout":
                    time.sleep(fake.slow_s)
                    return self._json(200, chat_completion("#score: 1", fake.model))
                if mode == "unparseable":
                    return self._json(200, chat_completion("I would rather not say.", fake.model))
                return self._json(200, chat_completion(fake.answer(body), fake.model))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ---- request checks ----------------------------------------------------------------------

    def _check(self, path: str, headers, raw: bytes) -> list[str]:
        problems = []
        if path != "/v1/chat/completions":
            problems.append(f"path {path}")
        if headers.get("Authorization") != f"Bearer {self.key}":
            problems.append("bad Authorization header")
        try:
            body = json.loads(raw)
        except ValueError:
            return problems + ["body is not JSON"]
        if body.get("model") != self.model:
            problems.append(f"model {body.get('model')!r}")
        if body.get("temperature") != 0:
            problems.append(f"temperature {body.get('temperature')!r}")
        if body.get("top_p") != 0:
            problems.append(f"top_p {body.get('top_p')!r}")
        msgs = body.get("messages")
        if not (
            isinstance(msgs, list)
            and msgs
            and all(
                isinstance(m, dict)
                and m.get("role") in ("system", "user", "assistant")
                and isinstance(m.get("content"), str)
                and m["content"]
                for m in msgs
            )
        ):
            problems.append("bad messages")
        return problems
