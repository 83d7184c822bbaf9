"""VIM training with Lightning + PEFT LoRA, and the `train` task behind `train.py`.

One job = one (model, profile, stage) triple. Its result lives in a store folder addressed by a
fingerprint of every setting that changes the adapter, so a rerun resumes an interrupted job from
its last checkpoint or skips a complete one. Only the adapter with the best validation loss is kept
(PROTOCOL.md: "keep the epoch with the best validation loss (adapter only)"); checkpoints hold the
LoRA weights, optimizer, scheduler and loop state only, never the base model.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
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
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)  # vim_stage.weight_decay (paper: 0.01)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        # Linear decay to 0 over the run, 0 warm-up by default (PROTOCOL.md hyper-parameters).
        sched = get_linear_schedule_with_warmup(opt, self.warmup_steps, total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}


# adapter_config.json fields that PEFT keeps as sets and writes in hash order
_SET_FIELDS = ("target_modules", "exclude_modules")


def save_adapter(model, adapter_dir: Path) -> None:
    """`save_pretrained` into `adapter_dir` (atomically), with the set-valued fields of
    adapter_config.json sorted: PEFT writes them in Python's string-hash order, which changes from one
    process to the next (PYTHONHASHSEED), so the same weights gave files (and a sha256) that depended
    on the process that saved them."""
    with runs.atomic_dir(adapter_dir) as tmp:
        model.save_pretrained(str(tmp))
        cfg_file = Path(tmp) / "adapter_config.json"
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        for key in _SET_FIELDS:
            if isinstance(cfg.get(key), list):
                cfg[key] = sorted(cfg[key])
        cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True), encoding="utf-8")


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
            save_adapter(pl_module.model, self.adapter_dir)
            runs.atomic_write_json(self.adapter_dir.parent / STATE_FILE,
                                   {"val_loss": self.best, "step": self.best_step, "epoch": int(trainer.current_epoch)})
            log.info("best %s %.4f at step %d: adapter saved", self.monitor, value, self.best_step)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")
        self.best_step = state_dict.get("best_step")


def rng_states() -> dict[str, Any]:
    """The global random states a training step can draw from (LoRA dropout uses torch's), as
    tensors and plain lists so that a checkpoint holding them loads with `weights_only=True`."""
    import numpy as np

    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_states(state: dict[str, Any]) -> None:
    """Restore what `rng_states` captured."""
    import numpy as np

    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _validation_follows(trainer) -> bool:
    """True when Lightning runs a validation right after the batch that just ended (the same test
    its training-epoch loop makes next)."""
    loop = trainer.fit_loop
    return bool(loop.epoch_loop._should_check_val_fx(loop._data_fetcher))


class ResumeCheckpoint(Checkpoint):
    """Writes `path` (last.ckpt) every `every_n_steps` optimizer steps, at a point from which a
    resumed run continues exactly as the uninterrupted one would have.

    - The checkpoint of a step that is followed by a validation is written after that validation
      (and after the best-adapter choice): Lightning, resuming from a checkpoint written at the end
      of a training batch, counts the validation due at that batch as done and never runs it.
    - Global random states (torch: LoRA dropout; numpy, python; CUDA when present) are stored when
      the checkpoint is written and restored just before the first training batch of the resumed
      run. Nothing draws from them in between: the data loaders have their own generators and
      validation runs in eval mode.
    - The position of `loader` (a `ResumableDataLoader`) within its epoch is stored here and given
      back to it on restore. Lightning also stores it (the loader has `state_dict`), but does not
      give it back when `configure_optimizers` has asked for `estimated_stepping_batches`, as ours
      does (Lightning issue #20550); loading it twice is harmless.
    - Optimizer, LR scheduler and loop counters are in Lightning's checkpoint; the best-adapter
      state is `BestAdapterCallback`'s.
    """

    def __init__(self, path: Path, every_n_steps: int, loader=None) -> None:
        self.path = Path(path)
        self.every_n_steps = int(every_n_steps)
        self.loader = loader
        self._saved_step: int | None = None
        self._pending = False
        self._rng_to_restore: dict[str, Any] | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._saved_step = int(trainer.global_step)  # the state we start from is on disk already (or is step 0)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._rng_to_restore is not None:
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = int(trainer.global_step)
        if self.every_n_steps < 1 or step == self._saved_step or step % self.every_n_steps:
            return
        if _validation_follows(trainer):
            self._pending = True
            return
        self._save(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._pending and not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING:
            self._save(trainer)

    def _save(self, trainer) -> None:
        self._pending = False
        self._saved_step = int(trainer.global_step)
        trainer.save_checkpoint(str(self.path), weights_only=False)  # full state: optimizer, callbacks, loops

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rng": rng_states()}
        if self.loader is not None:
            state["data"] = self.loader.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng_to_restore = state_dict.get("rng")
        if self.loader is not None and state_dict.get("data") is not None:
            self.loader.load_state_dict(state_dict["data"])


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
        excl = {k: str(runs.resolve_path(ic.get(k), data_dir)) if ic.get(k) else None
                for k in ("exclude_path", "exclude_keywords_path")}  # Dolly without safety data (issue 10)
        if ic.source == "local":
            examples = load_instruction_examples("file", str(runs.resolve_path(ic.path, data_dir)),
                                                 fmt=ic.format, limit=ic.limit, **excl)
        else:
            examples = load_instruction_examples("hub", ic.path, revision=ic.revision, fmt=ic.format, limit=ic.limit,
                                                 **excl)
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
    from value_harms.data.resumable import ResumableDataLoader
    from value_harms.data.vim import SupervisedDataset

    stage = cfg.vim_stage
    side = str(stage.get("truncation_side") or "end")
    ds_train = SupervisedDataset(train_examples, tokenizer, max_length=int(stage.max_length), pad_to=cfg.data.pad_to,
                                 truncation_side=side)
    ds_valid = SupervisedDataset(valid_examples, tokenizer, max_length=int(stage.max_length), pad_to=cfg.data.pad_to,
                                 truncation_side=side)
    truncation = {"truncation_side": side, "train_answer_lost": int(ds_train.n_answer_lost),
                  "train_answer_lost_share": ds_train.answer_lost_share, "valid_answer_lost": int(ds_valid.n_answer_lost),
                  "valid_answer_lost_share": ds_valid.answer_lost_share}
    if wandb_run is not None:  # lost-answer share per run (issue 10 item 12)
        from value_harms.tracking import safe_log

        safe_log(wandb_run, {f"{step}/{k}": v for k, v in truncation.items() if k != "truncation_side"}, summary=True)
    # Epoch e's order depends on (train.seed, e) only and the position within the epoch is saved
    # in every checkpoint: a killed run resumes on the very next batch (data/resumable.py).
    dl_train = ResumableDataLoader(ds_train, batch_size=int(stage.batch_size), seed=int(cfg.train.seed),
                                   collate_fn=ds_train.collate)
    dl_valid = DataLoader(ds_valid, batch_size=int(stage.batch_size), shuffle=False, collate_fn=ds_valid.collate,
                          num_workers=0, generator=torch.Generator())  # never draws from the global RNG

    module = LoRAModule(model, lr=float(stage.lr), weight_decay=float(stage.weight_decay),
                        warmup_steps=int(stage.warmup_steps))
    ckpt_dir = step_dir / "ckpt"
    best_cb = BestAdapterCallback(step_dir / "adapter")
    tput = ThroughputCallback()
    ckpt_cb = ResumeCheckpoint(ckpt_dir / "last.ckpt", every_n_steps=int(cfg.train.checkpoint_every_n_steps),
                               loader=dl_train)
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
    trainer.fit(module, train_dataloaders=dl_train, val_dataloaders=dl_valid if len(ds_valid) else None,
                ckpt_path=ckpt_path)
    if best_cb.best is None:
        # The step budget ended before any validation: validate once so an adapter is kept.
        trainer.validate(module, dataloaders=dl_valid, verbose=False)
    if best_cb.best is None:
        # No validation data at all: keep the final weights and say so.
        save_adapter(model, step_dir / "adapter")
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
        # Examples whose answer (the QA digit; the whole target elsewhere) lost a token to truncation.
        **truncation,
    }


# --------------------------------------------------------------------------------------------------
# The train task


def trains(cfg: DictConfig, profile: Profile) -> bool:
    """VIM needs a value profile (vanilla = the untrained base); benign baselines ignore the profile."""
    return cfg.vim_stage.kind == "benign" or (cfg.vim_stage.kind == "vim" and not profile.is_vanilla)


def stage_label(cfg: DictConfig, profile: Profile) -> str:
    """The stage name under which a job's result is filed: 'none' for an untrained model."""
    return cfg.vim_stage.name if trains(cfg, profile) else "none"


def store_folder(cfg: DictConfig, profile: Profile) -> Path:
    """Where the result of this job lives: <store>/train/<model>/<stage>/<profile>/<training key>. The
    key (value_harms.store.identity.train_key) is the content identity; the names only make the
    store browsable. Benign baselines ignore the profile and are filed under `vanilla`."""
    from value_harms.store import identity
    from value_harms.store.layout import safe_name

    stage = stage_label(cfg, profile)
    label = "vanilla" if cfg.vim_stage.kind == "benign" else profile.name
    key = identity.train_key(cfg, profile, cfg.paths.data_dir)
    return (Path(os.path.expanduser(cfg.paths.store_dir)) / "train" / safe_name(cfg.model.name, "model.name") / stage
            / safe_name(label, "value_profile.name") / key)


# Overrides that only concern evaluation / analysis / logging: left out of the train command that an
# evaluation prints when its adapter is missing.
_NOT_TRAIN = ("benchmark", "mitigation", "scorer", "baseline", "generation", "batch_profiles", "adapter_dir",
              "analysis", "audit", "force", "mode", "logger", "hydra", "run_label", "task_name")


def train_command(cfg: DictConfig, profile: Profile) -> str:
    """The exact `python train.py ...` that trains the adapter this config evaluates: the current
    command's overrides minus evaluation-only ones (outside Hydra: the group choices)."""
    args: list[str] = []
    try:
        from hydra.core.hydra_config import HydraConfig

        args = [str(o) for o in HydraConfig.get().overrides.task
                if str(o).lstrip("+~").split("=")[0].split(".")[0].split("/")[0] not in _NOT_TRAIN]
    except Exception:
        args = [f"model={cfg.model.name}", f"vim_stage={cfg.vim_stage.name}"]
    args = [a for a in args if not a.startswith("value_profile=")]
    if not any(a.startswith("value_profile.") for a in args):
        args.append(f"value_profile={profile.name}")
    return "python train.py " + " ".join(args)


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
    from value_harms.validate import check_task

    check_task(cfg)  # bad numbers, names and folders: one line, before any loading
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

    from value_harms.store import identity

    stored = _stored_result(cfg, store, data_dir)
    if stored is None:
        with runs.locked(store):
            stored = _stored_result(cfg, store, data_dir)  # finished by another process while we waited?
            if stored is None:
                return _train_and_record(cfg, profile, store, data_dir, run_dir, wandb_run, identity)
    log.info("complete result found in %s: nothing to train or check", store)
    runs.atomic_write_json(run_dir / "train_result.json", stored)
    tracking.safe_log(wandb_run, {"skipped": True, "store_dir": str(store)}, summary=True)
    return stored


def _train_and_record(cfg, profile, store, data_dir, run_dir, wandb_run, identity) -> dict[str, Any]:
    """Train (resuming from the last checkpoint), check alignment and write the result; the caller
    holds the store folder's lock."""
    from value_harms import tracking
    from value_harms.models import detach_lora, get_base_model, load_adapter

    base_model, tokenizer = get_base_model(cfg.model, os.path.expanduser(cfg.paths.cache_dir))
    result: dict[str, Any] = {
        "schema_version": identity.SCHEMA_VERSION, "train_key": store.name,
        "profile": profile.to_dict(), "model": cfg.model.name, "stage": stage_label(cfg, profile),
        "seed": int(cfg.train.seed), "store_dir": str(store), "git": runs.git_hash(),
    }
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
    runs.mark_complete(store, {"adapter_dir": result.get("adapter_dir"),
                               "sha256": {"train_result.json": runs.file_sha256(store / "train_result.json")}})
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
        expected = (runs.read_json(store / "COMPLETE").get("sha256") or {}).get("train_result.json")
        if expected != runs.file_sha256(store / "train_result.json"):
            raise ValueError("its bytes differ from the checksum written with it")
        result = runs.read_json(store / "train_result.json")
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("stored result %s is damaged (%s): recomputing", store / "train_result.json", exc)
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
