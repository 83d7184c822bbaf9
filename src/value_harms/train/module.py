"""The Lightning module that trains LoRA weights, and the atomic checkpoint writer."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from value_harms.store import files

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to a temporary file and renamed: a kill never leaves half a file."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        with files.atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


class LoRAModule(L.LightningModule):
    """Causal-LM fine-tuning of a PEFT model; loss on target tokens only (labels = -100 elsewhere)."""

    def __init__(self, model, *, lr: float, weight_decay: float, warmup_steps: int, answer_weight: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.answer_weight = float(answer_weight)  # vim_stage.answer_weight; 1 = the paper's loss
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        # Checkpoints hold only the trainable (LoRA) weights, so loading must not demand the rest.
        self.strict_loading = False

    @classmethod
    def from_stage(cls, model, stage) -> "LoRAModule":
        """The module with the optimiser and loss settings of a `vim_stage` config section."""
        return cls(
            model,
            lr=float(stage.lr),
            weight_decay=float(stage.weight_decay),
            warmup_steps=int(stage.warmup_steps),
            answer_weight=float(stage.get("answer_weight", 1.0)),
        )

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
        if self.answer_weight != 1.0 and "answer_mask" in batch:
            loss = weighted_target_loss(out.logits, batch["labels"], batch["answer_mask"], self.answer_weight)
            return loss, loss
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
        opt = torch.optim.AdamW(
            params, lr=self.lr, weight_decay=self.weight_decay
        )  # vim_stage.weight_decay (paper: 0.01)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        # Linear decay to 0 over the run, 0 warm-up by default (PROTOCOL.md hyper-parameters).
        sched = get_linear_schedule_with_warmup(opt, self.warmup_steps, total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}


def weighted_target_loss(
    logits: torch.Tensor, labels: torch.Tensor, answer_mask: torch.Tensor, answer_weight: float
) -> torch.Tensor:
    """Next-token cross-entropy over the target tokens (labels != -100) where the answer tokens
    (answer_mask 1, e.g. the QA digit) weigh `answer_weight` and the others 1: sum(w * ce) / sum(w).
    At answer_weight 1 it equals the causal-LM loss of transformers."""
    logits, labels, amask = logits[:, :-1, :].float(), labels[:, 1:], answer_mask[:, 1:]
    valid = labels != -100
    ce = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.clamp_min(0).reshape(-1), reduction="none"
    ).view_as(labels)
    w = torch.where(amask.bool(), torch.full_like(ce, float(answer_weight)), torch.ones_like(ce)) * valid
    return (ce * w).sum() / w.sum().clamp_min(1e-8)


# adapter_config.json fields that PEFT keeps as sets and writes in hash order
_SET_FIELDS = ("target_modules", "exclude_modules")


def save_adapter(model, adapter_dir: Path) -> None:
    """`save_pretrained` into `adapter_dir` (atomically), with the set-valued fields of
    adapter_config.json sorted: PEFT writes them in Python's string-hash order, which changes from one
    process to the next (PYTHONHASHSEED), so the same weights gave files (and a sha256) that depended
    on the process that saved them."""
    with files.atomic_dir(adapter_dir) as tmp:
        model.save_pretrained(str(tmp))
        cfg_file = Path(tmp) / "adapter_config.json"
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        for key in _SET_FIELDS:
            if isinstance(cfg.get(key), list):
                cfg[key] = sorted(cfg[key])
        cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True), encoding="utf-8")
