"""Running a call under a time limit, for tests that assert a bound on a network failure's cost."""

from __future__ import annotations

import threading
import time


def bounded(fn, limit_s: float):
    """(result or exception, seconds) of fn(), failing the test when it runs past limit_s (code that
    stalls keeps running in a daemon thread, so the test reports the stall instead of hanging)."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    t0 = time.monotonic()
    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(limit_s)
    elapsed = time.monotonic() - t0
    assert not th.is_alive(), f"still running after {limit_s} s: not bounded per job"
    return box.get("value", box.get("error")), elapsed
