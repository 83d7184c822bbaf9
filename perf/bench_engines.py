"""Generation engines side by side, in one run, on the same prompts, adapters and sampling settings.

    python perf/bench_engines.py [--model smollm2_135m] [--prompts 64] [--samples 4] [--new 32]
                                 [--adapters 0,2] [--engines hf,vllm] [--out FILE]

For each number of adapters K (0 = the base model; K > 0 = K random LoRA adapters, r 8 on q/v, their
rows mixed in one pass): the project's HF path (`generate`, PEFT mixed-adapter batches of
`--hf-batch` prompts) and the vLLM server (`generation.engine=vllm`, started here from the engine
environment, `--concurrency` requests in flight). Prints generated tokens/s and requests/s per
engine and the ratio vLLM / HF, and appends the figures to a throughput file that
`python -m value_harms.estimate --engine ...` reads (default `<cache_dir>/throughput.json`).
Generated tokens are counted by re-tokenising each continuation with the model's tokenizer, the
same count for both engines. Server start-up is reported apart, not in the throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _prompts(n: int) -> list[str]:
    topics = ["the city council", "a new bakery", "the football team", "an old library", "the river", "a startup"]
    return [f"Here is a short story about {topics[i % len(topics)]} number {i}. It begins when" for i in range(n)]


def _cfg(model: str, extra: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import value_harms.config.schema  # noqa: F401 - registers the typed schemas

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("evaluate", [f"model={model}", *extra])


def make_adapters(model_cfg, cache: str, k: int, out: Path) -> dict[str, str]:
    """K random LoRA adapters (non-zero B, so each really changes the outputs), by content name."""
    from peft import LoraConfig, get_peft_model

    from value_harms.eval.engines import adapter_name
    from value_harms.models.loading import load_base_model
    from value_harms.models.lora import adapter_sha256

    found = {}
    for i in range(k):
        d = out / f"a{i}"
        if not (d / "adapter_config.json").exists():
            model, _ = load_base_model(model_cfg, cache)
            lora = LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
            peft = get_peft_model(model, lora)
            g = torch.Generator().manual_seed(i)
            with torch.no_grad():
                for name, p in peft.named_parameters():
                    if "lora_B" in name:
                        p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            peft.save_pretrained(str(d))
        found[adapter_name(adapter_sha256(str(d)))] = str(d)
    return found


def _requests(adapters: dict[str, str], prompts: list[str]):
    from value_harms.eval.generation import GenRequest

    names = list(adapters) or [None]
    return [
        GenRequest(text=p, model_key=f"bench-{n}", adapter_name=n, seed_key=str(i))
        for i, p in enumerate(prompts)
        for n in names
    ]


def _count(tok, outs) -> int:
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for o in outs for t in o)


def run_hf(cfg, cache: str, adapters, reqs, settings, batch: int, tok) -> dict:
    from value_harms.eval.generation import generate
    from value_harms.models.loading import get_base_model
    from value_harms.models.lora import detach_lora, load_adapters

    base, _ = get_base_model(cfg.model, cache)
    model = load_adapters(base, adapters) if adapters else base
    try:
        generate(model, tok, reqs[:2], settings, batch_size=2, progress=False)  # warm-up
        t0 = time.perf_counter()
        outs = generate(model, tok, reqs, settings, batch_size=batch, progress=False)
        secs = time.perf_counter() - t0
    finally:
        if adapters:
            detach_lora(model)
    return {"seconds": secs, "tokens": _count(tok, outs), "rows": len(reqs) * settings.num_samples}


def run_vllm(cfg, model_dir: str, adapters, reqs, settings, log_dir: Path, tok) -> dict:
    from value_harms.eval.engines import engine_settings, get_engine, shutdown_engines

    t0 = time.perf_counter()
    engine = get_engine(engine_settings(cfg), model_dir, adapters, log_dir)
    startup = time.perf_counter() - t0
    try:
        engine.generate_batch(reqs[:2], settings)  # warm-up
        t0 = time.perf_counter()
        outs = engine.generate_batch(reqs, settings)
        secs = time.perf_counter() - t0
    finally:
        shutdown_engines()
    return {
        "seconds": secs,
        "tokens": _count(tok, outs),
        "rows": len(reqs) * settings.num_samples,
        "startup_s": startup,
    }


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores)"


def main(argv: list[str] | None = None) -> int:
    # size: one measurement loop over adapter counts x engines, then the table and the records
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2_135m")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--new", type=int, default=32, help="new tokens per sample")
    ap.add_argument("--adapters", default="0,2", help="adapter counts K to measure, comma-separated")
    ap.add_argument("--engines", default="hf,vllm")
    ap.add_argument("--hf-batch", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--out", default=None, help="throughput file to append to (default <cache_dir>/throughput.json)")
    ap.add_argument("--vllm-python", default=None, help="the engine environment's python (default .venv-engine)")
    a = ap.parse_args(argv)

    from value_harms.eval.engines import engine_identity, engine_settings
    from value_harms.eval.generation import GenSettings
    from value_harms.models.loading import get_base_model, resolve_model_dir

    extra = ["generation.engine=vllm", f"generation.vllm.concurrency={a.concurrency}"]
    if a.vllm_python:
        extra.append(f"generation.vllm.python={a.vllm_python}")
    cfg = _cfg(a.model, extra)
    cache = os.path.expanduser(cfg.paths.cache_dir)
    model_dir = resolve_model_dir(cfg.model, cache)
    _, tok = get_base_model(cfg.model, cache)
    settings = GenSettings(max_new_tokens=a.new, num_samples=a.samples, temperature=0.7, top_p=0.9, seed=1)
    work = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    engines = [e.strip() for e in a.engines.split(",") if e.strip()]
    ks = [int(k) for k in a.adapters.split(",")]
    print(f"machine: {device_name()}; model {a.model}; {a.prompts} prompts x {a.samples} samples x {a.new} tokens")
    records, table = [], []
    for k in ks:
        adapters = make_adapters(cfg.model, cache, k, work)
        reqs = _requests(adapters, _prompts(a.prompts))
        row = {}
        for eng in engines:
            try:
                if eng == "hf":
                    r = run_hf(cfg, cache, adapters, reqs, settings, a.hf_batch, tok)
                    ident = {"name": "hf", "torch": torch.__version__}
                else:
                    r = run_vllm(cfg, model_dir, adapters, reqs, settings, work / "logs", tok)
                    ident = engine_identity(engine_settings(cfg))
            except Exception as exc:  # noqa: BLE001 - one engine failing must not hide the other's figure
                print(f"  K={k} {eng}: FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                continue
            tps, rps = r["tokens"] / r["seconds"], r["rows"] / r["seconds"]
            row[eng] = tps
            extra_s = f", server start-up {r['startup_s']:.0f} s" if "startup_s" in r else ""
            print(f"  K={k} {eng}: {tps:,.1f} tokens/s, {rps:.2f} requests/s ({r['seconds']:.1f} s{extra_s})")
            records.append(
                {
                    "engine": "vllm" if eng == "vllm" else "hf",
                    "identity": ident,
                    "model": a.model,
                    "device": device_name(),
                    "adapters": k,
                    "tokens_per_s": round(tps, 2),
                    "requests_per_s": round(rps, 3),
                    "prompts": a.prompts,
                    "samples": a.samples,
                    "new_tokens": a.new,
                    "date": time.strftime("%Y-%m-%d"),
                    "script": "perf/bench_engines.py",
                }
            )
        if "hf" in row and "vllm" in row:
            table.append((k, row["hf"], row["vllm"]))
    for k, hf, vl in table:
        print(f"ratio vLLM / HF, K={k} adapter(s): {vl / hf:.2f}x tokens/s ({vl:,.1f} vs {hf:,.1f})")
    out = Path(a.out) if a.out else Path(cache) / "throughput.json"
    old = json.loads(out.read_text()) if out.exists() else []
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(old + records, indent=1) + "\n")
    print(f"figures appended to {out} (read by python -m value_harms.estimate --engine hf|vllm)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
