"""What a base model IS, by content: the tiny model's recipe, a GGUF file's sha256, a local folder's
files, or a hub id + revision; plus the dtype. Part of every training and evaluation key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from value_harms.models import loading
from value_harms.store.files import to_plain
from value_harms.store.identity import content_sha256, digest

_MODEL_FILES = (".safetensors", ".bin", ".json", ".model", ".txt", ".gguf", ".tiktoken")


def base_identity(model_cfg: Any, cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """What the base weights and tokenizer ARE, by content:
    - tiny: its architecture + seed + builder version (the weights are a pure function of them);
    - gguf: sha256 of the GGUF file (weights and tokenizer both live in it);
    - hub, local folder: sha256 of its weight / config / tokenizer files;
    - hub id: the id + revision (a pinned commit names content; an unpinned `main` is recorded as
      such and moves with the hub - pin model.revision for reproducible stores).
    Plus the dtype the weights are loaded in. Never the config's `name`."""

    m = to_plain(model_cfg) if not isinstance(model_cfg, Mapping) else dict(model_cfg)
    source = m.get("source")
    ident: dict[str, Any] = {"source": source, "dtype": m.get("dtype") or "float32"}
    if source == "tiny":
        ident["tiny"] = loading.tiny_dict(m)
        ident["builder"] = loading.TINY_BUILDER_VERSION
        ident["corpus"] = digest(list(loading.TINY_CORPUS))
    elif source == "gguf":
        ident["gguf_sha256"] = content_sha256(loading.gguf_path(m), cache_dir)
    elif source == "hub":
        pretrained = str(m.get("pretrained") or "")
        local = Path(os.path.expanduser(pretrained))
        if pretrained.startswith((".", "/", "~")) or local.is_dir():
            ident["local_sha256"] = content_sha256(local, cache_dir, include=_MODEL_FILES)
        else:
            ident["hub_id"] = pretrained
            ident["revision"] = m.get("revision") or "main"
    else:
        raise loading.ModelError(f"model.source={source!r}; expected one of {', '.join(loading.SOURCES)}")
    return ident
