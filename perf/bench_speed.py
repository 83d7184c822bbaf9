"""Speed ratios of the framework, measured in one run on one machine (targets in brackets).

    python perf/bench_speed.py [--model tiny|smollm2_135m] [--skip-train]

1. training step, project's Lightning path / plain PyTorch + PEFT loop, same batches   [<= 1.05]
2. generation at batch 16 / one prompt at a time (tokens per second)                  [>= 4x]
2b. 5 samples per persona-length prompt: each prompt read once / read per sample row   [> 1x, same texts]
3. K adapters mixed in one pass / K separate single-adapter passes (throughput)        [>= 0.8x]
4. scorer on a batch / one text per call (profanity_check, texts per second)          [report]
5. rerun of a finished evaluation sweep / its first run (wall time, process start included), with
   the number of generations and scorer calls of the rerun                             [<= 5%, 0, 0]
6. per-job overhead of an in-process multirun: marginal wall time of one more complete job
   (rerun of 2k jobs minus rerun of k jobs, over k)                                    [<= 1 s/job]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "perf"))


def _model(name):
    from value_harms.models.loading import get_base_model

    cache = os.path.expanduser(os.environ.get("VALUE_HARMS_CACHE_DIR", "~/.cache/value_harms"))
    return get_base_model(OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml"), cache)


def _prompts(n):
    topics = [
        "the city council",
        "a new bakery",
        "the football team",
        "an old library",
        "the river",
        "a startup",
        "the museum",
        "a music festival",
    ]
    return [f"Here is a short story about {topics[i % len(topics)]} number {i}. It begins when" for i in range(n)]


def bench_generation(model, tok, n=16, new=24):
    from value_harms.eval.generation import GenRequest, GenSettings, GenStats, generate

    s = GenSettings(max_new_tokens=new, num_samples=1, temperature=0.7, top_p=0.9)
    reqs = [GenRequest(t, "bench") for t in _prompts(n)]
    generate(model, tok, reqs[:2], s, batch_size=2, progress=False)  # warm-up
    st1, st16 = GenStats(), GenStats()
    t0 = time.perf_counter()
    out1 = generate(model, tok, reqs, s, batch_size=1, progress=False, stats=st1)
    t1 = time.perf_counter() - t0
    t0 = time.perf_counter()
    out16 = generate(model, tok, reqs, s, batch_size=16, progress=False, stats=st16)
    t16 = time.perf_counter() - t0
    toks = lambda outs: sum(len(tok(o[0])["input_ids"]) for o in outs)  # noqa: E731
    return (toks(out16) / t16) / (toks(out1) / t1), t1, t16, out1 == out16


def bench_shared_prefill(model, tok, n=8, samples=5, new=24):
    """n in-context persona prompts (the ICL baseline's ~330-token prefix) x `samples` rows each: the
    prompt read once per prompt and its cache repeated, vs read once per sample row (generate()'s own way)."""
    from value_harms.core.values import VALUES
    from value_harms.eval.generation import GenRequest, GenSettings, _generate_batch
    from value_harms.eval.prompts import persona_prompt, with_prefix

    persona = persona_prompt({v: 6.0 if v == "Power" else 3.0 for v in VALUES})
    reqs = [GenRequest(with_prefix(persona, p), "bench", seed_key=str(i)) for i, p in enumerate(_prompts(n))]
    s = GenSettings(max_new_tokens=new, num_samples=samples, temperature=0.1, top_p=0.75)
    _generate_batch(model, tok, reqs[:2], s)  # warm-up
    t0 = time.perf_counter()
    per_row = _generate_batch(model, tok, reqs, s, share_prefill=False)
    t_row = time.perf_counter() - t0
    t0 = time.perf_counter()
    shared = _generate_batch(model, tok, reqs, s, share_prefill=True)
    t_shared = time.perf_counter() - t0
    return t_row / t_shared, t_row, t_shared, per_row == shared


def bench_mixed(model, tok, k=4, n=8, new=24):
    """K adapters x n prompts: one mixed pass vs K passes with one adapter each."""
    from value_harms.eval.generation import GenRequest, GenSettings, generate
    from value_harms.models.lora import attach_lora, detach_lora, load_adapter, load_adapters

    s = GenSettings(max_new_tokens=new, num_samples=1, temperature=0.7, top_p=0.9)
    tmp = Path(tempfile.mkdtemp())
    dirs = {}
    for i in range(k):  # K distinct random LoRA adapters
        peft = attach_lora(model, r=8, alpha=32, dropout=0.0, target_modules=["q_proj", "v_proj"], seed=i)
        with torch.no_grad():
            for name, p in peft.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.02)
        peft.save_pretrained(str(tmp / f"a{i}"))
        dirs[f"a{i}"] = str(tmp / f"a{i}")
        model = detach_lora(peft)
    prompts = _prompts(n)
    t0 = time.perf_counter()
    for name, d in dirs.items():
        peft = load_adapter(model, d)
        generate(peft, tok, [GenRequest(t, name) for t in prompts], s, batch_size=n, progress=False)
        model = detach_lora(peft)
    t_sep = time.perf_counter() - t0
    peft = load_adapters(model, dirs)
    reqs = [GenRequest(t, name, name) for name in dirs for t in prompts]
    t0 = time.perf_counter()
    generate(peft, tok, reqs, s, batch_size=n, progress=False)
    t_mix = time.perf_counter() - t0
    detach_lora(peft)
    return t_sep / t_mix, t_sep, t_mix


def bench_scorer(n=2000):
    from value_harms.scoring.toxicity.profanity import ProfanityCheckScorer

    texts = [f"this is sentence number {i}, written to be scored by a classifier" for i in range(n)]
    sc = ProfanityCheckScorer()
    sc.score(texts[:10])
    t0 = time.perf_counter()
    sc.score(texts)
    tb = time.perf_counter() - t0
    t0 = time.perf_counter()
    for t in texts[:200]:
        sc.score([t])
    t1 = (time.perf_counter() - t0) * n / 200
    return t1 / tb, t1, tb


def bench_rerun(model_name, k=6):
    """An evaluation sweep of 2k ICL personas x 1 benchmark, then reruns of k and of 2k of them.

    Rerun ratio = rerun(2k) / first(2k). Per-job overhead = (rerun(2k) - rerun(k)) / k: the marginal
    cost of one more (complete) job in an in-process multirun, process start-up excluded."""
    out = Path(tempfile.mkdtemp())
    data_dir = os.environ.get("VALUE_HARMS_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    names = [
        "Ach",
        "Ben",
        "Con",
        "Hed",
        "Pow",
        "Sec",
        "SD",
        "Sti",
        "Tra",
        "Uni",
        "Openness_to_Change",
        "Self-Enhancement",
        "Conservation",
        "Self-Transcendence",
    ][: 2 * k]

    def sweep(profiles, tag):
        args = [
            sys.executable,
            str(ROOT / "evaluate.py"),
            "-m",
            f"model={model_name}",
            "logger=none",
            "baseline=icl",
            f"value_profile={','.join(profiles)}",
            "benchmark=rtp",
            "benchmark.limit=4",
            "benchmark.num_samples=2",
            "benchmark.max_new_tokens=16",
            "scorer=profanity_check",
            "generation.progress=false",
            f"paths.output_dir={out}",
            f"paths.data_dir={data_dir}",
            f"hydra.sweep.dir={out}/{tag}",
        ]
        t0 = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True, cwd=ROOT)
        return time.perf_counter() - t0

    first = sweep(names, "first")
    rerun_k = sweep(names[:k], "rerun_k")
    rerun_2k = sweep(names, "rerun_2k")
    res = [json.loads(p.read_text()) for p in (out / "rerun_2k").glob("*/results.json")]
    generated = sum(r["generation"]["generated"] for r in res if not r.get("skipped"))
    skipped = sum(1 for r in res if r.get("skipped"))
    return rerun_2k / first, first, rerun_2k, generated, skipped, len(res), (rerun_2k - rerun_k) / k


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--skip-train", action="store_true")
    a = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, model {a.model}")
    if not a.skip_train:
        r = subprocess.run(
            [
                sys.executable,
                str(ROOT / "perf" / "bench_train_step.py"),
                "--model",
                a.model,
                "--steps",
                "20" if a.model == "tiny" else "6",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        line = [x for x in r.stdout.splitlines() if x.startswith("ratio")]
        print(f"1. training step lightning/plain: {line[0] if line else r.stderr[-300:]}")
    model, tok = _model(a.model)
    ratio, t1, t16, same = bench_generation(model, tok)
    print(
        f"2. generation batch 16 vs one at a time: {ratio:.2f}x tokens/s ({t1:.2f} s vs {t16:.2f} s; "
        f"identical outputs: {same})  [target >= 4x]"
    )
    ratio, tr, tsh, same = bench_shared_prefill(model, tok)
    print(
        f"2b. 8 persona prompts x 5 samples, prompt read once vs per row: {ratio:.2f}x ({tr:.2f} s vs {tsh:.2f} s; "
        f"identical outputs: {same})  [target > 1x, identical]"
    )
    ratio, ts, tm = bench_mixed(model, tok)
    print(
        f"3. 4 adapters mixed vs 4 separate passes: {ratio:.2f}x throughput ({ts:.2f} s vs {tm:.2f} s)  "
        f"[target >= 0.8x]"
    )
    ratio, t1, tb = bench_scorer()
    print(f"4. scorer batch vs per text (profanity_check, 2,000 texts): {ratio:.0f}x ({t1:.2f} s vs {tb:.3f} s)")
    ratio, first, second, gen, skipped, n, per_job = bench_rerun(a.model)
    print(
        f"5. rerun of a finished sweep / first run: {ratio:.1%} ({second:.1f} s vs {first:.1f} s); rerun "
        f"generations {gen}, jobs skipped {skipped}/{n} (no scorer built for skipped jobs)  [target <= 5%, 0]"
    )
    print(
        f"6. per-job overhead of an in-process multirun (marginal cost of one more complete job): "
        f"{per_job:.2f} s/job  [target <= 1 s]"
    )


if __name__ == "__main__":
    main()
