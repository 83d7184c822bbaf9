"""Training step time: the project's Lightning path vs a plain PyTorch + PEFT loop, same batches.

    python perf/bench_train_step.py [--model smollm2_135m|tiny] [--steps 12] [--batch-size 8]

Both paths train the same LoRA (r 8 on q/v) from the same seed on the same VIM stage-1 batches.
Step time = time between the starts of consecutive steps (so every per-step overhead of the loop,
logging and checkpoint callbacks included); the median after two warm-up steps is compared.
Prints the ratio Lightning / plain (target <= 1.05).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import lightning as L
import torch
from omegaconf import OmegaConf

from value_harms.core.values import VALUES, anchor_vector
from value_harms.data.touche import load_arguments
from value_harms.data.vim import SupervisedDataset, vim_datasets
from value_harms.models.loading import get_base_model
from value_harms.models.lora import attach_lora, detach_lora
from value_harms.train.callbacks import ThroughputCallback
from value_harms.train.module import LoRAModule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def batches(tokenizer, n, bs, data_dir):
    args = load_arguments("value_eval_10", "vim/valueEval_10.csv", data_dir=data_dir)
    split, _ = vim_datasets("ag", args, dict(zip(VALUES, anchor_vector("Uni"))))
    ds = SupervisedDataset(split["train"][: n * bs], tokenizer, max_length=128, pad_to="max_length")
    return [ds.collate([ds[i] for i in range(k * bs, (k + 1) * bs)]) for k in range(n)]


class StepClock(L.Callback):
    def __init__(self):
        self.starts = []

    def on_train_batch_start(self, *a):
        self.starts.append(time.perf_counter())


def plain(model, data):
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-5)
    from transformers import get_linear_schedule_with_warmup

    sched = get_linear_schedule_with_warmup(opt, 0, len(data))
    starts = []
    for b in data:
        starts.append(time.perf_counter())
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
        out.loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    starts.append(time.perf_counter())
    return [b - a for a, b in zip(starts, starts[1:])]


def lightning_path(model, data, tmp):
    clock = StepClock()
    module = LoRAModule(model, lr=2e-5, weight_decay=0.0, warmup_steps=0)
    trainer = L.Trainer(
        max_steps=len(data),
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[clock, ThroughputCallback()],
        enable_checkpointing=False,
        default_root_dir=tmp,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None, shuffle=False))
    clock.starts.append(time.perf_counter())
    return [b - a for a, b in zip(clock.starts, clock.starts[1:])]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2_135m")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--data-dir", default=os.environ.get("VALUE_HARMS_DATA_DIR", os.path.join(ROOT, "..", "shared", "data"))
    )
    a = ap.parse_args()
    mcfg = OmegaConf.load(os.path.join(ROOT, "conf", "model", f"{a.model}.yaml"))
    base, tok = get_base_model(
        mcfg, os.path.expanduser(os.environ.get("VALUE_HARMS_CACHE_DIR", "~/.cache/value_harms"))
    )
    data = batches(tok, a.steps + 2, a.batch_size, a.data_dir)
    res = {"plain": [], "lightning": []}
    for _ in range(a.repeats):
        for name in ("plain", "lightning"):
            L.seed_everything(42, verbose=False)
            peft = attach_lora(base, r=8, alpha=32, dropout=0.1, target_modules=list(mcfg.lora_target_modules), seed=42)
            times = plain(peft, data) if name == "plain" else lightning_path(peft, data, "/tmp/vh-bench")
            detach_lora(peft)
            res[name].append(statistics.median(times[2:]))
    p, lit = min(res["plain"]), min(res["lightning"])
    print(f"model={a.model} batch={a.batch_size}x128 steps={a.steps} threads={torch.get_num_threads()}")
    print(f"plain PyTorch+PEFT step: {p * 1000:.1f} ms (median; best of {a.repeats})")
    print(f"Lightning Trainer step:  {lit * 1000:.1f} ms")
    print(f"ratio lightning/plain = {lit / p:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
