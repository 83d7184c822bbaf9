"""Files of the store: atomic writes (every write-then-rename of the package goes through here), folder
locks, completion markers. Hashes live in store.hashing."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from omegaconf import DictConfig, OmegaConf

COMPLETE = "COMPLETE"


def to_plain(node: Any) -> Any:
    """A resolved plain-Python copy of a config node (dicts/lists/scalars)."""
    if isinstance(node, DictConfig) or OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
    return node


_UMASK: int | None = None


def umask() -> int:
    """The process umask (read once: os.umask can only be read by setting it)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file so that readers see the old content or the new one, never a partial file. The file gets the
    mode a plain open() would give (0666 less the umask), not mkstemp's 0600: a team sharing a store on a cluster
    reads each other's results (no secret is ever written to the store)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """atomic_write_bytes of the text's UTF-8 bytes."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file beside `path` (unique per writer, `.<name>.<random>.tmp`) for writers that need a
    path (torch.save, safetensors, a YAML dump): when the block ends without an error the file is flushed
    to disk, given the mode a plain open() would give, and renamed over `path`; on an error it is removed.
    A kill leaves only the temporary file, which the next holder of the folder's lock removes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success it replaces `final` in one rename. With
    replace=False an existing `final` is kept and the new folder dropped: for content-addressed folders that
    several processes may build at once (theirs is the same), and that a reader may be using meanwhile."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    tmp.chmod(0o777 & ~umask())  # mkdtemp's 0700 would hide the folder from the rest of a team (see above)
    try:
        yield tmp
        if not replace:
            with contextlib.suppress(OSError):  # a non-empty `final` exists: another writer finished first
                os.rename(tmp, final)
        elif final.exists():
            old = final.with_name(f".{final.name}.old.{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def locked(folder: str | os.PathLike) -> Iterator[None]:
    """An exclusive advisory lock on a store folder: one writer per result at a time. A process that
    has to wait says for what and for whom (the holder's pid is in the lock file); callers re-check
    the store after taking the lock, so a result finished meanwhile is reused, not recomputed.
    Whoever takes the lock removes the temporary files a killed writer left behind."""
    import logging

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            logging.getLogger(__name__).warning("waiting for %s: its result is being computed by %s", folder, holder)
            t0 = time.monotonic()
            fcntl.flock(fh, fcntl.LOCK_EX)
            logging.getLogger(__name__).warning("lock on %s taken after %.1f s", folder, time.monotonic() - t0)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
        try:
            remove_stale_tmp(folder)
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def remove_stale_tmp(folder: str | os.PathLike) -> list[Path]:
    """Remove the leftovers of atomic writes interrupted by a kill under `folder` (recursively):
    `.<name>.*.tmp` files / folders and `.<name>.old.<pid>` folders. Call it only while holding the
    folder's lock: then no live writer owns them. Returns what was removed."""
    import logging

    removed = []
    for p in sorted(Path(folder).rglob(".*"), key=lambda x: len(x.parts), reverse=True):
        if not (p.name.endswith(".tmp") or ".old." in p.name) or not p.exists():
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        removed.append(p)
    if removed:
        logging.getLogger(__name__).warning(
            "removed %d leftover temporary file(s) of an interrupted write in %s", len(removed), folder
        )
    return removed


def is_complete(folder: str | os.PathLike) -> bool:
    return (Path(folder) / COMPLETE).is_file()


def mark_complete(folder: str | os.PathLike, info: Mapping[str, Any] | None = None) -> None:
    atomic_write_json(Path(folder) / COMPLETE, dict(info or {}))
