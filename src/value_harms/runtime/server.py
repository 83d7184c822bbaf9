"""A server process the project starts and stops itself (the vLLM engine; any later local service).

- Started in its own session (process group) with its output in a log file, never a pipe that can fill.
- On Linux the child gets PR_SET_PDEATHSIG: if the project's process dies (even by SIGKILL), the kernel
  sends the server SIGTERM, so no orphan keeps the GPU or the port.
- `wait_ready` polls a health URL until it answers 200, with an overall timeout; a server that exits
  while starting is reported with the tail of its log, at once, not after the timeout. Each poll goes
  through the one HTTP layer (value_harms/net.py) with a connect and a read timeout of seconds; its breaker
  never opens (refusals are what a starting server answers; the overall timeout bounds the wait).
- `stop` sends SIGTERM to the whole process group by PID, waits, then SIGKILL. A PID file next to the
  log names the process for a person who wants to look at it (`kill -- -PID`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

from value_harms.errors import EngineError
from value_harms.net import GaveUp, HttpClient, HttpSettings

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# One health poll: connect 2 s, answer 5 s, no retry inside a poll (the loop polls again every 0.5 s), and a
# breaker that never opens (0 = no outage limit; failures in a row only end with the overall timeout).
HEALTH_HTTP = HttpSettings(
    read_timeout_s=5.0, connect_timeout_s=2.0, max_retries=0, max_consecutive_failures=10**9, max_outage_s=0.0
)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:  # no glibc (musl): the atexit stop still applies
            pass


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


class ManagedServer:
    """One server process started by the project: `start()`, `wait_ready(url)`, `stop()`."""

    def __init__(self, name: str, argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.pid_path = self.log_path.with_suffix(".pid")
        self.env = dict(env or {})
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if not Path(self.argv[0]).exists() and os.sep in self.argv[0]:
            raise EngineError(f"{self.name}: no interpreter at {self.argv[0]} (build it with `make engine-env`)")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.pid_path.write_text(f"{self.proc.pid}\n")
        log.info("%s: started, PID %d, log %s", self.name, self.proc.pid, self.log_path)

    def wait_ready(self, url: str, timeout_s: float, *, headers: Mapping[str, str] | None = None) -> float:
        """Seconds until GET `url` answered 200; EngineError when the process exits or `timeout_s` passes."""
        t0 = time.monotonic()
        client = HttpClient(f"{self.name} health", url, HEALTH_HTTP, error=EngineError)
        try:
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    raise EngineError(
                        f"{self.name} exited with status {self.proc.returncode} while starting; "
                        f"log {self.log_path}:\n{log_tail(self.log_path)}"
                    )
                if self._healthy(client, headers, timeout_s - (time.monotonic() - t0)):
                    return time.monotonic() - t0
                self._check_timeout(url, t0, timeout_s)
                time.sleep(0.5)
        finally:
            client.close()

    @staticmethod
    def _healthy(client: HttpClient, headers: Mapping[str, str] | None, left_s: float) -> bool:
        """One GET of the health URL within what is left of the overall timeout: answered 200?"""
        try:
            status = client.call(
                lambda r: r.status_code, method="GET", headers=dict(headers or {}), deadline_s=max(0.1, left_s)
            )
        except GaveUp:  # refused, no answer yet: the server is still starting
            return False
        return status == 200

    def _check_timeout(self, url: str, t0: float, timeout_s: float) -> None:
        """Stop the server and raise EngineError once `timeout_s` has passed since `t0`."""
        if time.monotonic() - t0 > timeout_s:
            self.stop()
            raise EngineError(
                f"{self.name} was not ready within {timeout_s:g} s ({url}); it was stopped. "
                f"Log {self.log_path}:\n{log_tail(self.log_path)}"
            )

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM to the server's process group, SIGKILL after `grace_s`; idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # workers the server forked into its group: make sure none survives it
        _signal_group(proc.pid, signal.SIGKILL)
        self.pid_path.unlink(missing_ok=True)
        log.info("%s: stopped (PID %d)", self.name, proc.pid)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
