"""Unreachable endpoints on 127.0.0.1 for network-failure tests.

- `closed_port()`: a port nobody listens on (connections are refused at once).
- `BlackHole`: a server that accepts every TCP connection, reads what the client sends and never
  answers (the client waits for its read timeout). `connections` counts accepted connections and
  `requests` the HTTP request heads received, so a test can count the attempts a client made.
"""

from __future__ import annotations

import socket
import threading


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BlackHole:
    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        self.connections = 0
        self.requests = 0
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _drain(self, conn: socket.socket) -> None:
        """Read (and count) request heads; never write a byte."""
        buf = b""
        conn.settimeout(0.2)
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                if head.split(b" ", 1)[0] in (b"GET", b"POST", b"PUT", b"HEAD"):
                    with self._lock:
                        self.requests += 1
                buf = b""  # the body (if any) is not parsed: one head per request is enough

    def _serve(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._held.append(conn)
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def __enter__(self) -> "BlackHole":
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        with self._lock:
            for c in self._held:
                try:
                    c.close()
                except OSError:
                    pass
        self._sock.close()
