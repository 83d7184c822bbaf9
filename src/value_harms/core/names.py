"""The name rules, in one place:
- `safe_name`: a config name that becomes a folder or file name (store folders, run folders, W&B names) must
  already be one safe path component; value_harms.store.layout uses it where folders are made,
  value_harms.config.validate at composition, value_harms.core.profiles when a profile is read;
- `slug`: any text made into a name (a W&B artifact name, a report's figure file or anchor): every run of
  characters other than ASCII letters, digits, `_`, `.` and `-` becomes one separator."""

from __future__ import annotations

import re

from value_harms.errors import UnsafeNameError

MAX_NAME = 100
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")
_NOT_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


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


def slug(text: object, sep: str = "_") -> str:
    """`text` with each run of characters outside [A-Za-z0-9_.-] replaced by `sep` and `sep` stripped from
    both ends ("x" when nothing is left). The characters kept are the ones W&B allows in artifact names."""
    return _NOT_SLUG.sub(sep, str(text)).strip(sep) or "x"
