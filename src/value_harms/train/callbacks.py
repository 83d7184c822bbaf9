"""Training callbacks: best-adapter keeping, resumable checkpoints, throughput, a progress bar bounded by max_steps."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback, Checkpoint, RichProgressBar, TQDMProgressBar
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

from value_harms.store import files
from value_harms.train.module import save_adapter

log = logging.getLogger(__name__)


STATE_FILE = "best.json"


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
            files.atomic_write_json(
                self.adapter_dir.parent / STATE_FILE,
                {"val_loss": self.best, "step": self.best_step, "epoch": int(trainer.current_epoch)},
            )
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


class _StepBounded:
    """Lightning sizes the epoch's bar by the epoch's batches unless max_epochs is -1: a run stopped by
    `trainer.max_steps` (the demo: 12 steps of a 738-batch epoch) showed 738 batches and hours of ETA. Here the
    bar counts the batches that will run: the steps left times the gradient accumulation, at most the epoch."""

    @property
    def total_train_batches(self) -> int | float:
        t = self.trainer
        total = t.num_training_batches
        if t.max_steps is not None and t.max_steps > 0:
            done = t.fit_loop.epoch_loop.batch_progress.current.ready  # resumed mid-epoch: batches already run
            left = (t.max_steps - t.global_step) * max(1, int(t.accumulate_grad_batches))
            return min(total, done + left)
        return total


class StepBoundedRichBar(_StepBounded, RichProgressBar):
    pass


class StepBoundedTQDMBar(_StepBounded, TQDMProgressBar):
    pass


def progress_bar() -> Callback:
    """The bar Lightning would pick (rich when installed), bounded by max_steps."""
    return StepBoundedRichBar() if _RICH_AVAILABLE else StepBoundedTQDMBar()
