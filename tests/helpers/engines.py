"""A clean slate of generation engines for each test: no server, client, identity or breaker left over."""

from __future__ import annotations

import pytest


def fresh_engines(monkeypatch: pytest.MonkeyPatch):
    """Generator for an autouse fixture: the fake servers' key set, and every engine cache empty before and after."""
    from value_harms.eval import engines as E
    from value_harms.net import reset_breakers

    def reset() -> None:
        E.shutdown_engines()
        E._IDENTITY_CACHE.clear()
        reset_breakers()

    monkeypatch.setenv("VLLM_API_KEY", "test-key")
    reset()
    yield
    reset()
