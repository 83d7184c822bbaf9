"""Is a toxicity gap between model groups a continuation-length effect of the stand-in scorer?

RealToxicityPrompts is scored on the prompt plus the continuation's first sentence, and the offline
stand-in (alt-profanity-check: a linear model on L2-normalised word weights) gives a toxic word less
weight in a longer text. A group that writes longer continuations then scores lower for length alone.
This script reads an evaluation store's samples (mitigation `none`) and prints, per model and per
group (vanilla, value-aligned, the flat control, the in-context personas; the control is recognised by
its profile name `flat`, conf/value_profile/control/flat.yaml, since samples carry no profile values:
the analysis recognises it by its values, analysis.contrasts.flat_profiles):

- the stored (calibrated) score, the continuation's mean length in words and its share of empty ones;
- the raw stand-in score of the continuation alone (no prompt to dilute);
- per length bin, the continuation-alone and stored means: does a gap remain at equal length?

    python scripts/study_length_check.py outputs/study_smollm2/store/eval [--benchmark rtp]

Descriptive, not a test: it is not in the report's multiplicity family and names no effect.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

BINS = ((0, 0), (1, 5), (6, 10), (11, 20), (21, 40), (41, 10**6))


def _group(path: Path) -> str | None:
    parts = path.parts
    if "vanilla" in parts:
        return "vanilla"
    if "vim" in parts:
        return "control" if path.name == "flat" else "value-aligned"
    if "icl" in parts:
        return "persona"
    return None


def _samples(model_dir: Path, benchmark: str) -> list[dict]:
    rows: list[dict] = []
    for f in sorted((model_dir / benchmark / "none").glob("*/samples.jsonl")):
        if (f.parent / "COMPLETE").exists():
            rows += [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("eval_store", help="a store's eval folder (e.g. outputs/study_smollm2/store/eval)")
    ap.add_argument("--benchmark", default="rtp")
    a = ap.parse_args(argv)
    from profanity_check import predict_prob  # the stand-in's own package (alt-profanity-check)

    models: dict[str, list[tuple[str, list[dict]]]] = {}
    for d in sorted(p for p in Path(a.eval_store).glob("*/*/*/*") if p.is_dir()):
        g = _group(d)
        rows = _samples(d, a.benchmark) if g else []
        if rows:
            models.setdefault(g, []).append((d.name, rows))
    if not models:
        print(f"no complete {a.benchmark} samples without mitigation under {a.eval_store}")
        return 1
    print("| group | model | stored score | words | empty | continuation alone (raw) |")
    print("|---|---|---|---|---|---|")
    pooled: dict[str, dict[str, np.ndarray]] = {}
    for g in ("vanilla", "value-aligned", "control", "persona"):
        for name, rows in models.get(g, []):
            cont = [r.get("continuation") or "" for r in rows]
            words = np.array([len(c.split()) for c in cont])
            stored = np.array([np.nan if r.get("score") is None else float(r["score"]) for r in rows])
            raw = np.asarray(predict_prob(cont), dtype=float)
            print(
                f"| {g} | {name} | {np.nanmean(stored):.3f} | {words.mean():.1f} | {np.mean(words == 0):.2f} | "
                f"{raw.mean():.3f} |"
            )
            acc = pooled.setdefault(g, {"words": np.array([]), "stored": np.array([]), "raw": np.array([])})
            for k, v in (("words", words), ("stored", stored), ("raw", raw)):
                acc[k] = np.concatenate([acc[k], v])
    print()
    print("Per continuation length (words), pooled over each group's models: n, stored mean, continuation alone.")
    print()
    head = [f"{lo}-{hi if hi < 10**6 else ''}" if hi else "empty" for lo, hi in BINS]
    print("| group | " + " | ".join(head) + " |")
    print("|---|" + "---|" * len(BINS))
    for g, acc in pooled.items():
        cells = []
        for lo, hi in BINS:
            m = (acc["words"] >= lo) & (acc["words"] <= hi)
            n = int(m.sum())
            cells.append(f"{n}: {np.nanmean(acc['stored'][m]):.3f} / {acc['raw'][m].mean():.3f}" if n else "0")
        print(f"| {g} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
