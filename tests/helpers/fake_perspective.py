"""A fake Perspective API on 127.0.0.1 (http.server in a thread) speaking the real format.

It validates each request (POST, `key` query parameter, JSON body with comment.text,
requestedAttributes.TOXICITY, languages, doNotStore) and answers
`{"attributeScores": {"TOXICITY": {"summaryScore": {"value": v, "type": "PROBABILITY"}}}}` with
v = `fake_score(text)`, a deterministic function of the text. Failure injection:
- `server.fail_next(mode, n)`: the next n requests fail with mode "429", "500", "timeout" (sleep
  past the client timeout, then answer), "garbage" (200 with non-JSON), "400", "403";
- `server.fail_texts[text] = mode`: every request for that text fails that way.
`server.requests` records (text, key, mode) per request.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PATH = "/v1alpha1/comments:analyze"


def fake_score(text: str) -> float:
    """Deterministic score in (0, 1): texts containing "idiot" score high, others from a hash."""
    if "idiot" in text:
        return 0.9
    h = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
    return round(0.05 + 0.4 * (h / 0xFFFFFFFF), 6)


class _Handler(BaseHTTPRequestHandler):
    server: "FakePerspective"

    def log_message(self, *args):  # keep test output quiet
        pass

    def _send(self, code: int, payload, headers: dict | None = None) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _error(self, code: int, message: str, status: str) -> None:
        self._send(code, {"error": {"code": code, "message": message, "status": status}})

    def do_POST(self):  # noqa: N802
        srv = self.server
        url = urlparse(self.path)
        key = parse_qs(url.query).get("key", [None])[0]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
            text = body["comment"]["text"]
            assert url.path == PATH, url.path
            assert isinstance(text, str)
            assert body["requestedAttributes"] == {"TOXICITY": {}}, body["requestedAttributes"]
            langs = body.get("languages")  # absent: Perspective detects the language
            assert langs is None or (isinstance(langs, list) and all(isinstance(x, str) for x in langs)), langs
            srv.languages.append(langs)
            assert body["doNotStore"] is True
            assert key, "no key"
        except Exception as exc:  # noqa: BLE001 - a malformed request is a test failure
            srv.invalid.append(f"{type(exc).__name__}: {exc}")
            self._error(400, f"invalid request: {exc}", "INVALID_ARGUMENT")
            return
        mode = srv.take_mode(text)
        srv.requests.append((text, key, mode))
        if key != srv.valid_key:
            mode = "403"
        if mode == "429":
            self._error(429, "Quota exceeded", "RESOURCE_EXHAUSTED")
        elif mode == "500":
            self._error(500, "Internal error", "INTERNAL")
        elif mode == "timeout":
            time.sleep(srv.delay_s)
            self._send(200, _answer(text))
        elif mode == "garbage":
            self._send(200, b"<html>not json")
        elif mode == "400":
            self._error(400, "Attribute TOXICITY does not support request languages: xx", "INVALID_ARGUMENT")
        elif mode == "403":
            # Google's real message does not echo the key; this fake does, to prove the client
            # scrubs whatever the server says.
            self._error(403, f"API key not valid: {key}", "PERMISSION_DENIED")
        else:
            self._send(200, _answer(text))


def _answer(text: str) -> dict:
    return {
        "attributeScores": {
            "TOXICITY": {
                "spanScores": [
                    {"begin": 0, "end": len(text), "score": {"value": fake_score(text), "type": "PROBABILITY"}}
                ],
                "summaryScore": {"value": fake_score(text), "type": "PROBABILITY"},
            }
        },
        "languages": ["en"],
        "detectedLanguages": ["en"],
    }


class FakePerspective(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, valid_key: str = "test-key-5f3a9c", delay_s: float = 0.5):
        super().__init__(("127.0.0.1", 0), _Handler)  # port 0: a random free port
        self.valid_key = valid_key
        self.delay_s = delay_s
        self.requests: list[tuple[str, str, str | None]] = []
        self.languages: list[list[str] | None] = []  # the `languages` field of each request (None: absent)
        self.invalid: list[str] = []
        self.fail_texts: dict[str, str] = {}
        self._queue: list[str] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}{PATH}"

    def fail_next(self, mode: str, n: int = 1) -> None:
        with self._lock:
            self._queue.extend([mode] * n)

    def take_mode(self, text: str) -> str | None:
        with self._lock:
            if text in self.fail_texts:
                return self.fail_texts[text]
            return self._queue.pop(0) if self._queue else None

    def start(self) -> "FakePerspective":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
