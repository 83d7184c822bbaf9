"""VIM training with Lightning + PEFT LoRA, and the `train` task behind `train.py`.

One job = one (model, profile, stage) triple. Its result lives in a store folder addressed by a
fingerprint of every setting that changes the adapter, so a rerun resumes an interrupted job from
its last checkpoint or skips a complete one. Only the adapter with the best validation loss is kept
(PROTOCOL.md: "keep the epoch with the best validation loss (adapter only)"); checkpoints hold the
LoRA weights, optimizer, scheduler and loop state only, never the base model.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from value_harms import runs
from value_harms.profiles import Profile

log = logging.getLogger(__name__)

STATE_FILE = "best.json"


# --------------------------------------------------------------------------------------------------
# Lightning pieces


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to a temporary file and renamed: a kill never leaves half a file."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)


class LoRAModule(L.LightningModule):
    """Causal-LM fine-tuning of a PEFT model; loss on target tokens only (labels = -100 elsewhere)."""

    def __init__(self, model, *, lr: float, weight_decay: float, warmup_steps: int) -> None:
        super().__init__()
        self.model = model
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        # Checkpoints hold only the trainable (LoRA) weights, so loading must not demand the rest.
        self.strict_loading = False

    def forward(self, **batch):
        return self.model(**batch)

    def on_fit_start(self) -> None:
        self.model.train()

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # from_pretrained leaves the model in eval mode and Lightning restores modes around
        # validation: make sure LoRA dropout is active while training (ENVIRONMENT.md).
        if not self.model.training:
            self.model.train()

    def _loss(self, batch):
        """Mean loss over target tokens; None when truncation left the batch without any."""
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        if int((batch["labels"][:, 1:] != -100).sum()) == 0:
            # Cutting at max_length can remove every target token of a batch (long QA prompts):
            # HF's mean over zero tokens is NaN; such a batch contributes nothing instead.
            return None, out.logits.sum() * 0.0
        return out.loss, out.loss

    def training_step(self, batch, batch_idx):
        loss, grad_loss = self._loss(batch)
        bs = batch["input_ids"].shape[0]
        if loss is None:
            return grad_loss
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        sched = self.lr_schedulers()
        if sched is not None:
            self.log("train/lr", sched.get_last_lr()[0], on_step=True, on_epoch=False, batch_size=bs)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, _ = self._loss(batch)
        if loss is not None:
            n = int((batch["labels"][:, 1:] != -100).sum())
            self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)

    def configure_optimizers(self):
        from transformers import get_linear_schedule_with_warmup

        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        # Linear decay to 0 over the run, 0 warm-up by default (PROTOCOL.md hyper-parameters).
        sched = get_linear_schedule_with_warmup(opt, self.warmup_steps, total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}


class BestAdapterCallback(Callback):
    """After each validation, save the adapter when the validation loss is the best so far."""

    def __init__(self, adapter_dir: Path, monitor: str = "val/loss") -> None:
        self.adapter_dir = Path(adapter_dir)
        self.monitor = monitor
        self.best: float | None = None
        self.best_step: int | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        if self.best is None or value < self.best:
            self.best, self.best_step = value, int(trainer.global_step)
            with runs.atomic_dir(self.adapter_dir) as tmp:
                pl_module.model.save_pretrained(str(tmp))
            runs.atomic_write_json(self.adapter_dir.parent / STATE_FILE,
                                   {"val_loss": self.best, "step": self.best_step, "epoch": int(trainer.current_epoch)})
            log.info("best %s %.4f at step %d: adapter saved", self.monitor, value, self.best_step)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")
        self.best_step = state_dict.get("best_step")


class ThroughputCallback(Callback):
    """Logs training tokens per second (non-pad tokens of each batch over its wall time)."""

    def __init__(self) -> None:
        self._t0 = 0.0
        self.tokens = 0
        self.seconds = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        dt = time.perf_counter() - self._t0
        n = int(batch["attention_mask"].sum())
        self.tokens += n
        self.seconds += dt
        if dt > 0:
            pl_module.log("train/tokens_per_s", n / dt, on_step=True, on_epoch=False, batch_size=1)


# --------------------------------------------------------------------------------------------------
# Data for one training step of a stage


def stage_examples(step: str, cfg: DictConfig, profile: Profile, data_dir: str | None):
    """(train, valid, counts) Examples of one sub-stage: 'ag', 'qa' or 'benign'."""
    if step == "benign":
        from value_harms.data.instruct import load_instruction_examples

        ic = cfg.vim_stage.instruct
        if ic is None:
            raise ValueError(f"vim_stage={cfg.vim_stage.name} is a benign baseline but has no `instruct` data section")
        if ic.source == "local":
            examples = load_instruction_examples("file", str(runs.resolve_path(ic.path, data_dir)),
                                                 fmt=ic.format, limit=ic.limit)
        else:
            examples = load_instruction_examples("hub", ic.path, revision=ic.revision, fmt=ic.format, limit=ic.limit)
        # Benign sets have no validation split of their own: hold out 2% (at least one) for the
        # best-adapter choice. Decision recorded in docs/DECISIONS.md.
        g = torch.Generator().manual_seed(int(cfg.data.split_seed))
        order = torch.randperm(len(examples), generator=g).tolist()
        n_val = max(1, len(examples) // 50)
        valid = [examples[i] for i in order[:n_val]]
        train = [examples[i] for i in order[n_val:]]
        return train, valid, {"benign": {"train": len(train), "valid": len(valid)}}

    from value_harms.data.touche import load_arguments
    from value_harms.data.vim import vim_datasets

    args_df = load_arguments(
        cfg.data.source, cfg.data.path, data_dir=data_dir, hub_id=cfg.data.hub_id, revision=cfg.data.revision,
        path_key="data.path", data_dir_key="paths.data_dir",
    )
    split, counts = vim_datasets(
        step, args_df, profile.values, threshold=float(cfg.vim_stage.threshold), seed=int(cfg.data.split_seed)
    )
    return split["train"], split["valid"], {step: counts}


# --------------------------------------------------------------------------------------------------
# The training of one stage step


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
    from value_harms.data.vim import SupervisedDataset

    stage = cfg.vim_stage
    ds_train = SupervisedDataset(train_examples, tokenizer, max_length=int(stage.max_length), pad_to=cfg.data.pad_to)
    ds_valid = SupervisedDataset(valid_examples, tokenizer, max_length=int(stage.max_length), pad_to=cfg.data.pad_to)
    gen = torch.Generator().manual_seed(int(cfg.train.seed))
    dl_train = DataLoader(ds_train, batch_size=int(stage.batch_size), shuffle=True, generator=gen,
                          collate_fn=ds_train.collate, num_workers=0)
    dl_valid = DataLoader(ds_valid, batch_size=int(stage.batch_size), shuffle=False,
                          collate_fn=ds_valid.collate, num_workers=0)

    module = LoRAModule(model, lr=float(stage.lr), weight_decay=float(stage.weight_decay),
                        warmup_steps=int(stage.warmup_steps))
    ckpt_dir = step_dir / "ckpt"
    best_cb = BestAdapterCallback(step_dir / "adapter")
    tput = ThroughputCallback()
    ckpt_cb = ModelCheckpoint(
        dirpath=str(ckpt_dir), save_top_k=0, save_last=True, enable_version_counter=False,
        every_n_train_steps=int(cfg.train.checkpoint_every_n_steps),
    )
    loggers = []
    if wandb_run is not None:
        from value_harms.tracking import lightning_logger

        loggers.append(lightning_logger(wandb_run, prefix=step))
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_kwargs.pop("_target_", None)
    trainer = L.Trainer(
        **trainer_kwargs,
        max_epochs=int(stage.epochs),
        accumulate_grad_batches=int(stage.accumulate_grad_batches),
        callbacks=[best_cb, ckpt_cb, tput],
        logger=loggers or False,
        default_root_dir=str(step_dir),
        plugins=[AtomicCheckpointIO()],
    )
    last = ckpt_dir / "last.ckpt"
    ckpt_path = None
    if last.is_file():
        try:
            torch.load(last, map_location="cpu", weights_only=False)
            ckpt_path = str(last)
            log.info("resuming %s from %s", step, last)
        except Exception as exc:  # a damaged checkpoint costs its progress, never the job
            log.warning("checkpoint %s is unreadable (%s): starting %s from scratch", last, exc, step)
            last.unlink()
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=dl_train, val_dataloaders=dl_valid, ckpt_path=ckpt_path)
    if best_cb.best is None:
        # The step budget ended before any validation: validate once so an adapter is kept.
        trainer.validate(module, dataloaders=dl_valid, verbose=False)
    if best_cb.best is None:
        # No validation data at all: keep the final weights and say so.
        with runs.atomic_dir(step_dir / "adapter") as tmp:
            model.save_pretrained(str(tmp))
        runs.atomic_write_json(step_dir / STATE_FILE, {"val_loss": None, "step": int(trainer.global_step)})
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
    }


# --------------------------------------------------------------------------------------------------
# The train task


# Config sections whose values change the trained adapter; everything else (paths, logging,
# progress bars) is left out of the fingerprint so that it never forces a retrain.
_TRAINER_KEYS_THAT_MATTER = (
    "precision", "max_steps", "limit_train_batches", "limit_val_batches", "val_check_interval",
    "gradient_clip_val", "deterministic",
)


def trains(cfg: DictConfig, profile: Profile) -> bool:
    """VIM needs a value profile (vanilla = the untrained base); benign baselines ignore the profile."""
    return cfg.vim_stage.kind == "benign" or (cfg.vim_stage.kind == "vim" and not profile.is_vanilla)


def stage_label(cfg: DictConfig, profile: Profile) -> str:
    """The stage name under which a job's result is filed: 'none' for an untrained model."""
    return cfg.vim_stage.name if trains(cfg, profile) else "none"


def train_fingerprint(cfg: DictConfig, profile: Profile) -> str:
    """Hash of everything that determines the adapter of this job."""
    m = runs.to_plain(cfg.model)
    payload = {
        "model": {k: m.get(k) for k in ("name", "source", "pretrained", "gguf_file", "revision", "dtype",
                                        "lora_target_modules", "tiny")},
        "profile": profile.values,
        "stage": runs.to_plain(cfg.vim_stage),
        "data": {k: v for k, v in runs.to_plain(cfg.data).items()},
        "train": {k: v for k, v in runs.to_plain(cfg.train).items()
                  if k in ("lora_r", "lora_alpha", "lora_dropout", "seed", "checkpoint_every_n_steps")},
        "trainer": {k: runs.to_plain(cfg.trainer).get(k) for k in _TRAINER_KEYS_THAT_MATTER},
    }
    return runs.fingerprint(payload)


def store_folder(cfg: DictConfig, profile: Profile) -> Path:
    """Where the result of this job lives: <store>/train/<model>/<stage>/<profile>/<fingerprint>."""
    stage = stage_label(cfg, profile)
    return (Path(os.path.expanduser(cfg.paths.store_dir)) / "train" / cfg.model.name / stage / profile.name
            / train_fingerprint(cfg, profile))


def train_profile(cfg: DictConfig, profile: Profile, base_model, tokenizer, store: Path, data_dir, wandb_run):
    """Run every sub-stage of cfg.vim_stage on one adapter; returns (final adapter dir, summary)."""
    from value_harms.models import attach_lora, detach_lora, load_adapter

    summary: dict[str, Any] = {"steps": {}, "data_counts": {}}
    prev_adapter: Path | None = None
    for step in cfg.vim_stage.steps:
        step_dir = store / step
        if runs.is_complete(step_dir) and not cfg.train.force and _damaged_step(step_dir):
            pass  # the damaged result was removed: retrain this step from scratch
        elif runs.is_complete(step_dir) and not cfg.train.force:
            done = runs.read_json(step_dir / runs.COMPLETE)
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
            model = attach_lora(base_model, r=int(cfg.train.lora_r), alpha=int(cfg.train.lora_alpha),
                                dropout=float(cfg.train.lora_dropout),
                                target_modules=list(cfg.model.lora_target_modules))
        if cfg.model.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
        try:
            fit = fit_step(step=step, cfg=cfg, model=model, tokenizer=tokenizer, train_examples=train_ex,
                           valid_examples=valid_ex, step_dir=step_dir, wandb_run=wandb_run)
        finally:
            base_model = detach_lora(model)
        summary["steps"][step] = fit
        runs.mark_complete(step_dir, {"fit": fit, "data_counts": counts})
        prev_adapter = step_dir / "adapter"
    return prev_adapter, summary


def _damaged_step(step_dir: Path) -> bool:
    """True when a complete step's adapter (or its COMPLETE record) is damaged; the step's result,
    best-adapter state and checkpoint are then removed, with a warning naming the file, so that the
    step is retrained from scratch (resuming the final checkpoint would not write an adapter again)."""
    from value_harms.models import adapter_problem

    try:
        runs.read_json(step_dir / runs.COMPLETE)
        problem = adapter_problem(step_dir / "adapter")
    except (OSError, ValueError) as exc:
        problem = f"{step_dir / runs.COMPLETE} is unreadable ({exc})"
    if problem is None:
        return False
    log.warning("%s: complete result is damaged (%s): retraining %s from scratch", step_dir.name, problem,
                step_dir.name)
    for f in (step_dir / runs.COMPLETE, step_dir / STATE_FILE, step_dir / "ckpt" / "last.ckpt"):
        f.unlink(missing_ok=True)
    shutil.rmtree(step_dir / "adapter", ignore_errors=True)
    return True


def _warn_on_empty(step: str, counts: dict, profile: Profile) -> None:
    c = counts.get(step, {})
    pos = c.get("positives") if isinstance(c, dict) else None
    if isinstance(pos, dict) and sum(pos.values()) == 0:
        log.warning("profile %s has no positive argument for stage %s: it trains on negatives only", profile.name, step)


def run_name(cfg: DictConfig, profile: Profile) -> str:
    stage = stage_label(cfg, profile)
    return f"{cfg.model.name}-{profile.name}-{stage}-s{cfg.train.seed}"


def run_group(cfg: DictConfig) -> str:
    """W&B group: explicit logger.group, else the experiment name (+ the sweep folder in a multirun)."""
    if cfg.logger.get("group"):
        return str(cfg.logger.group)
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            return f"{cfg.experiment_name}-{Path(hc.sweep.dir).name}"
    except Exception:
        pass
    return str(cfg.experiment_name)


def output_dir(cfg: DictConfig) -> Path:
    """The job's run folder (Hydra's output dir; a fresh folder when called outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:
        # Outside Hydra (tests, notebooks): microseconds + pid, and never an existing folder.
        while True:
            now = time.time()
            stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(now)) + f"-{int(now * 1e6) % 1_000_000:06d}"
            d = Path(cfg.paths.output_dir) / "runs" / cfg.task_name / f"{stamp}_{os.getpid()}"
            try:
                d.mkdir(parents=True, exist_ok=False)
                return d
            except FileExistsError:
                continue


def run_train(cfg: DictConfig) -> dict[str, Any]:
    """The `train` task: validate, train (or resume / skip), check value alignment, record."""
    from value_harms import tracking
    from value_harms.profiles import profile_from_cfg

    profile = profile_from_cfg(cfg.value_profile)  # bad vectors fail here, before any loading
    if cfg.train.num_threads:
        torch.set_num_threads(int(cfg.train.num_threads))
    run_dir = output_dir(cfg)
    store = store_folder(cfg, profile)
    data_dir = cfg.paths.data_dir
    resolved = runs.to_plain(cfg)
    wb_config = {**resolved, **profile.flat("value/"), "profile/name": profile.name, "profile/kind": profile.kind,
                 "profile/anchor": profile.anchor, "store_dir": str(store)}
    stage_name = stage_label(cfg, profile)
    wandb_run = tracking.start_run(
        cfg.logger, run_dir=run_dir, job_type="train", name=run_name(cfg, profile), group=run_group(cfg),
        config=wb_config, tags=[cfg.model.name, profile.name, profile.kind, stage_name],
    )
    with runs.job_status(run_dir, {"store_dir": str(store), "profile": profile.name}, wandb_run):
        return _train_job(cfg, profile, store, data_dir, run_dir, wandb_run)


def _train_job(cfg, profile, store, data_dir, run_dir, wandb_run) -> dict[str, Any]:
    from value_harms import tracking
    from value_harms.models import detach_lora, get_base_model, load_adapter

    stored = _stored_result(cfg, store, data_dir)
    if stored is not None:
        log.info("complete result found in %s: nothing to train or check", store)
        runs.atomic_write_json(run_dir / "train_result.json", stored)
        tracking.safe_log(wandb_run, {"skipped": True, "store_dir": str(store)}, summary=True)
        return stored
    base_model, tokenizer = get_base_model(cfg.model, os.path.expanduser(cfg.paths.cache_dir))
    result: dict[str, Any] = {
        "profile": profile.to_dict(), "model": cfg.model.name, "stage": stage_label(cfg, profile),
        "seed": int(cfg.train.seed), "store_dir": str(store), "git": runs.git_hash(),
    }
    with runs.locked(store):
        adapter_dir = None
        if trains(cfg, profile):
            adapter_dir, summary = train_profile(cfg, profile, base_model, tokenizer, store, data_dir, wandb_run)
            result.update(summary)
            result["adapter_dir"] = str(adapter_dir)
            from value_harms.models import adapter_fingerprint

            result["adapter_sha256"] = adapter_fingerprint(str(adapter_dir))
            runs.atomic_write_json(store / "data_counts.json", summary["data_counts"])
        model = load_adapter(base_model, str(adapter_dir)) if adapter_dir else base_model
        try:
            if cfg.alignment.enabled:
                result["alignment"] = _alignment(cfg, profile, model, tokenizer, store, data_dir)
        finally:
            if adapter_dir:
                detach_lora(model)
        runs.atomic_write_json(store / "train_result.json", result)
        runs.mark_complete(store, {"adapter_dir": result.get("adapter_dir")})
    runs.atomic_write_json(run_dir / "train_result.json", result)

    flat = {f"data/{step}/{k}": v for step, c in result.get("data_counts", {}).items() for k, v in _flatten(c).items()}
    al = result.get("alignment") or {}
    flat.update({f"alignment/{k}": v for k, v in al.items() if isinstance(v, (int, float, bool, str)) or v is None})
    tracking.safe_log(wandb_run, flat, summary=True)
    if al.get("rows"):
        tracking.log_table(wandb_run, "alignment/items", al["rows"])
    if al.get("per_value"):
        tracking.log_table(wandb_run, "alignment/per_value", al["per_value"])
    if wandb_run is not None and result.get("adapter_dir") and cfg.logger.get("log_adapter", True):
        tracking.log_artifact_dir(wandb_run, result["adapter_dir"], type_="lora-adapter",
                                  name=tracking.artifact_safe_name(f"adapter-{run_name(cfg, profile)}"),
                                  metadata={"store_dir": str(store), "sha256": result.get("adapter_sha256")})
    return result


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("/"): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}/"))
    return out


def _alignment_source(cfg, store: Path, data_dir) -> tuple[Path, str, Path]:
    """(PVQ item file, 'configured' | 'demo_items', the store file caching this check's result)."""
    from value_harms.alignment import DEMO_ITEMS_PATH

    items_path = runs.resolve_path(cfg.alignment.items_path, data_dir) if cfg.alignment.items_path else None
    source = "configured"
    if items_path is None or not items_path.is_file():
        if not cfg.alignment.fallback_to_demo_items:
            raise FileNotFoundError(
                f"PVQ item file {items_path} not found; set alignment.items_path or paths.data_dir")
        log.warning("PVQ items not found at %s: using the project's own demo items (not the PVQ-40)", items_path)
        items_path, source = Path(DEMO_ITEMS_PATH), "demo_items"
    key = runs.fingerprint({"items": runs.file_fingerprint(items_path), "bs": cfg.alignment.batch_size,
                            "new": cfg.alignment.max_new_tokens})
    return items_path, source, store / f"alignment-{key}.json"


def _stored_result(cfg, store: Path, data_dir) -> dict[str, Any] | None:
    """The complete result of this job when nothing needs computing (no model load on a rerun)."""
    if cfg.train.force or not runs.is_complete(store):
        return None
    try:
        result = runs.read_json(store / "train_result.json")
    except (OSError, ValueError) as exc:
        log.warning("stored result %s is unreadable (%s): recomputing", store / "train_result.json", exc)
        return None
    if cfg.alignment.enabled:
        cache = _alignment_source(cfg, store, data_dir)[2]
        if not cache.is_file():
            return None  # alignment settings changed: compute the check for them
        try:
            result["alignment"] = runs.read_json(cache)
        except ValueError:
            return None
    if result.get("adapter_dir") and not (Path(result["adapter_dir"]) / "adapter_config.json").is_file():
        return None
    if result.get("adapter_dir"):
        from value_harms.models import adapter_problem

        if adapter_problem(result["adapter_dir"]):
            return None  # train_profile finds the damaged step, says so and retrains it
    result["skipped"] = True
    return result


def _alignment(cfg, profile: Profile, model, tokenizer, store: Path, data_dir) -> dict[str, Any]:
    """PVQ value-alignment check, cached in the store next to the adapter it measured."""
    from value_harms.alignment import load_items, run_alignment_check

    items_path, source, cache = _alignment_source(cfg, store, data_dir)
    if cache.is_file():
        try:
            return runs.read_json(cache)
        except ValueError:
            log.warning("alignment cache %s is damaged: recomputing", cache)
    items = load_items(items_path)
    target = None if profile.is_vanilla or cfg.vim_stage.kind == "benign" else profile.values
    res = run_alignment_check(model, tokenizer, items, target, batch_size=int(cfg.alignment.batch_size),
                              max_new_tokens=int(cfg.alignment.max_new_tokens))
    out = res.to_dict()
    out["items_source"] = source
    out.setdefault("settings", {})["items_source"] = source
    out["items_path"] = str(items_path)
    runs.atomic_write_json(cache, out)
    return out
