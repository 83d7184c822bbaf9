"""A synthetic evaluation store of the paper's size, in the project's exact layout.

    python perf/gen_paper_store.py --out /tmp/paper_store [--profiles 154] [--mitigations 2]
        [--prompts 3000] [--samples 10] [--no-vanilla] [--seed 0]

Defaults: the paper's RealToxicityPrompts part, 154 value-aligned (VIM) profiles x 2 mitigations x 3,000
prompts x 10 samples = 9.24 M scored samples (~4 GB), plus the vanilla model under the same mitigations
(the reference every comparison needs; 60,000 more rows). The paper's whole study (HolisticBiasR,
HEx-PHI and BeaverTails as well) is ~15 M samples; RTP is the bulk of it.

Everything is written by the project's own code, so analyze.py reads the store as a real one:
folders from store.layout.eval_dir, metrics from eval.measures.compute_metrics, results.json +
samples.jsonl + the COMPLETE marker (with both checksums) from store.records.write_result; the profiles
are the paper's (core.profiles, in the paper's order). Only the texts and scores are synthetic: prompt
and continuation texts drawn from a fixed pool of clean words (so rtp_scoring_text keeps them as
they are), scores = prompt difficulty + model effect + mitigation effect + sample noise, clipped to
[0, 1]. Each sample line is ~450 bytes, as a real RTP line with Perspective scores.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from value_harms.core.profiles import VANILLA, load_profile, paper_order
from value_harms.eval.benchmarks.base import Prompt
from value_harms.eval.measures import compute_metrics
from value_harms.metrics.toxicity import rtp_scoring_text
from value_harms.store import layout, records
from value_harms.store.identity import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[1]
MITIGATIONS = ("none", "value_prompt", "safety_prompt", "both")
MODEL = "llama2_7b"
WORDS = (
    "the people who said that they would never go back to this place again were right about all of it "
    "and then she told him what he could do with his old car because nobody here ever listens to us"
).split()


def _texts(rng: np.random.Generator, n: int, words: int, end: str) -> list[str]:
    """n texts of `words` words from a clean vocabulary (letters and spaces only)."""
    picks = rng.integers(0, len(WORDS), size=(n, words))
    return [" ".join(WORDS[i] for i in row) + end for row in picks]


def _benchmark(prompts: int, samples: int):
    bench = OmegaConf.load(ROOT / "conf" / "benchmark" / "rtp.yaml")
    bench.limit, bench.num_samples = prompts, samples
    return bench


def _record(bench, profile, mitigation: str, metrics: dict, n: int, seed: int) -> dict:
    """results.json as eval.job.finish_job writes it (keys and nesting), for a synthetic result."""
    baseline = "vanilla" if profile.is_vanilla else "vim"
    facts = [MODEL, baseline, profile.name, bench.name, mitigation, seed]
    key = hashlib.sha256(repr(facts).encode()).hexdigest()[:16]
    return {
        "schema_version": SCHEMA_VERSION,
        "key": key,
        "train_key": None if profile.is_vanilla else hashlib.sha256(repr(facts[:3]).encode()).hexdigest()[:16],
        "benchmark": {
            "name": bench.name,
            "version": str(bench.version),
            "measure": bench.measure,
            "n_prompts": int(bench.limit),
            "prompts_sha256": "synthetic",
            "settings": OmegaConf.to_container(bench, resolve=True),
        },
        "model": {"name": MODEL, "base": "meta-llama/Llama-2-7b-hf", "revision": "main", "dtype": "float16"},
        "profile": profile.to_dict(),
        "baseline": baseline,
        "stage": "none" if profile.is_vanilla else "full",
        "mitigation": {"name": mitigation, "value_prompt": mitigation in ("value_prompt", "both")},
        "prefix": None,
        "generation": {"synthetic": True, "requested": n, "cached": 0, "generated": n},
        "scorer": {
            "measure": "toxicity",
            "by_scorer": {"perspective": n},
            "missing": 0,
            "n": n,
            "stand_in": False,
            "primary": "perspective",
            "fallback_share": 0.0,
            "filtered": 0,
        },
        "metrics": metrics,
        "seeds": {"generation": seed, "benchmark": int(bench.seed)},
        "git": None,
        "seconds": 0.0,
    }


def _samples(prompts: list[Prompt], scored: list[str], conts: list[str], cont_idx, scores) -> list[dict]:
    """The sample rows of one result in eval.job.score_and_aggregate's keys and order."""
    rows = []
    for p, prompt in enumerate(prompts):
        for k in range(scores.shape[1]):
            c = int(cont_idx[p, k])
            rows.append(
                {
                    "id": prompt.id,
                    "category": None,
                    "sample": k,
                    "prompt": prompt.prompt,
                    "continuation": conts[c],
                    "scored_text": scored[p][c],
                    "score": float(scores[p, k]),
                    "label": None,
                    "scorer": "perspective",
                    "error": None,
                }
            )
    return rows


def generate(out: Path, profiles: int, mitigations: int, prompts: int, samples: int, vanilla: bool, seed: int) -> int:
    """Write the store; returns the number of sample rows written."""
    # size: one loop over the results, each written by the project's writer
    if not 1 <= mitigations <= len(MITIGATIONS):
        sys.exit(f"error: --mitigations={mitigations}; expected 1 to {len(MITIGATIONS)}")
    names = paper_order()
    if not 1 <= profiles <= len(names):
        sys.exit(f"error: --profiles={profiles}; expected 1 to {len(names)} (the paper's profiles)")
    if prompts < 1 or samples < 1:
        sys.exit("error: --prompts and --samples must be at least 1")
    rng = np.random.default_rng(seed)
    bench = _benchmark(prompts, samples)
    plist = [
        Prompt(id=f"{i:05d}", prompt=t, category=None, meta={}) for i, t in enumerate(_texts(rng, prompts, 13, ""))
    ]
    conts = _texts(rng, 256, 15, ".")
    conts = [" " + c for c in conts]  # a model's continuation starts with a space
    # the scored text of every (prompt, continuation) pair, by the project's own function
    scored = [[rtp_scoring_text(p.prompt, c) for c in conts] for p in plist]
    difficulty = rng.beta(2.0, 5.0, prompts)  # prompt-level toxicity, mean ~0.29
    units = ([load_profile(VANILLA)] if vanilla else []) + [load_profile(n) for n in names[:profiles]]
    written, t0 = 0, time.perf_counter()
    for u, profile in enumerate(units):
        model_effect = 0.0 if profile.is_vanilla else float(rng.normal(0.03, 0.02))
        for m, mitigation in enumerate(MITIGATIONS[:mitigations]):
            scores = difficulty[:, None] + model_effect - 0.02 * m + rng.normal(0, 0.08, (prompts, samples))
            scores = np.round(np.clip(scores, 0.0, 1.0), 6)
            rows = _samples(plist, scored, conts, rng.integers(0, len(conts), (prompts, samples)), scores)
            metrics = compute_metrics(bench, plist, rows, primary="perspective")
            record = _record(bench, profile, mitigation, metrics, len(rows), seed)
            folder = layout.eval_dir(
                out,
                model=MODEL,
                variant=record["baseline"],
                stage=record["stage"],
                profile=profile.name,
                benchmark=bench.name,
                mitigation=mitigation,
                key=record["key"],
            )
            records.write_result(folder, record, rows, missing=0)
            written += len(rows)
        done = u + 1
        if done % 10 == 0 or done == len(units):
            rate = written / max(time.perf_counter() - t0, 1e-9)
            print(f"{done}/{len(units)} models, {written:,} rows, {rate:,.0f} rows/s", flush=True)
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="store folder to create (results go under <out>/eval)")
    ap.add_argument("--profiles", type=int, default=154)
    ap.add_argument("--mitigations", type=int, default=2, help=f"the first N of {', '.join(MITIGATIONS)}")
    ap.add_argument("--prompts", type=int, default=3000)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--no-vanilla", action="store_true", help="leave out the vanilla reference model")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if (a.out / "eval").exists():
        sys.exit(f"error: {a.out / 'eval'} exists; give a new --out folder")
    t0 = time.perf_counter()
    n = generate(a.out, a.profiles, a.mitigations, a.prompts, a.samples, not a.no_vanilla, a.seed)
    size = sum(f.stat().st_size for f in (a.out / "eval").rglob("*") if f.is_file())
    print(f"wrote {n:,} sample rows, {size / 1e9:.2f} GB, in {time.perf_counter() - t0:.0f} s under {a.out / 'eval'}")


if __name__ == "__main__":
    main()
