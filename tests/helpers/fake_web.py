"""A web server on 127.0.0.1 that answers every request the same way, for endpoints that are wrong or refusing.

    with FixedAnswer(200, b"<html>captive portal</html>") as srv:   # a 200 that is not the API's
    with FixedAnswer(429, b'{"error": ...}', headers={"Retry-After": "30"}) as srv:
    with FixedAnswer(200, payload, stall_after=1000) as srv:        # a download that stops mid-way
        srv.url("/v1")      # "http://127.0.0.1:<port>/v1"
        srv.requests        # request lines received ("POST /v1/chat/completions", ...)

`stall_after=n`: the answer announces the whole body (Content-Length) but sends only its first n
bytes, then holds the connection open without sending more until the server stops.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FixedAnswer:
    def __init__(
        self,
        status: int = 200,
        body: bytes = b"<html><body>Welcome</body></html>",
        *,
        content_type: str = "text/html",
        headers: dict[str, str] | None = None,
        stall_after: int | None = None,
    ):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = dict(headers or {})
        self.stall_after = stall_after
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def url(self, path: str = "") -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def __enter__(self) -> "FixedAnswer":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _answer(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                with fake._lock:
                    fake.requests.append(f"{self.command} {self.path}")
                try:
                    self.send_response(fake.status)
                    self.send_header("Content-Type", fake.content_type)
                    self.send_header("Content-Length", str(len(fake.body)))
                    for k, v in fake.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    if fake.stall_after is None:
                        self.wfile.write(fake.body)
                        return
                    self.wfile.write(fake.body[: fake.stall_after])
                    self.wfile.flush()
                    fake._stop.wait()  # the rest never comes
                except (BrokenPipeError, ConnectionResetError):  # the client gave up and left
                    pass

            do_GET = do_POST = _answer  # noqa: N815 - http.server API

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
