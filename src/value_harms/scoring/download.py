"""Bounded downloads of the weight files a scorer fetches itself (Detoxify's release checkpoints).

`torch.hub.load_state_dict_from_url`, which detoxify calls, opens the URL with urllib and no timeout:
a node whose packets are dropped waits for the kernel's connect timeout (~130 s), and behind a proxy
that accepts and never answers (HTTPS_PROXY on many cluster nodes) it waits forever. `fetch(url, dest)`
downloads with requests instead:
- proxies from the environment (HTTPS_PROXY / HTTP_PROXY / NO_PROXY), as urllib would use them;
- a connect timeout (the proxy's too: the CONNECT tunnel is set up within it) and a read timeout per
  chunk, so a transfer that stalls ends; a slow but moving transfer of a large file is not cut;
- written to a temporary file beside `dest`, then renamed: a killed download leaves no half file that
  torch.hub would load; torch.hub then finds `dest` in its cache and opens no connection.
A failure raises `ScorerUnavailable` with a one-line reason (exception types, never messages, which
quote URLs) and is remembered for the process: every later job of an in-process multirun skips the
download at once instead of paying the timeout again (`forget_failures()` clears the memory).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import requests

from value_harms.errors import ScorerUnavailable
from value_harms.net import describe_failure, endpoint_id
from value_harms.store import files

log = logging.getLogger(__name__)

CHUNK = 1 << 20
_FAILED: dict[str, str] = {}  # url -> why it could not be downloaded in this process
_LOCK = threading.Lock()

__all__ = ["fetch", "forget_failures", "known_failure"]


def known_failure(url: str) -> str | None:
    """Why `url` could not be downloaded earlier in this process (None: not tried, or it worked)."""
    with _LOCK:
        return _FAILED.get(url)


def forget_failures() -> None:
    with _LOCK:
        _FAILED.clear()


def fetch(url: str, dest: str | os.PathLike, *, connect_timeout_s: float, read_timeout_s: float) -> Path:
    """`dest` after downloading `url` into it (nothing is sent when it is already there)."""
    dest = Path(dest)
    if dest.is_file():
        return dest
    earlier = known_failure(url)
    if earlier is not None:
        raise ScorerUnavailable(f"{earlier} (decided earlier in this process; not retried)")
    t0 = time.monotonic()
    try:
        _download(url, dest, connect_timeout_s, read_timeout_s)
    except (requests.RequestException, OSError) as exc:
        if isinstance(exc, requests.HTTPError) and exc.response is not None:
            why = f"HTTP {exc.response.status_code}"
        elif isinstance(exc, requests.Timeout) or "timed out" in repr(exc):
            # connect or read (urllib3 reports a silent proxy as a read; a stall mid-body comes wrapped
            # in a ConnectionError): the elapsed time in the reason says which bound it hit
            why = "timeout (no answer)"
        elif isinstance(exc, requests.RequestException):
            why = describe_failure(exc, read_timeout_s)
        else:
            why = f"{type(exc).__name__} writing {dest.parent}"
        proxy = requests.utils.get_environ_proxies(url).get(url.split(":", 1)[0])
        via = f" via proxy {endpoint_id(proxy)}" if proxy else ""
        reason = f"download of {endpoint_id(url)}{via} failed after {time.monotonic() - t0:.1f} s: {why}"
        with _LOCK:
            _FAILED[url] = reason
        log.warning("%s; not retried in this process", reason)
        raise ScorerUnavailable(reason) from None
    log.info("downloaded %s to %s in %.1f s", endpoint_id(url), dest, time.monotonic() - t0)
    return dest


def _download(url: str, dest: Path, connect_timeout_s: float, read_timeout_s: float) -> None:
    with files.atomic_path(dest) as part:  # a killed download leaves no half file where torch.hub looks
        with requests.get(url, stream=True, timeout=(connect_timeout_s, read_timeout_s)) as resp:
            resp.raise_for_status()
            with open(part, "wb") as fh:
                for block in resp.iter_content(CHUNK):
                    fh.write(block)
