"""Where results live in the store, and folder names: a name from the config becomes ONE path
component, never a path (no separators, no `..`, no absolute paths, no control characters).

The store's layout is defined here and nowhere else:
- trained adapters: <store>/train/<model>/<stage>/<profile>/<training key>
- evaluations:      <store>/eval/<model>/<variant>/<stage>/<profile>/<benchmark>/<mitigation>/<eval key>
Only the key (a content hash, store.identity) decides identity; the names make the store browsable.
No reader parses these paths: every fact a reader needs is in the stored record itself.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

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


def _root(store_dir: str | os.PathLike) -> Path:
    return Path(os.path.expanduser(str(store_dir)))


def train_dir(store_dir: str | os.PathLike, *, model: str, stage: str, profile: str, key: str) -> Path:
    """The store folder of one training result (adapter, train_result.json, checkpoints)."""
    return (
        _root(store_dir)
        / "train"
        / safe_name(model, "model.name")
        / safe_name(stage, "vim_stage.name")
        / safe_name(profile, "value_profile.name")
        / safe_name(key, "training key")
    )


def eval_dir(
    store_dir: str | os.PathLike,
    *,
    model: str,
    variant: str,
    stage: str,
    profile: str,
    benchmark: str,
    mitigation: str,
    key: str,
) -> Path:
    """The store folder of one evaluation result (results.json, samples.jsonl, its marker)."""
    return (
        _root(store_dir)
        / "eval"
        / safe_name(model, "model.name")
        / safe_name(variant, "baseline")
        / safe_name(stage, "vim_stage.name")
        / safe_name(profile, "value_profile.name")
        / safe_name(benchmark, "benchmark.name")
        / safe_name(mitigation, "mitigation.name")
        / safe_name(key, "evaluation key")
    )
