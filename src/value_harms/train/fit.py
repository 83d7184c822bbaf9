"""One VIM step (stage 1 or stage 2) fitted with Lightning, and a profile's full schedule."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from value_harms.core.profiles import Profile
from value_harms.data.instruct import load_instruction_examples
from value_harms.data.resumable import ResumableDataLoader
from value_harms.data.touche import load_arguments
from value_harms.data.vim import SupervisedDataset, balance_by_score, vim_datasets
from value_harms.models.lora import adapter_problem, attach_lora, detach_lora, load_adapter
from value_harms.runtime import runs
from value_harms.runtime.tracking import lightning_logger, safe_log
from value_harms.store import files
from value_harms.train.callbacks import (
    STATE_FILE,
    BestAdapterCallback,
    ResumeCheckpoint,
    ThroughputCallback,
    progress_bar,
)
from value_harms.train.module import AtomicCheckpointIO, LoRAModule, save_adapter

log = logging.getLogger(__name__)


def stage_examples(step: str, cfg: DictConfig, profile: Profile, data_dir: str | None):
    """(train, valid, counts) Examples of one sub-stage: 'ag', 'qa' or 'benign'."""
    if step == "benign":
        ic = cfg.vim_stage.instruct
        if ic is None:
            raise ValueError(f"vim_stage={cfg.vim_stage.name} is a benign baseline but has no `instruct` data section")
        excl = {
            k: str(runs.resolve_path(ic.get(k), data_dir)) if ic.get(k) else None
            for k in ("exclude_path", "exclude_keywords_path")
        }  # Dolly without safety data
        if ic.source == "local":
            examples = load_instruction_examples(
                "file", str(runs.resolve_path(ic.path, data_dir)), fmt=ic.format, limit=ic.limit, **excl
            )
        else:
            examples = load_instruction_examples(
                "hub", ic.path, revision=ic.revision, fmt=ic.format, limit=ic.limit, **excl
            )
        # Benign sets have no validation split of their own: hold out 2% (at least one) for the
        # best-adapter choice. Decision recorded in docs/DECISIONS.md.
        g = torch.Generator().manual_seed(int(cfg.data.split_seed))
        order = torch.randperm(len(examples), generator=g).tolist()
        n_val = max(1, len(examples) // 50)
        valid = [examples[i] for i in order[:n_val]]
        train = [examples[i] for i in order[n_val:]]
        return train, valid, {"benign": {"train": len(train), "valid": len(valid)}}

    args_df = load_arguments(
        cfg.data.source,
        cfg.data.path,
        data_dir=data_dir,
        hub_id=cfg.data.hub_id,
        revision=cfg.data.revision,
        path_key="data.path",
        data_dir_key="paths.data_dir",
    )
    split, counts = vim_datasets(
        step, args_df, profile.values, threshold=float(cfg.vim_stage.threshold), seed=int(cfg.data.split_seed)
    )
    train = split["train"]
    if step == "qa" and str(cfg.vim_stage.get("qa_balance") or "none") == "score":
        power = float(cfg.vim_stage.get("qa_balance_power", 1.0))
        train = balance_by_score(train, seed=int(cfg.data.split_seed), power=power)
        counts["examples"]["train_balanced"] = len(train)
    return train, split["valid"], {step: counts}


def _datasets(step: str, cfg: DictConfig, tokenizer, train_examples, valid_examples, wandb_run):
    """Tokenised train / validation sets of one sub-stage, and how many answers truncation cut."""
    stage = cfg.vim_stage
    side = str(stage.get("truncation_side") or "end")
    ds_train, ds_valid = (
        SupervisedDataset(ex, tokenizer, max_length=int(stage.max_length), pad_to=cfg.data.pad_to, truncation_side=side)
        for ex in (train_examples, valid_examples)
    )
    truncation = {
        "truncation_side": side,
        "train_answer_lost": int(ds_train.n_answer_lost),
        "train_answer_lost_share": ds_train.answer_lost_share,
        "valid_answer_lost": int(ds_valid.n_answer_lost),
        "valid_answer_lost_share": ds_valid.answer_lost_share,
    }
    if wandb_run is not None:  # lost-answer share per run
        safe_log(wandb_run, {f"{step}/{k}": v for k, v in truncation.items() if k != "truncation_side"}, summary=True)
    return ds_train, ds_valid, truncation


def _trainer(step: str, cfg: DictConfig, step_dir: Path, callbacks: list, wandb_run) -> L.Trainer:
    """The Lightning trainer of one sub-stage: conf/trainer/ (its `_target_`) + the stage's epochs and
    accumulation, LoRA-only atomic checkpoints, the W&B logger when a run is open."""
    loggers = [lightning_logger(wandb_run, prefix=step)] if wandb_run is not None else []
    return hydra.utils.instantiate(
        cfg.trainer,
        max_epochs=int(cfg.vim_stage.epochs),
        accumulate_grad_batches=int(cfg.vim_stage.accumulate_grad_batches),
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=str(step_dir),
        plugins=[AtomicCheckpointIO()],
        _convert_="all",
    )


def _resume_path(step: str, last: Path) -> str | None:
    """`last` when it is a readable checkpoint; a damaged one is removed (it costs its progress, never the job)."""
    if not last.is_file():
        return None
    try:
        torch.load(last, map_location="cpu", weights_only=False)
    except Exception as exc:
        log.warning("checkpoint %s is unreadable (%s): starting %s from scratch", last, exc, step)
        last.unlink()
        return None
    log.info("resuming %s from %s", step, last)
    return str(last)


def fit_step(
    *,
    step: str,
    cfg: DictConfig,
    model,
    tokenizer,
    train_examples,
    valid_examples,
    step_dir: Path,
    wandb_run,
) -> dict[str, Any]:
    """Fit the PEFT `model` on one sub-stage, resuming from `step_dir/ckpt/last.ckpt` if present."""
    stage = cfg.vim_stage
    ds_train, ds_valid, truncation = _datasets(step, cfg, tokenizer, train_examples, valid_examples, wandb_run)
    # Epoch e's order depends on (train.seed, e) only and the position within the epoch is saved
    # in every checkpoint: a killed run resumes on the very next batch (data/resumable.py).
    dl_train = ResumableDataLoader(
        ds_train, batch_size=int(stage.batch_size), seed=int(cfg.train.seed), collate_fn=ds_train.collate
    )
    dl_valid = DataLoader(
        ds_valid,
        batch_size=int(stage.batch_size),
        shuffle=False,
        collate_fn=ds_valid.collate,
        num_workers=0,
        generator=torch.Generator(),
    )  # never draws from the global RNG
    module = LoRAModule.from_stage(model, stage)
    ckpt_dir = step_dir / "ckpt"
    best_cb = BestAdapterCallback(step_dir / "adapter")
    tput = ThroughputCallback()
    ckpt_cb = ResumeCheckpoint(
        ckpt_dir / "last.ckpt", every_n_steps=int(cfg.train.checkpoint_every_n_steps), loader=dl_train
    )
    bar = [progress_bar()] if cfg.trainer.get("enable_progress_bar", True) else []
    trainer = _trainer(step, cfg, step_dir, [best_cb, ckpt_cb, tput, *bar], wandb_run)
    ckpt_path = _resume_path(step, ckpt_dir / "last.ckpt")
    t0 = time.perf_counter()
    trainer.fit(
        module, train_dataloaders=dl_train, val_dataloaders=dl_valid if len(ds_valid) else None, ckpt_path=ckpt_path
    )
    if best_cb.best is None:
        # The step budget ended before any validation: validate once so an adapter is kept.
        trainer.validate(module, dataloaders=dl_valid, verbose=False)
    if best_cb.best is None:
        # No validation data at all: keep the final weights and say so.
        save_adapter(model, step_dir / "adapter")
        files.atomic_write_json(step_dir / STATE_FILE, {"val_loss": None, "step": int(trainer.global_step)})
    return {
        "global_step": int(trainer.global_step),
        "resumed_from": ckpt_path,
        "best_val_loss": best_cb.best,
        "best_step": best_cb.best_step,
        "train_seconds": round(time.perf_counter() - t0, 3),
        "tokens_per_s": round(tput.tokens / tput.seconds, 1) if tput.seconds else None,
        "train_examples": len(ds_train),
        "valid_examples": len(ds_valid),
        # Sequences cut at max_length, and those whose whole target was cut (they teach nothing).
        "train_truncated": int(ds_train.n_truncated),
        "train_without_target": int(ds_train.n_without_target),
        # Examples whose answer (the QA digit; the whole target elsewhere) lost a token to truncation.
        **truncation,
    }


def train_profile(cfg: DictConfig, profile: Profile, base_model, tokenizer, store: Path, data_dir, wandb_run):
    """Run every sub-stage of cfg.vim_stage on one adapter; returns (final adapter dir, summary)."""
    summary: dict[str, Any] = {"steps": {}, "data_counts": {}}
    prev_adapter: Path | None = None
    for step in cfg.vim_stage.steps:
        step_dir = store / step
        if files.is_complete(step_dir) and not cfg.train.force and _damaged_step(step_dir):
            pass  # the damaged result was removed: retrain this step from scratch
        elif files.is_complete(step_dir) and not cfg.train.force:
            done = files.read_json(step_dir / files.COMPLETE)
            summary["steps"][step] = {**done.get("fit", {}), "skipped": True}
            summary["data_counts"].update(done.get("data_counts", {}))
            prev_adapter = step_dir / "adapter"
            log.info("%s: complete result found in %s, not retrained", step, step_dir)
            continue
        train_ex, valid_ex, counts = stage_examples(step, cfg, profile, data_dir)
        summary["data_counts"].update(counts)
        _warn_on_empty(step, counts, profile)
        L.seed_everything(int(cfg.train.seed), workers=True, verbose=False)
        if prev_adapter is not None:
            # Stage 2 continues training the stage-1 adapter (same LoRA weights), PROTOCOL.md.
            model = load_adapter(base_model, str(prev_adapter), is_trainable=True)
        else:
            model = attach_lora(
                base_model,
                r=int(cfg.train.lora_r),
                alpha=int(cfg.train.lora_alpha),
                dropout=float(cfg.train.lora_dropout),
                target_modules=list(cfg.model.lora_target_modules),
            )
        if cfg.model.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
        try:
            fit = fit_step(
                step=step,
                cfg=cfg,
                model=model,
                tokenizer=tokenizer,
                train_examples=train_ex,
                valid_examples=valid_ex,
                step_dir=step_dir,
                wandb_run=wandb_run,
            )
        finally:
            base_model = detach_lora(model)
        summary["steps"][step] = fit
        files.mark_complete(step_dir, {"fit": fit, "data_counts": counts})
        prev_adapter = step_dir / "adapter"
    return prev_adapter, summary


def _damaged_step(step_dir: Path) -> bool:
    """True when a complete step's adapter (or its COMPLETE record) is damaged; the step's result,
    best-adapter state and checkpoint are then removed, with a warning naming the file, so that the
    step is retrained from scratch (resuming the final checkpoint would not write an adapter again)."""
    try:
        files.read_json(step_dir / files.COMPLETE)
        problem = adapter_problem(step_dir / "adapter")
    except (OSError, ValueError) as exc:
        problem = f"{step_dir / files.COMPLETE} is unreadable ({exc})"
    if problem is None:
        return False
    log.warning(
        "%s: complete result is damaged (%s): retraining %s from scratch", step_dir.name, problem, step_dir.name
    )
    for f in (step_dir / files.COMPLETE, step_dir / STATE_FILE, step_dir / "ckpt" / "last.ckpt"):
        f.unlink(missing_ok=True)
    shutil.rmtree(step_dir / "adapter", ignore_errors=True)
    return True


def _warn_on_empty(step: str, counts: dict, profile: Profile) -> None:
    c = counts.get(step, {})
    pos = c.get("positives") if isinstance(c, dict) else None
    if isinstance(pos, dict) and sum(pos.values()) == 0:
        log.warning("profile %s has no positive argument for stage %s: it trains on negatives only", profile.name, step)
