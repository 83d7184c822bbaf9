"""One way to read a field of a config node, whatever its type (dict, DictConfig, dataclass).

Kept free of package and third-party imports so every layer (models, scoring, benchmark loaders)
can use it without pulling in the schema.
"""

from __future__ import annotations

from typing import Any


def cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    """`cfg[key]` / `cfg.key` for a dict, DictConfig or dataclass; `default` when `cfg` is None, the
    field is absent (older configs lack fields added to the schema later) or its value is None."""
    if cfg is None:
        return default
    if isinstance(cfg, dict):
        value = cfg.get(key)
    else:
        try:
            value = getattr(cfg, key)
        except (AttributeError, KeyError):
            try:  # mappings without attribute access
                value = cfg[key]
            except (TypeError, KeyError, IndexError, AttributeError):
                value = None
    return default if value is None else value
