"""The one rule for a config name that becomes a folder or file name (store folders, run folders, W&B
names): one safe path component. value_harms.store.layout uses it where folders are made, value_harms.config.validate
at composition, value_harms.core.profiles when a profile is read."""

from __future__ import annotations

import re

from value_harms.errors import UnsafeNameError

MAX_NAME = 100
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")


def safe_name(name: object, what: str = "name") -> str:
    """`name` unchanged when it is a safe single folder name, else a one-line UnsafeNameError."""
    text = str(name)
    if not text or text in (".", "..") or _UNSAFE.search(text) or text.startswith("~"):
        raise UnsafeNameError(
            f"{what}={text!r} cannot be a folder name: use letters, digits, '_', '-', '.' "
            f"without '/', '\\\\', '..' or control characters"
        )
    if len(text) > MAX_NAME:
        raise UnsafeNameError(f"{what}={text[:40]!r}... is {len(text)} characters long; use at most {MAX_NAME}")
    return text
