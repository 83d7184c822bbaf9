"""`make demo`: the main job end to end on the embedded defaults (SmolLM2-135M on CPU).

Runs exactly what a user would type (`python train.py -m experiment=demo value_profile=...`), then
reads the jobs' results from disk and prints the PVQ value-alignment table, saying plainly whether
value injection moved the model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from value_harms.alignment import AlignmentResult, format_alignment_table

ROOT = Path(__file__).resolve().parents[2]


def collect_alignment(sweep_dir: Path) -> tuple[dict[str, AlignmentResult], dict[str, dict | None]]:
    """Alignment results of every job of a training sweep, keyed by profile name (job order)."""
    results: dict[str, AlignmentResult] = {}
    targets: dict[str, dict | None] = {}
    for res_file in sorted(sweep_dir.glob("*/train_result.json"), key=lambda p: int(p.parent.name.split("_")[0])):
        res = json.loads(res_file.read_text())
        if not res.get("alignment"):
            continue
        name = res["profile"]["name"]
        results[name] = AlignmentResult.from_dict(res["alignment"])
        targets[name] = res["profile"].get("values")
    return results, targets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", default="vanilla,Pow,Uni", help="comma-separated value profiles")
    ap.add_argument("--out", default="outputs/demo", help="folder of the demo sweeps")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. trainer.max_steps=60")
    args = ap.parse_args(argv)

    sweep_dir = Path(args.out) / time.strftime("%Y-%m-%d_%H-%M-%S")
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", "experiment=demo", f"value_profile={args.profiles}",
           f"hydra.sweep.dir={sweep_dir}", *args.overrides]
    print("$", " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if rc != 0:
        print(f"demo: training sweep failed (exit {rc}); logs are in {sweep_dir}", file=sys.stderr)
        return rc
    elapsed = time.perf_counter() - t0
    results, targets = collect_alignment(ROOT / sweep_dir if not sweep_dir.is_absolute() else sweep_dir)
    print()
    print(f"PVQ value alignment after VIM ({len(results)} runs, {elapsed:.0f} s; results in {sweep_dir})")
    src = {r.settings.get("items_source") for r in results.values()} - {None}
    print(format_alignment_table(results, targets))
    for res_file in sorted(Path(sweep_dir).glob("*/train_result.json")):
        res = json.loads(res_file.read_text())
        al = res.get("alignment") or {}
        if al.get("items_source") == "demo_items":
            print("note: the PVQ-40 items were not found; the table uses the project's own demo items.")
            break
    del src
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
