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
from pathlib import Path

from value_harms.core.names import safe_name

# The store's two top folders (config.schema.analyze reads its default inputs from them).
TRAIN = "train"
EVAL = "eval"


def _root(store_dir: str | os.PathLike) -> Path:
    return Path(os.path.expanduser(str(store_dir)))


def train_dir(store_dir: str | os.PathLike, *, model: str, stage: str, profile: str, key: str) -> Path:
    """The store folder of one training result (adapter, train_result.json, checkpoints)."""
    return (
        _root(store_dir)
        / TRAIN
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
        / EVAL
        / safe_name(model, "model.name")
        / safe_name(variant, "baseline")
        / safe_name(stage, "vim_stage.name")
        / safe_name(profile, "value_profile.name")
        / safe_name(benchmark, "benchmark.name")
        / safe_name(mitigation, "mitigation.name")
        / safe_name(key, "evaluation key")
    )
