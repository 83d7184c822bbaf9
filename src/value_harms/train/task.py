"""VIM training with Lightning + PEFT LoRA, and the `train` task behind `train.py`.

One job = one (model, profile, stage) triple. Its result lives in a store folder addressed by its
training key (train/keys.py: a sha256 of every setting that changes the adapter), so a rerun resumes an
interrupted job from its last checkpoint or skips a complete one. Only the adapter with the best validation loss is kept
(PROTOCOL.md: "keep the epoch with the best validation loss (adapter only)"); checkpoints hold the
LoRA weights, optimizer, scheduler and loop state only, never the base model.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from value_harms.alignment.pvq import load_items, resolve_items, run_alignment_check
from value_harms.alignment.shift import summary_scalars
from value_harms.config.validate import check_task
from value_harms.core.profiles import Profile, profile_from_cfg
from value_harms.models.loading import get_base_model
from value_harms.models.lora import detach_lora, load_adapter
from value_harms.runtime import runs, tracking
from value_harms.runtime.runs import output_dir, run_group
from value_harms.store import files, hashing, identity, layout
from value_harms.store.cache import FileCache
from value_harms.train import keys
from value_harms.train.fit import train_profile

log = logging.getLogger(__name__)


def trains(cfg: DictConfig, profile: Profile) -> bool:
    """VIM needs a value profile (vanilla = the untrained base); benign baselines ignore the profile."""
    return cfg.vim_stage.kind == "benign" or (cfg.vim_stage.kind == "vim" and not profile.is_vanilla)


def stage_label(cfg: DictConfig, profile: Profile) -> str:
    """The stage name under which a job's result is filed: 'none' for an untrained model."""
    return cfg.vim_stage.name if trains(cfg, profile) else "none"


def train_store_dir(cfg: DictConfig, profile: Profile) -> Path:
    """Where the result of this job lives (store.layout.train_dir). The key
    (value_harms.train.keys.train_key) is the content identity; the names only make the
    store browsable. Benign baselines ignore the profile and are filed under `vanilla`."""
    label = "vanilla" if cfg.vim_stage.kind == "benign" else profile.name
    return layout.train_dir(
        cfg.paths.store_dir,
        model=cfg.model.name,
        stage=stage_label(cfg, profile),
        profile=label,
        key=keys.train_key(cfg, profile, cfg.paths.data_dir),
    )


# Overrides that only concern evaluation / analysis / logging: left out of the train command that an
# evaluation prints when its adapter is missing.
_NOT_TRAIN = (
    "benchmark",
    "mitigation",
    "scorer",
    "baseline",
    "generation",
    "batch_profiles",
    "adapter_dir",
    "analysis",
    "audit",
    "force",
    "mode",
    "logger",
    "hydra",
    "run_label",
    "task_name",
)


def train_command(cfg: DictConfig, profile: Profile) -> str:
    """The exact `python train.py ...` that trains the adapter this config evaluates: the current
    command's overrides minus evaluation-only ones, with the value profile given as its group choice plus
    the `value_profile.*` edits of this command, so the printed command runs as shown and files its adapter
    under this config's training key (outside Hydra: the group choices)."""
    try:
        from hydra.core.hydra_config import HydraConfig  # noqa: PLC0415 - only set inside a Hydra job

        hc = HydraConfig.get()
        task = [str(o) for o in hc.overrides.task]
        choice = hc.runtime.choices.get("value_profile") or profile.name
    except ValueError:  # not inside a Hydra job (tests compose the config themselves)
        task = [f"model={cfg.model.name}", f"vim_stage={cfg.vim_stage.name}"]
        choice = profile.name
    args = [
        a
        for a in task
        if a.lstrip("+~").split("=")[0].split(".")[0].split("/")[0] not in (*_NOT_TRAIN, "value_profile")
    ]
    if profile.is_vanilla:  # a benign baseline trains on the base model: the evaluated profile's edits do not apply
        args.append("value_profile=vanilla")
    else:
        args.append(f"value_profile={choice}")
        args += [a for a in task if a.lstrip("+~").startswith("value_profile.")]
    return "python train.py " + " ".join(args)


def run_name(cfg: DictConfig, profile: Profile) -> str:
    stage = stage_label(cfg, profile)
    return f"{cfg.model.name}-{profile.name}-{stage}-s{cfg.train.seed}"


def run_train(cfg: DictConfig) -> dict[str, Any]:
    """The `train` task: validate, train (or resume / skip), check value alignment, record."""

    check_task(cfg)  # bad numbers, names and folders: one line, before any loading
    profile = profile_from_cfg(cfg.value_profile)  # bad vectors fail here, before any loading
    if cfg.train.num_threads:
        torch.set_num_threads(int(cfg.train.num_threads))
    run_dir = output_dir(cfg)
    store = train_store_dir(cfg, profile)
    data_dir = cfg.paths.data_dir
    resolved = files.to_plain(cfg)
    wb_config = {
        **resolved,
        **profile.flat("value/"),
        "profile/name": profile.name,
        "profile/kind": profile.kind,
        "profile/anchor": profile.anchor,
        "store_dir": str(store),
    }
    stage_name = stage_label(cfg, profile)
    wandb_run = tracking.start_run(
        cfg.logger,
        run_dir=run_dir,
        job_type="train",
        name=run_name(cfg, profile),
        group=run_group(cfg),
        config=wb_config,
        tags=[cfg.model.name, profile.name, profile.kind, stage_name],
    )
    with runs.job_status(run_dir, {"store_dir": str(store), "profile": profile.name}, wandb_run):
        return _train_job(cfg, profile, store, data_dir, run_dir, wandb_run)


def _train_job(cfg, profile, store, data_dir, run_dir, wandb_run) -> dict[str, Any]:

    stored = _stored_result(cfg, store, data_dir)
    if stored is None:
        with files.locked(store):
            stored = _stored_result(cfg, store, data_dir)  # finished by another process while we waited?
            if stored is None:
                return _train_and_record(cfg, profile, store, data_dir, run_dir, wandb_run, identity)
    log.info("complete result found in %s: nothing to train or check", store)
    files.atomic_write_json(run_dir / "train_result.json", stored)
    tracking.safe_log(wandb_run, {"skipped": True, "store_dir": str(store)}, summary=True)
    return stored


def _train_and_record(cfg, profile, store, data_dir, run_dir, wandb_run, identity) -> dict[str, Any]:
    """Train (resuming from the last checkpoint), check alignment and write the result; the caller
    holds the store folder's lock."""

    base_model, tokenizer = get_base_model(cfg.model, os.path.expanduser(cfg.paths.cache_dir))
    result: dict[str, Any] = {
        "schema_version": identity.SCHEMA_VERSION,
        "train_key": store.name,
        "profile": profile.to_dict(),
        "model": cfg.model.name,
        "stage": stage_label(cfg, profile),
        "seed": int(cfg.train.seed),
        "store_dir": str(store),
        "git": runs.git_hash(),
    }
    adapter_dir = None
    if trains(cfg, profile):
        adapter_dir, summary = train_profile(cfg, profile, base_model, tokenizer, store, data_dir, wandb_run)
        result.update(summary)
        result["adapter_dir"] = str(adapter_dir)
        from value_harms.models.lora import adapter_sha256

        result["adapter_sha256"] = adapter_sha256(str(adapter_dir))
        files.atomic_write_json(store / "data_counts.json", summary["data_counts"])
    model = load_adapter(base_model, str(adapter_dir)) if adapter_dir else base_model
    try:
        if cfg.alignment.enabled:
            result["alignment"] = _alignment(cfg, profile, model, tokenizer, store, data_dir)
    finally:
        if adapter_dir:
            detach_lora(model)
    files.atomic_write_json(store / "train_result.json", result)
    files.mark_complete(
        store,
        {
            "adapter_dir": result.get("adapter_dir"),
            "sha256": {"train_result.json": hashing.file_sha256(store / "train_result.json")},
        },
    )
    files.atomic_write_json(run_dir / "train_result.json", result)
    _log_summary(cfg, store, wandb_run, result)
    if wandb_run is not None and result.get("adapter_dir") and cfg.logger.get("log_adapter", True):
        tracking.log_artifact_dir(
            wandb_run,
            result["adapter_dir"],
            type_="lora-adapter",
            name=tracking.artifact_safe_name(f"adapter-{run_name(cfg, profile)}"),
            metadata={"store_dir": str(store), "sha256": result.get("adapter_sha256")},
        )
    return result


def _log_summary(cfg, store: Path, wandb_run, result: dict[str, Any]) -> None:
    """W&B summary scalars (data counts, the alignment check) and the alignment tables of one job."""
    flat = {f"data/{step}/{k}": v for step, c in result.get("data_counts", {}).items() for k, v in _flatten(c).items()}
    al = result.get("alignment") or {}
    flat.update({f"alignment/{k}": v for k, v in al.items() if isinstance(v, (int, float, bool, str)) or v is None})
    if al.get("expected"):
        # per-value expected / greedy scores, Spearman vs the target and, when this store holds the
        # vanilla model's check, the vanilla-relative shifts and the target lift
        scalars = summary_scalars(al, _vanilla_alignment(cfg, store))
        flat.update({f"alignment/{k}": v for k, v in scalars.items()})
    tracking.safe_log(wandb_run, flat, summary=True)
    if al.get("rows"):
        tracking.log_table(wandb_run, "alignment/items", al["rows"])
    if al.get("per_value"):
        tracking.log_table(wandb_run, "alignment/per_value", al["per_value"])


def _vanilla_alignment(cfg, store: Path) -> dict[str, Any] | None:
    """The vanilla model's alignment check with this job's settings (the same cache file name) from this
    store (<store>/train/<model>/none/vanilla/<key>/), the newest readable one; None when absent."""
    if not cfg.alignment.enabled:
        return None
    _, _, cache, request = _alignment_source(cfg, store, cfg.paths.data_dir)
    name = cache.path(request).name
    found = sorted(store.parents[2].glob(f"none/vanilla/*/{name}"), key=lambda p: p.stat().st_mtime)
    for f in reversed(found):
        try:
            return files.read_json(f)
        except ValueError:
            continue
    return None


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("/"): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}/"))
    return out


def _alignment_source(cfg, store: Path, data_dir) -> tuple[Path, str, FileCache, dict[str, Any]]:
    """(PVQ item file, 'configured' | 'demo_items', the cache of this check's result in the store folder,
    its request). The cache is a file beside the adapter it measured, `alignment-<key>.json`: a vanilla
    check is read from the vanilla model's store folder by that name (_vanilla_alignment)."""
    items_path, source = resolve_items(
        runs.resolve_path(cfg.alignment.items_path, data_dir) if cfg.alignment.items_path else None,
        fallback=bool(cfg.alignment.fallback_to_demo_items),
    )
    request = {
        "items": identity.content_id(items_path),
        "bs": cfg.alignment.batch_size,
        "new": cfg.alignment.max_new_tokens,
    }
    return items_path, source, FileCache(store, "alignment", "alignment check", key_length=12), request


def _stored_result(cfg, store: Path, data_dir) -> dict[str, Any] | None:
    """The complete result of this job when nothing needs computing (no model load on a rerun)."""
    if cfg.train.force or not files.is_complete(store):
        return None
    try:
        expected = (files.read_json(store / "COMPLETE").get("sha256") or {}).get("train_result.json")
        if expected != hashing.file_sha256(store / "train_result.json"):
            raise ValueError("its bytes differ from the checksum written with it")
        result = files.read_json(store / "train_result.json")
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("stored result %s is damaged (%s): recomputing", store / "train_result.json", exc)
        return None
    if cfg.alignment.enabled:
        _, _, cache, request = _alignment_source(cfg, store, data_dir)
        result["alignment"] = cache.lookup(request)
        if result["alignment"] is None:
            return None  # alignment settings changed (or their check is damaged): compute the check for them
    if result.get("adapter_dir") and not (Path(result["adapter_dir"]) / "adapter_config.json").is_file():
        return None
    if result.get("adapter_dir"):
        from value_harms.models.lora import adapter_problem

        if adapter_problem(result["adapter_dir"]):
            return None  # train_profile finds the damaged step, says so and retrains it
    result["skipped"] = True
    return result


def _alignment(cfg, profile: Profile, model, tokenizer, store: Path, data_dir) -> dict[str, Any]:
    """PVQ value-alignment check, cached in the store next to the adapter it measured."""

    items_path, source, cache, request = _alignment_source(cfg, store, data_dir)
    return cache.get(request, lambda: _alignment_check(cfg, profile, model, tokenizer, items_path, source))


def _alignment_check(cfg, profile: Profile, model, tokenizer, items_path: Path, source: str) -> dict[str, Any]:
    """The PVQ check of `model`, with where its items came from."""
    items = load_items(items_path)
    target = None if profile.is_vanilla or cfg.vim_stage.kind == "benign" else profile.values
    res = run_alignment_check(
        model,
        tokenizer,
        items,
        target,
        batch_size=int(cfg.alignment.batch_size),
        max_new_tokens=int(cfg.alignment.max_new_tokens),
    )
    out = res.to_dict()
    out["items_source"] = source
    out.setdefault("settings", {})["items_source"] = source
    out["items_path"] = str(items_path)
    return out
