"""LoRA adapters: attach, load (one or many), detach, check against the base, hash."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch

from value_harms.errors import ModelError
from value_harms.store.hashing import named_files_sha256

_ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin", "adapter_config.json")


def attach_lora(model, r: int, alpha: float, dropout: float, target_modules, seed: int | None = None):
    """Wrap ``model`` with a fresh LoRA adapter (task CAUSAL_LM, bias none). ``seed`` makes the
    LoRA A initialisation reproducible without touching the global RNG."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=int(r),
        lora_alpha=alpha,
        lora_dropout=float(dropout),
        target_modules=list(target_modules),
        bias="none",
    )
    if seed is None:
        return get_peft_model(model, config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return get_peft_model(model, config)


def load_adapter(model, adapter_dir: str | os.PathLike, is_trainable: bool = False):
    """Wrap ``model`` with the adapter saved in ``adapter_dir`` (``PeftModel.save_pretrained``)."""
    from peft import PeftModel

    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise ModelError(f"no adapter_config.json in {adapter_dir}")
    check_adapter_base(model, adapter_dir)
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=is_trainable)


def load_adapters(model, adapters: dict[str, str | os.PathLike]):
    """One PeftModel holding several adapters, each under its own name, for mixed-adapter batches
    (``generate(..., adapter_names=[...])`` picks an adapter per row; "__base__" = no adapter)."""
    from peft import PeftModel

    if not adapters:
        raise ModelError("load_adapters needs at least one adapter")
    peft_model = None
    for name, folder in adapters.items():
        if not (Path(folder) / "adapter_config.json").is_file():
            raise ModelError(f"no adapter_config.json in {folder}")
        check_adapter_base(model, folder)
        if peft_model is None:
            peft_model = PeftModel.from_pretrained(model, str(folder), adapter_name=name, is_trainable=False)
        else:
            peft_model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
    peft_model.eval()
    return peft_model


def _adapter_shapes(adapter_dir: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, from the safetensors header (no weights read); {} for .bin adapters."""
    st = adapter_dir / "adapter_model.safetensors"
    if not st.is_file():
        return {}
    with open(st, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    return {k: list(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def _looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists()


def check_adapter_base(model, adapter_dir: str | os.PathLike) -> None:
    """Refuse, in one line, an adapter trained on another base model than ``model``.

    Two checks, before PEFT sees the weights: every LoRA matrix must fit its target layer in this
    base (a different architecture fails here instead of with PEFT's size-mismatch traceback), and
    the base the adapter was saved from (``base_model_name_or_path``) must be this one when both are
    names the project can compare: hub ids, or the project's cache folders ``<name>-<content hash>``
    (a tiny model with another seed has the same shapes but another folder)."""
    d = Path(adapter_dir)
    try:
        acfg = json.loads((d / "adapter_config.json").read_text(encoding="utf-8"))
        shapes = _adapter_shapes(d)
    except (OSError, ValueError, KeyError, TypeError):
        return  # damaged files are adapter_problem's business
    theirs = str(acfg.get("base_model_name_or_path") or "")
    ours = str(getattr(getattr(model, "config", None), "_name_or_path", "") or "")
    modules = dict(model.named_modules())
    for key, shape in shapes.items():
        if ".lora_A." not in key and ".lora_B." not in key or len(shape) != 2:
            continue
        saved = key.split(".lora_")[0]
        path = next(
            (
                p
                for p in (saved.removeprefix("base_model.model."), saved.removeprefix("base_model."), saved)
                if p in modules
            ),
            saved.removeprefix("base_model.model."),
        )
        layer = modules.get(path)
        if layer is None:
            raise ModelError(
                f"adapter_dir={str(d)!r} was trained on another base model "
                f"({Path(theirs).name or 'unknown'}): layer {path} does not exist in the loaded "
                f"{Path(ours).name or 'model'}; use an adapter trained on this model, or set model= to "
                f"the one it was trained on"
            )
        want = getattr(layer, "in_features", None) if ".lora_A." in key else getattr(layer, "out_features", None)
        got = shape[1] if ".lora_A." in key else shape[0]
        if isinstance(want, int) and want != got:
            side = "inputs" if ".lora_A." in key else "outputs"
            raise ModelError(
                f"adapter_dir={str(d)!r} was trained on another base model "
                f"({Path(theirs).name or 'unknown'}): its {path} has {got} {side}, the loaded "
                f"{Path(ours).name or 'model'} has {want}; use an adapter trained on this model, or set "
                f"model= to the one it was trained on"
            )
    if not theirs or not ours or theirs == ours:
        return
    a, b = Path(theirs).name, Path(ours).name
    cache_names = all(p.parent.name == "models" and "-" in p.name for p in (Path(theirs), Path(ours)))
    if (cache_names and a != b) or (_looks_like_hub_id(theirs) and _looks_like_hub_id(ours)):
        raise ModelError(
            f"adapter_dir={str(d)!r} was trained on base model {a!r}, not on the loaded {b!r} "
            f"(same layer shapes, other weights); use an adapter trained on this model, or set "
            f"model= to the one it was trained on"
        )


def detach_lora(peft_model):
    """Remove every LoRA layer WITHOUT merging and return the original base model object
    (its weights unchanged), so a cached base model can serve the next job."""
    base = peft_model.unload()
    for attr in ("peft_config", "_hf_peft_config_loaded"):
        if hasattr(base, attr):
            with contextlib.suppress(AttributeError):
                delattr(base, attr)
    base.eval()
    return base


def adapter_sha256(adapter_dir: str | os.PathLike) -> str:
    """sha256 over the adapter files' names and bytes (files sorted by name; store.hashing named_files_sha256).
    In adapter_config.json the base model's *location* (`base_model_name_or_path`: a cache folder for tiny /
    GGUF models) is left out, so one adapter has one identity wherever its base model is cached; the base's
    content is in the evaluation key already (models.identity.base_identity)."""
    d = Path(adapter_dir)
    files = sorted(p for p in d.iterdir() if p.is_file() and p.name.startswith("adapter_"))
    if not any(p.name in _ADAPTER_FILES for p in files):
        raise ModelError(f"no adapter files in {adapter_dir}")
    return named_files_sha256((p.name, _config_bytes(p) if p.name == "adapter_config.json" else p) for p in files)


def _config_bytes(path: Path) -> bytes:
    """adapter_config.json without `base_model_name_or_path` (sorted keys); a damaged config hashes as its
    bytes (adapter_problem reports it)."""
    data = path.read_bytes()
    try:
        conf = json.loads(data)
        conf.pop("base_model_name_or_path", None)
        return json.dumps(conf, sort_keys=True).encode()
    except ValueError:
        return data


def adapter_problem(adapter_dir: str | os.PathLike) -> str | None:
    """Why the adapter saved in ``adapter_dir`` cannot be loaded (a damaged or truncated file), or
    None when it looks whole: adapter_config.json parses, and the safetensors weights have a
    readable header whose tensors fit in the file. Cheap: reads the header only."""
    d = Path(adapter_dir)
    cfg_file = d / "adapter_config.json"
    try:
        json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{cfg_file} is unreadable ({type(exc).__name__})"
    st = d / "adapter_model.safetensors"
    if not st.is_file():
        return None if (d / "adapter_model.bin").is_file() else f"no adapter weights in {d}"
    try:
        size = st.stat().st_size
        with open(st, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError("shorter than its header")
            n = int.from_bytes(head, "little")
            if n <= 0 or 8 + n > size:
                raise ValueError("header longer than the file")
            header = json.loads(fh.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + n + end != size:
            raise ValueError(f"{size} bytes, {8 + n + end} expected")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        return f"{st} is damaged or truncated ({exc})"
    return None
