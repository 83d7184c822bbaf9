"""Detoxify toxicity (unitaryai/detoxify 0.5.4, Apache-2.0): the offline stand-in for Perspective.

Variants (detoxify README): original (BERT, Jigsaw 2018, 6 outputs), unbiased (RoBERTa, Jigsaw
Unintended Bias, 7 outputs), multilingual (XLM-R, 7 outputs). All name their main output `toxicity`,
the score used here.

Weights:
- default: the variant's release asset in the torch hub cache (`<torch hub dir>/checkpoints/`), where
  `Detoxify(variant)` looks for it. When it is not there, it is downloaded first by
  `scoring.download.fetch` (proxies from the environment, connect + read timeouts, decided once per
  process), never by torch.hub's own urllib download, which has no timeout (a dropped-packet node
  waited ~130 s per job, a silent proxy forever). A failed download is `ScorerUnavailable`, so a chain
  falls back.
- air-gapped: `checkpoint` (the `.ckpt` dict `{"config", "state_dict"}`) + `huggingface_config_path`
  (config.json with the right `num_labels` + tokenizer files). Detoxify 0.5.4 then still calls
  `config_class.from_pretrained(model_type)` with the `model_type` stored in the checkpoint's
  `config.arch.args` (its own `model_type` argument is ignored once a checkpoint is given; upstream
  PR 126 is open). When that stored name is not a local folder, the checkpoint's copy in memory is
  pointed at `huggingface_config_path` before Detoxify reads it, so nothing looks at the hub.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from value_harms.errors import ScorerUnavailable
from value_harms.scoring.base import Score, Scorer, unique_items
from value_harms.scoring.download import fetch

log = logging.getLogger(__name__)

OUTPUT = "toxicity"  # Detoxify renames Jigsaw's "toxic" to "toxicity" in every variant
_MODELS: dict[tuple, Any] = {}  # (variant, checkpoint, its size + mtime, config folder, device) -> model
_MODELS_LOCK = threading.Lock()


def _version() -> str | None:
    try:
        from importlib.metadata import version

        return version("detoxify")
    except Exception:  # noqa: BLE001
        return None


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0][:200] if msg else ''}"


class DetoxifyScorer(Scorer):
    """Toxicity from the real `detoxify.Detoxify` class, batched. Loads the model in `__init__`."""

    measure = "toxicity"

    def __init__(self, cfg: Any, connect_timeout_s: float = 5.0, read_timeout_s: float = 10.0):
        self.cfg = cfg
        self.timeouts = (float(connect_timeout_s), float(read_timeout_s))  # of the weights download
        self.variant = str(cfg.variant)
        self.name = f"detoxify:{self.variant}"
        self.batch_size = max(1, int(cfg.batch_size))
        self.checkpoint = os.path.expanduser(str(cfg.checkpoint)) if cfg.checkpoint else None
        self.hf_dir = os.path.expanduser(str(cfg.huggingface_config_path)) if cfg.huggingface_config_path else None
        self._checkpoint_id: str | None = None
        self.model = self._loaded()
        self._fix_max_length()

    def _loaded(self) -> Any:
        """The model, loaded once per process and configuration: the check before generation
        (scoring.probe) and the scoring after it share one load, and so do the jobs of a multirun."""
        stamp = None
        if self.checkpoint and Path(self.checkpoint).is_file():
            st = Path(self.checkpoint).stat()
            stamp = (st.st_size, st.st_mtime_ns)  # a checkpoint rewritten in place is loaded again
        key = (self.variant, self.checkpoint, stamp, self.hf_dir, str(self.cfg.device))
        with _MODELS_LOCK:
            if key not in _MODELS:
                _MODELS[key] = self._load()
            return _MODELS[key]

    # ---------------------------------------------------------------------------------------------

    def _load(self) -> Any:
        try:
            from detoxify import Detoxify
        except ImportError as exc:
            raise ScorerUnavailable(f"detoxify is not installed (pip install detoxify): {exc}") from exc
        device = str(self.cfg.device)
        if self.checkpoint is None:
            self._fetch_weights()
            try:
                return Detoxify(self.variant, device=device)
            except KeyError as exc:
                raise ValueError(f"unknown Detoxify variant {self.variant!r}") from exc
            except Exception as exc:  # noqa: BLE001 - URLError, OSError, HTTPError, hub errors
                raise ScorerUnavailable(
                    f"Detoxify '{self.variant}' weights unavailable ({_one_line(exc)}); offline, "
                    "set scorer.detoxify.checkpoint and scorer.detoxify.huggingface_config_path"
                ) from exc
        if not Path(self.checkpoint).is_file():
            raise ScorerUnavailable(f"Detoxify checkpoint not found: {self.checkpoint}")
        if self.hf_dir is not None and not Path(self.hf_dir).is_dir():
            raise ScorerUnavailable(f"Detoxify huggingface_config_path not a folder: {self.hf_dir}")
        try:
            source = self._checkpoint_source()
            return Detoxify(
                self.variant,
                checkpoint=source,
                device=device,
                huggingface_config_path=self.hf_dir,
            )
        except ScorerUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ScorerUnavailable(f"Detoxify checkpoint {self.checkpoint} did not load ({_one_line(exc)})") from exc

    def _fetch_weights(self) -> None:
        """The variant's release asset into torch.hub's cache, with bounded timeouts (see the module
        doc); ScorerUnavailable when it cannot be had."""
        import torch
        from detoxify.detoxify import MODEL_URLS

        if self.variant not in MODEL_URLS:
            raise ValueError(f"unknown Detoxify variant {self.variant!r}; expected one of {', '.join(MODEL_URLS)}")
        url = MODEL_URLS[self.variant]
        dest = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        try:
            fetch(url, dest, connect_timeout_s=self.timeouts[0], read_timeout_s=self.timeouts[1])
        except ScorerUnavailable as exc:
            raise ScorerUnavailable(
                f"Detoxify '{self.variant}' weights unavailable ({exc}); offline, "
                "set scorer.detoxify.checkpoint and scorer.detoxify.huggingface_config_path"
            ) from None

    def _checkpoint_source(self) -> Any:
        """The checkpoint path, or an in-memory copy whose arch.args.model_type is the local
        config folder when the stored one would make transformers look at the hub."""
        import torch

        if self.hf_dir is None:
            return self.checkpoint
        try:  # mmap: reading the config does not copy the weights into memory
            loaded = torch.load(self.checkpoint, map_location="cpu", weights_only=False, mmap=True)
        except RuntimeError:  # legacy (non-zip) checkpoint files cannot be memory-mapped
            loaded = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        try:
            args = loaded["config"]["arch"]["args"]
        except (KeyError, TypeError) as exc:
            raise ScorerUnavailable(f"{self.checkpoint} is not a Detoxify checkpoint (needs config.arch.args)") from exc
        if Path(str(args.get("model_type", ""))).is_dir():
            return self.checkpoint
        log.info(
            "detoxify: checkpoint names model_type %r; using local config folder %s instead",
            args.get("model_type"),
            self.hf_dir,
        )
        args["model_type"] = self.hf_dir
        buf = io.BytesIO()
        torch.save(loaded, buf)
        buf.seek(0)
        return buf

    def _fix_max_length(self) -> None:
        # A folder with only vocab.txt leaves model_max_length unset (1e30): Detoxify truncates to
        # it, so cap it at the model's position embeddings to keep long texts from crashing.
        tok, model = self.model.tokenizer, self.model.model
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit and (tok.model_max_length is None or tok.model_max_length > limit):
            tok.model_max_length = int(limit)

    # ---------------------------------------------------------------------------------------------

    @property
    def cache_id(self) -> str:
        if self._checkpoint_id is None:
            if self.checkpoint:
                from value_harms.store.identity import content_id

                self._checkpoint_id = f"{self.name}:{content_id(self.checkpoint)}"
            else:
                from detoxify.detoxify import MODEL_URLS

                url = MODEL_URLS.get(self.variant, self.variant)
                self._checkpoint_id = f"{self.name}:{url.rsplit('/', 1)[-1]}"
        return self._checkpoint_id

    def _predict(self, batch: list[str]) -> list[float]:
        out = self.model.predict(batch)[OUTPUT]
        return [float(x) for x in (out if isinstance(out, list) else [out])]

    def score(self, texts: list[str], contexts: list[str] | None = None) -> list[Score]:
        uniq, index = unique_items(texts, None)  # Detoxify scores the text alone
        order = sorted(range(len(uniq)), key=lambda i: len(uniq[i][0]))  # less padding per batch
        values: list[Score | None] = [None] * len(uniq)
        bar = tqdm(total=len(uniq), desc=self.name, unit="text", disable=len(uniq) < 2, leave=False)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            try:
                scores = self._predict([uniq[i][0] for i in idx])
            except RuntimeError as exc:  # e.g. out of memory: missing, counted, never 0
                log.warning("detoxify batch failed: %s", _one_line(exc))
                for i in idx:
                    values[i] = Score.missing(self.name, _one_line(exc))
            else:
                for i, v in zip(idx, scores):
                    values[i] = Score(value=v, scorer=self.name)
            bar.update(len(idx))
        bar.close()
        return [values[j] for j in index]  # type: ignore[misc]

    def provenance(self) -> dict:
        return {
            "backend": "detoxify",
            "scorer": self.name,
            "version": _version(),
            "variant": self.variant,
            "output": OUTPUT,
            "weights": self.cache_id.split(":", 2)[-1],
            "checkpoint": self.checkpoint,
            "huggingface_config_path": self.hf_dir,
            "device": str(self.cfg.device),
            "batch_size": self.batch_size,
            "stand_in": False,
        }

    def close(self) -> None:
        self.model = None
