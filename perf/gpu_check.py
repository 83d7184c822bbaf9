"""The prepared GPU check: one run, a few minutes, no downloads.

    bash perf/gpu_check.sh                       # on a GPU machine: nvidia-smi, then this script
    python perf/gpu_check.py --shape tiny --device cpu --train-steps 2 --gen-prompts 8   # smoke test

A Llama-2-7B-shaped model (hidden 4096, 32 layers, 32 heads, intermediate 11008, vocab 32000) with
RANDOM weights is built here from its config, with a byte-level BPE tokenizer trained here on a
seeded synthetic corpus (its vocabulary exactly the model's, so every sampled id decodes), and K
LoRA adapters (r 8 on q_proj/v_proj, ``init_lora_weights=False`` so they really change outputs) are
made with PEFT. Then, each part under its own time cap and none able to stop the others:

1. LoRA training tokens/s and MFU, bf16 and fp32: optimizer steps of the causal-LM loss on random
   token batches (seq 512). MFU = 6 * N * tokens/s / peak, N = the parameters that take part in
   matrix products per token (every base parameter but the input embedding table); the peak comes
   from PEAK_TFLOPS by the device's name, or ``--peak-tflops``.
2. Generation tokens/s through the project's HF path (``value_harms.eval.generation.generate``
   with ``value_harms.models.lora.load_adapters``), batch 64, 1 adapter and 8 adapters mixed.
3. The same with vLLM (offline ``vllm.LLM``, multi-LoRA, a seed per request), run by
   ``perf/gpu_check_vllm.py`` under ``$VLLM_PYTHON`` (vLLM's own environment) on the same model
   folder, prompts and adapters; without ``VLLM_PYTHON`` the part says SKIPPED.

Every figure is printed as one JSON line, then a table; everything goes to
``$OUT/gpu_check.json`` (``./gpu_check.json`` without ``$OUT``), rewritten after each part.
Exit status: 0 when every part ran or was skipped, 3 when a part failed (its error is recorded and
the other parts still ran), 1 when the model could not be built, 2 for a bad option.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
VLLM_SCRIPT = ROOT / "perf" / "gpu_check_vllm.py"

SHAPES: dict[str, dict[str, int]] = {
    "llama2-7b": dict(hidden_size=4096, num_layers=32, num_heads=32, intermediate_size=11008, vocab_size=32000),
    # head_dim 64, a size vLLM's CPU attention backend supports: for trying the vLLM part on CPU
    "small": dict(hidden_size=256, num_layers=2, num_heads=4, intermediate_size=688, vocab_size=2048),
    "tiny": dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, vocab_size=512),
}
# Per shape: optimizer steps (after one warm-up step), training batch, prompts, new tokens, caps (s).
DEFAULTS: dict[str, dict[str, Any]] = {
    "llama2-7b": dict(train_steps=10, train_batch=8, gen_prompts=256, max_new_tokens=64, train_cap_s=25, gen_cap_s=35),
    "small": dict(train_steps=4, train_batch=2, gen_prompts=64, max_new_tokens=32, train_cap_s=20, gen_cap_s=30),
    "tiny": dict(train_steps=4, train_batch=2, gen_prompts=64, max_new_tokens=16, train_cap_s=20, gen_cap_s=30),
}
# Dense (no sparsity) peak TFLOP/s from the vendors' datasheets: (bf16 tensor cores, plain fp32).
# Matched as a substring of torch.cuda.get_device_name(), the longest key first.
PEAK_TFLOPS: dict[str, tuple[float, float]] = {
    "H200 NVL": (835.0, 60.0),
    "H200": (989.0, 67.0),
    "H100 NVL": (835.0, 60.0),
    "H100 PCIe": (756.0, 51.0),
    "H100": (989.0, 67.0),
    "A100": (312.0, 19.5),
    "L40S": (362.0, 91.6),
}
MFU_FORMULA = (
    "MFU = 6 * N * tokens_per_s / peak_flops, N = base parameters in matrix products per token "
    "(all but the input embedding table; LoRA parameters not counted; attention-score FLOPs not counted). "
    "mfu_4n uses 4 * N: the work a LoRA step really does, as frozen weights get no weight gradients."
)
CONTEXT = 4096  # Llama-2's context; rotary positions, so it changes no weight
LORA_RANK = 8
LORA_TARGETS = ["q_proj", "v_proj"]
N_ADAPTERS = 8
GEN_BATCH = 64
SEQ_LEN = 512
SAMPLING = {"temperature": 0.1, "top_p": 0.75}  # the project's generation defaults (GenSettings)
PARTS = ("train_bf16", "hf_gen_k1", "hf_gen_k8", "train_fp32", "vllm")


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def emit(figure: str, part: str, value: Any, unit: str, **extra: Any) -> None:
    print(json.dumps({"figure": figure, "part": part, "value": value, "unit": unit, **extra}), flush=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_for(device_name: str, override: tuple[float, float | None] | None) -> dict[str, Any]:
    """Peak TFLOP/s for bf16 and fp32: ``--peak-tflops`` first, else the table by device name."""
    if override is not None:
        return {"bf16": override[0], "fp32": override[1], "source": "--peak-tflops"}
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key in device_name:
            bf16, fp32 = PEAK_TFLOPS[key]
            return {"bf16": bf16, "fp32": fp32, "source": f"table entry {key!r} (vendor datasheet, dense)"}
    return {"bf16": None, "fp32": None, "source": f"no table entry for {device_name!r}: MFU not computed"}


def parse_peak(text: str) -> tuple[float, float | None]:
    """``"989"`` (bf16 only) or ``"989,67"`` (bf16, fp32), positive TFLOP/s."""
    parts = text.split(",")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        vals = []
    if not 1 <= len(vals) <= 2 or any(not math.isfinite(v) or v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"--peak-tflops {text!r}: expected BF16 or BF16,FP32 (positive TFLOP/s)")
    return vals[0], (vals[1] if len(vals) == 2 else None)


class Clock:
    """The whole run's budget: a part's cap is its own cap, cut to what is left."""

    def __init__(self, budget_s: float) -> None:
        self.t0 = time.perf_counter()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def cap(self, want_s: float | None = None) -> float:
        left = self.budget_s - self.elapsed()
        return max(0.0, left if want_s is None else min(want_s, left))


# ---------------------------------------------------------------------------------------------- build
def synthetic_words(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(n)]


def build_tokenizer(vocab_size: int):
    """A byte-level BPE tokenizer trained here on seeded synthetic words, with exactly
    ``vocab_size`` entries (pad = eos, left padding, like the project's tiny model)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    words = synthetic_words(max(2000, vocab_size), seed=0)
    rng = random.Random(1)
    lines = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(len(words))]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    if tok.get_vocab_size() != vocab_size:
        raise RuntimeError(f"tokenizer has {tok.get_vocab_size()} entries, the model {vocab_size}")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
        padding_side="left",
        model_max_length=CONTEXT,
    )


def build_model(shape: dict[str, int], tok, dtype: torch.dtype, device: str, seed: int = 0):
    """A LlamaForCausalLM with random (seeded) weights made directly on ``device``. Its generation
    config has no eos id, so every generated row has exactly max_new_tokens tokens."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=shape["vocab_size"],
        hidden_size=shape["hidden_size"],
        intermediate_size=shape["intermediate_size"],
        num_hidden_layers=shape["num_layers"],
        num_attention_heads=shape["num_heads"],
        num_key_value_heads=shape["num_heads"],
        max_position_embeddings=CONTEXT,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.to(device)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = None
    model.eval()
    return model


def mfu(n_params: int, tokens_per_s: float, peak_tflops: float | None, factor: int = 6) -> float | None:
    """``factor * N * tokens/s`` over the peak (None without a peak)."""
    return factor * n_params * tokens_per_s / (peak_tflops * 1e12) if peak_tflops else None


def param_counts(model) -> dict[str, int]:
    total = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    embed = model.get_input_embeddings().weight.numel()
    return {"total": total, "input_embedding": embed, "matmul_N": total - embed}


def unwrap_peft(peft_model):
    """The base model back from a PEFT wrapper, LoRA layers removed without merging."""
    base = peft_model.unload()
    for attr in ("peft_config", "_hf_peft_config_loaded"):
        with contextlib.suppress(AttributeError):  # a class attribute on some versions: nothing to delete
            delattr(base, attr)
    base.eval()
    return base


def make_adapters(model, k: int, out_dir: Path) -> list[str]:
    """K LoRA adapters saved as PEFT folders; A and B both random, so each changes the outputs."""
    from peft import LoraConfig, get_peft_model

    dirs = []
    for i in range(k):
        cfg = LoraConfig(
            task_type="CAUSAL_LM",
            r=LORA_RANK,
            lora_alpha=2 * LORA_RANK,
            lora_dropout=0.0,
            target_modules=list(LORA_TARGETS),
            bias="none",
            init_lora_weights=False,
        )
        torch.manual_seed(1000 + i)
        peft_model = get_peft_model(model, cfg)
        folder = out_dir / f"a{i}"
        peft_model.save_pretrained(str(folder))
        dirs.append(str(folder))
        model = unwrap_peft(peft_model)
    return dirs


def make_prompts(n: int) -> list[str]:
    words = synthetic_words(2000, seed=2)
    rng = random.Random(3)
    return [f"Item {i}: " + " ".join(rng.choice(words) for _ in range(rng.randint(16, 28))) for i in range(n)]


def write_model_dir(model, tok, folder: Path, with_weights: bool) -> None:
    """config + tokenizer (+ weights when asked; vLLM can make its own random weights instead)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.config._name_or_path = str(folder)
    if with_weights:
        model.save_pretrained(str(folder))
    else:
        model.config.save_pretrained(str(folder))
        model.generation_config.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))


# ---------------------------------------------------------------------------------------------- train
def timed_steps(step: Callable[[], float], device: str, steps: int, cap_s: float) -> tuple[list[float], float]:
    """One warm-up step, then up to ``steps`` timed steps, stopping before the next would pass ``cap_s``."""
    loss = step()
    sync(device)
    times: list[float] = []
    while len(times) < steps:
        if times and sum(times) + max(times) > cap_s:
            break
        t = time.perf_counter()
        loss = step()
        sync(device)
        times.append(time.perf_counter() - t)
    return times, loss


def train_part(model, dtype: torch.dtype, args, cap_s: float, peak: float | None) -> dict[str, Any]:
    """LoRA (r 8, q/v) optimizer steps on random token batches of ``args.train_batch`` x ``args.seq_len``."""
    from peft import LoraConfig, get_peft_model

    device, vocab = args.device, model.config.vocab_size
    model.to(dtype)
    cfg = LoraConfig(
        task_type="CAUSAL_LM", r=LORA_RANK, lora_alpha=2 * LORA_RANK, lora_dropout=0.0, target_modules=LORA_TARGETS
    )
    peft_model = get_peft_model(model, cfg)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    gen = torch.Generator(device=device).manual_seed(0)
    peft_model.train()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    def step() -> float:
        ids = torch.randint(vocab, (args.train_batch, args.seq_len), generator=gen, device=device)
        loss = peft_model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    try:
        times, loss = timed_steps(step, device, args.train_steps, cap_s)
    finally:
        unwrap_peft(peft_model)
    loss = float(loss)
    if not math.isfinite(loss):
        raise RuntimeError(f"training loss is {loss}")
    tokens_per_s = args.train_batch * args.seq_len * len(times) / sum(times)
    n = param_counts(model)["matmul_N"]
    rec = {
        "tokens_per_s": tokens_per_s,
        "steps_timed": len(times),
        "step_s_median": sorted(times)[len(times) // 2],
        "batch": args.train_batch,
        "seq_len": args.seq_len,
        "last_loss": loss,
        "trainable_params": sum(p.numel() for p in trainable),
        "lora_param_dtype": str(trainable[0].dtype).removeprefix("torch."),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "peak_tflops": peak,
        "mfu": mfu(n, tokens_per_s, peak),
        "mfu_4n": mfu(n, tokens_per_s, peak, factor=4),
    }
    if device.startswith("cuda"):
        rec["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return rec


# ---------------------------------------------------------------------------------------------- generate
def hf_gen_part(model, tok, adapter_dirs: list[str], prompts: list[str], args, cap_s: float) -> dict[str, Any]:
    """The project's generation path, K adapters mixed row by row, batches of ``args.gen_batch``."""
    from value_harms.eval.generation import GenRequest, GenSettings, generate
    from value_harms.models.lora import detach_lora, load_adapters

    k = len(adapter_dirs)
    settings = GenSettings(max_new_tokens=args.max_new_tokens, num_samples=1, seed=0, **SAMPLING)
    warm = GenSettings(max_new_tokens=2, num_samples=1, seed=0)
    reqs = [
        GenRequest(text=p, model_key=f"gpu-check/a{j % k}", adapter_name=f"a{j % k}", seed_key=str(j))
        for j, p in enumerate(prompts)
    ]
    peft_model = load_adapters(model, {f"a{i}": d for i, d in enumerate(adapter_dirs)})
    secs, rows, batches, texts = 0.0, 0, 0, []
    try:
        generate(peft_model, tok, reqs[: args.gen_batch], warm, batch_size=args.gen_batch, progress=False)
        for start in range(0, len(reqs), args.gen_batch):
            if batches and secs + secs / batches > cap_s:
                break
            t = time.perf_counter()
            out = generate(
                peft_model,
                tok,
                reqs[start : start + args.gen_batch],
                settings,
                batch_size=args.gen_batch,
                progress=False,
            )
            sync(args.device)
            secs += time.perf_counter() - t
            rows, batches = rows + len(out), batches + 1
            texts.extend(o[0] for o in out)
    finally:
        detach_lora(peft_model)
    return {
        "tokens_per_s": rows * args.max_new_tokens / secs,
        "adapters": k,
        "prompts": rows,
        "batch": args.gen_batch,
        "max_new_tokens": args.max_new_tokens,
        "seconds": secs,
        "sampling": SAMPLING,
        "distinct_outputs": len(set(texts)),
    }


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def vllm_part(spec: dict[str, Any], work: Path, cap_s: float, device: str) -> dict[str, Any]:
    """Run perf/gpu_check_vllm.py under $VLLM_PYTHON (its own process group, killed at the cap)."""
    py = os.environ.get("VLLM_PYTHON", "").strip()
    if not py:
        return {"status": "skipped", "reason": "VLLM_PYTHON is not set (a python of vLLM's own environment)"}
    if not (os.path.isfile(py) and os.access(py, os.X_OK)):
        return {"status": "skipped", "reason": f"VLLM_PYTHON={py!r} is not an executable file"}
    spec_path, result_path, log_path = work / "vllm_spec.json", work / "vllm_result.json", work / "vllm.log"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    env = dict(os.environ)
    if device == "cpu":
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    env.pop("PYTHONPATH", None)  # the project's src and site must not shadow vLLM's environment
    with open(log_path, "w", encoding="utf-8") as fh:
        cmd = [py, str(VLLM_SCRIPT), str(spec_path), str(result_path)]
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=cap_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc = None
    rec = json.loads(result_path.read_text(encoding="utf-8")) if result_path.is_file() else {}
    if rc != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-8:]
        why = f"timed out after {cap_s:.0f} s" if rc is None else f"exit status {rc}"
        rec.update(status="error", error=f"vLLM process {why}", log_tail=tail)
    return rec


# ---------------------------------------------------------------------------------------------- report
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def run_part(name: str, results: dict[str, Any], out_path: Path, min_s: float, cap_s: float, fn) -> dict[str, Any]:
    """Run one part; an exception becomes that part's recorded error, never the run's end."""
    if cap_s < min_s:
        rec = {"status": "skipped", "reason": f"{cap_s:.0f} s left of --budget-s, under the {min_s:.0f} s it needs"}
    else:
        log(f"{name}: up to {cap_s:.0f} s")
        t = time.perf_counter()
        try:
            rec = fn(cap_s)
            rec.setdefault("status", "ok")
        except Exception as exc:  # one part's failure is recorded; the others still run
            traceback.print_exc(file=sys.stderr)
            rec = {"status": "error", "error": _first_line(exc)}
        rec["wall_s"] = round(time.perf_counter() - t, 2)
    results["parts"][name] = rec
    write_json(results, out_path)
    emit_part(name, rec)
    return rec


def emit_part(name: str, rec: dict[str, Any]) -> None:
    if rec["status"] == "skipped":
        emit("status", name, "SKIPPED", "", reason=rec["reason"])
        if name == "vllm":
            print(f"vLLM: SKIPPED ({rec['reason']})", flush=True)
        return
    if rec["status"] == "error" and "tokens_per_s" not in rec and "cases" not in rec:
        emit("status", name, "ERROR", "", error=rec["error"])
        return
    if name.startswith("train"):
        emit("train_tokens_per_s", name, rec["tokens_per_s"], "tokens/s")
        emit("mfu", name, rec["mfu"], "fraction of peak", formula="6N", peak_tflops=rec["peak_tflops"])
        emit("mfu_4n", name, rec["mfu_4n"], "fraction of peak", formula="4N", peak_tflops=rec["peak_tflops"])
    elif name.startswith("hf_gen"):
        emit("gen_tokens_per_s", name, rec["tokens_per_s"], "tokens/s", adapters=rec["adapters"], engine="hf")
    else:
        for k, case in rec.get("cases", {}).items():
            emit("gen_tokens_per_s", f"vllm_k{k}", case["tokens_per_s"], "tokens/s", adapters=int(k), engine="vllm")
        for k, ratio in rec.get("ratio_vllm_over_hf", {}).items():
            emit("ratio_vllm_over_hf", f"vllm_k{k}", ratio, "x", adapters=int(k))
        if rec["status"] == "error":
            emit("status", name, "ERROR", "", error=rec["error"])


def write_json(results: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _fmt(v: Any, spec: str = ",.0f") -> str:
    return "—" if v is None else format(v, spec)


def table(results: dict[str, Any]) -> str:
    parts = results["parts"]
    rows = ["| part | tokens/s | MFU (6N) | MFU (4N) | vLLM/HF | status |", "|---|---|---|---|---|---|"]
    for name in ("train_bf16", "train_fp32", "hf_gen_k1", "hf_gen_k8"):
        rec = parts.get(name, {"status": "not run"})
        status = rec["status"] if rec["status"] != "error" else f"error: {rec['error']}"
        mfu = (_fmt(rec.get("mfu"), ".1%"), _fmt(rec.get("mfu_4n"), ".1%")) if name.startswith("train") else ("", "")
        rows.append(f"| {name} | {_fmt(rec.get('tokens_per_s'))} | {mfu[0]} | {mfu[1]} | | {status} |")
    v = parts.get("vllm", {"status": "not run"})
    for k, case in v.get("cases", {}).items():
        ratio = v.get("ratio_vllm_over_hf", {}).get(k)
        ratio_text = "—" if ratio is None else f"{ratio:.2f}x"
        rows.append(f"| vllm_k{k} | {_fmt(case.get('tokens_per_s'))} | | | {ratio_text} | {v['status']} |")
    if not v.get("cases"):
        rows.append(f"| vllm | — | | | | {v['status']}: {v.get('reason') or v.get('error', '')} |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="llama2-7b")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cuda, cuda:N or cpu")
    p.add_argument("--budget-s", type=float, default=290.0, help="the whole run's time budget (default 290)")
    p.add_argument("--peak-tflops", type=parse_peak, default=None, help="BF16[,FP32] peak TFLOP/s for MFU")
    p.add_argument("--train-steps", type=int, help="timed optimizer steps per dtype (after one warm-up)")
    p.add_argument("--train-batch", type=int)
    p.add_argument("--seq-len", type=int, default=SEQ_LEN)
    p.add_argument("--gen-prompts", type=int, help="prompts per generation case")
    p.add_argument("--gen-batch", type=int, default=GEN_BATCH)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--train-cap-s", type=float, help="time cap of each training part")
    p.add_argument("--gen-cap-s", type=float, help="time cap of each HF generation case")
    p.add_argument(
        "--gen-dtype",
        choices=["auto", "bfloat16", "float32"],
        default="auto",
        help="generation dtype, HF and vLLM (auto: bfloat16 on cuda, float32 on cpu)",
    )
    p.add_argument(
        "--vllm-load",
        choices=["auto", "dummy", "weights"],
        default="auto",
        help="vLLM's weights: its own random ones (dummy: no multi-GB write) or the saved ones "
        "(auto: dummy for llama2-7b)",
    )
    p.add_argument("--vllm-eager", action="store_true", help="vLLM without compilation / CUDA graphs")
    p.add_argument("--skip", default="", help=f"comma-separated parts to skip: {', '.join(PARTS)}")
    p.add_argument("--out-dir", default=None, help="where gpu_check.json goes (default $OUT, else .)")
    p.add_argument("--keep", action="store_true", help="keep the model / adapter folder")
    args = p.parse_args(argv)
    for key, val in DEFAULTS[args.shape].items():
        if getattr(args, key) is None:
            setattr(args, key, val)
    for key in ("train_steps", "train_batch", "seq_len", "gen_prompts", "gen_batch", "max_new_tokens"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} {getattr(args, key)}: expected a positive integer")
    if args.budget_s <= 0:
        p.error(f"--budget-s {args.budget_s}: expected a positive number of seconds")
    bad = sorted(set(filter(None, args.skip.split(","))) - set(PARTS))
    if bad:
        p.error(f"--skip {args.skip!r}: unknown part {bad[0]!r}; expected some of {', '.join(PARTS)}")
    args.skip = set(filter(None, args.skip.split(",")))
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: torch {torch.__version__} sees no CUDA device; expected cpu or auto")
    if args.gen_dtype == "auto":
        args.gen_dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    if args.vllm_load == "auto":
        args.vllm_load = "dummy" if args.shape == "llama2-7b" else "weights"
    return args


def meta(args, model) -> dict[str, Any]:
    import peft
    import transformers

    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else platform.processor() or "cpu"
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": args.device,
        "device_name": name,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
        "shape": {"name": args.shape, **SHAPES[args.shape]},
        "params": param_counts(model),
        "peak_tflops": peak_for(name, args.peak_tflops)
        if args.device.startswith("cuda") or args.peak_tflops
        else {"bf16": None, "fp32": None, "source": "cpu: no peak table; pass --peak-tflops for MFU"},
        "mfu_formula": MFU_FORMULA,
        "settings": {k: v for k, v in vars(args).items() if k not in ("skip", "peak_tflops")},
    }


def vllm_spec(args, model_dir: Path, adapters: list[str], prompts: list[str]) -> dict[str, Any]:
    engine: dict[str, Any] = {"max_num_batched_tokens": 16384}  # per-request seeds need one step's budget
    if args.device.startswith("cuda"):
        engine["gpu_memory_utilization"] = 0.85
    return {
        "model_dir": str(model_dir),
        "dtype": args.gen_dtype,
        "load_format": "dummy" if args.vllm_load == "dummy" else "auto",
        "enforce_eager": bool(args.vllm_eager),
        "adapters": adapters,
        "cases": [1, len(adapters)],
        "lora_rank": LORA_RANK,
        "prompts": prompts,
        "max_new_tokens": args.max_new_tokens,
        "max_model_len": 512 if args.max_new_tokens < 400 else CONTEXT,
        "sampling": SAMPLING,
        "engine_kwargs": engine,
    }


def vllm_ratios(rec: dict[str, Any], parts: dict[str, Any]) -> dict[str, Any]:
    """vLLM tokens/s over the HF path's, per number of adapters, where both were measured."""
    ratios = {}
    for k, case in rec.get("cases", {}).items():
        hf = parts.get(f"hf_gen_k{1 if k == '1' else N_ADAPTERS}", {})
        if hf.get("tokens_per_s") and case.get("tokens_per_s"):
            ratios[k] = case["tokens_per_s"] / hf["tokens_per_s"]
    if rec.get("cases"):
        rec["ratio_vllm_over_hf"] = ratios
    return rec


def setup(args, work: Path) -> tuple[Any, Any, list[str], list[str], Path, dict[str, float]]:
    t = time.perf_counter()
    shape = SHAPES[args.shape]
    tok = build_tokenizer(shape["vocab_size"])
    t_tok = time.perf_counter()
    model = build_model(shape, tok, torch.bfloat16 if args.device.startswith("cuda") else torch.float32, args.device)
    sync(args.device)
    t_model = time.perf_counter()
    model_dir = work / "model"
    write_model_dir(model, tok, model_dir, with_weights=args.vllm_load == "weights" and "vllm" not in args.skip)
    adapters = make_adapters(model, N_ADAPTERS, work / "adapters")
    secs = {"tokenizer": t_tok - t, "model": t_model - t_tok, "folders": time.perf_counter() - t_model}
    return model, tok, adapters, make_prompts(args.gen_prompts), model_dir, secs


class Runner:
    """Runs the parts in order under one clock, recording each in ``results``."""

    def __init__(self, args, results: dict[str, Any], out_path: Path, clock: Clock) -> None:
        self.args, self.results, self.out_path, self.clock = args, results, out_path, clock

    def part(self, name: str, want_s: float | None, fn, min_s: float = 1.0) -> None:
        if name in self.args.skip:
            rec = {"status": "skipped", "reason": "--skip"}
            self.results["parts"][name] = rec
            emit_part(name, rec)
        else:
            run_part(name, self.results, self.out_path, min_s, self.clock.cap(want_s), fn)

    def model_parts(self, work: Path) -> dict[str, Any]:
        """Build, then the parts that use the model in this process; returns what vLLM needs."""
        args = self.args
        model, tok, adapters, prompts, model_dir, secs = setup(args, work)
        self.results.update(meta(args, model))
        self.results["setup_s"] = secs
        peaks = self.results["peak_tflops"]
        self.part(
            "train_bf16", args.train_cap_s, lambda cap: train_part(model, torch.bfloat16, args, cap, peaks["bf16"])
        )
        model.to(getattr(torch, args.gen_dtype))
        self.part("hf_gen_k1", args.gen_cap_s, lambda cap: hf_gen_part(model, tok, adapters[:1], prompts, args, cap))
        self.part("hf_gen_k8", args.gen_cap_s, lambda cap: hf_gen_part(model, tok, adapters, prompts, args, cap))
        self.part(
            "train_fp32", args.train_cap_s, lambda cap: train_part(model, torch.float32, args, cap, peaks["fp32"])
        )
        return vllm_spec(args, model_dir, adapters, prompts)

    def run(self, work: Path) -> None:
        spec = self.model_parts(work)
        gc.collect()  # the model is gone with model_parts' frame: give its memory back before vLLM starts
        if self.args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        parts, device = self.results["parts"], self.args.device
        min_s = 30.0 if self.args.shape == "llama2-7b" else 5.0
        self.part("vllm", None, lambda cap: vllm_ratios(vllm_part(spec, work, cap, device), parts), min_s)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    clock = Clock(args.budget_s)
    out_dir = Path(args.out_dir or os.environ.get("OUT") or ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / "gpu_check.json"
    results: dict[str, Any] = {"issue": 12, "parts": {}}
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    log(f"shape {args.shape} on {args.device}, budget {args.budget_s:.0f} s, work folder {work}")
    try:
        Runner(args, results, out_path, clock).run(work)
    except Exception as exc:  # the model or its folders could not be made: nothing to measure
        traceback.print_exc(file=sys.stderr)
        results["setup_error"] = _first_line(exc)
        print(f"error: setup failed: {results['setup_error']}", file=sys.stderr)
        return 1
    finally:
        results["wall_s"] = round(clock.elapsed(), 2)
        write_json(results, out_path)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nGPU check on {results['device_name']} ({results['date_utc']}), shape {args.shape}, "
        f"{results['wall_s']:.0f} s; {results['mfu_formula']}\nPeak: {results['peak_tflops']}\n"
    )
    print(table(results), flush=True)
    print(f"\nwritten: {out_path}", flush=True)
    return 3 if any(r["status"] == "error" for r in results["parts"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
