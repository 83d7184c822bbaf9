"""analyze.py on a paper-sized store, twice: the first analysis and the re-analysis of the unchanged store.

    python perf/bench_analyze_store.py --store /tmp/paper_store [--work /tmp/bench_analyze]
        [--generate] [--profiles 154 --mitigations 2 --prompts 3000 --samples 10] [--before REV]

Each run is `analyze.py analysis.inputs=[<store>/eval]` in its own process under `/usr/bin/time -v`
(wall time, peak resident memory), with a parse cache (paths.cache_dir) that starts empty: run 1 parses
every samples.jsonl, run 2 should read only the cached prompt-level tables (goals:
<= 2 minutes first, <= 10 s again, <= 4 GB peak). It prints both runs, their ratio, what the parse
cache did, and whether the two runs' tables (baselines, mitigation, regressions CSVs) are identical.
`--generate` writes the store first with perf/gen_paper_store.py (sizes from the flags). `--before REV`
also times the same analysis with the code of git revision REV (e.g. the commit before the cache),
from a `git archive` copy, on the same machine in the same call.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("baselines.csv", "mitigation.csv", "regressions.csv")


def run_analyze(store: Path, out: Path, cache: Path, tree: Path = ROOT) -> dict:
    """One analyze.py process (code from `tree`): wall seconds, peak RSS (GB), parse-cache counts, report folder."""
    cmd = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        str(tree / "analyze.py"),
        f"analysis.inputs=[{store / 'eval'}]",
        "logger=none",
        f"paths.output_dir={out}",
        f"paths.cache_dir={cache}",
        f"analysis.auto_mitigation_file={out}/auto_mitigation.json",
    ]
    env = None
    if tree != ROOT:  # the other revision's package first on the path (before the editable install)
        env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"error: analyze.py failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    cpu = sum(float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", proc.stderr))
    cache_line = re.search(r"(\d+) result\(s\) from the parse cache, (\d+) parsed", proc.stdout + proc.stderr)
    report = re.search(r"report: (\S+)", proc.stdout)
    return {
        "wall": wall,
        "cpu": cpu,
        "rss_gb": int(rss.group(1)) / 1024**2 if rss else float("nan"),
        "hits": int(cache_line.group(1)) if cache_line else None,
        "parsed": int(cache_line.group(2)) if cache_line else None,
        "report_dir": Path(report.group(1)).parent if report else None,
    }


def same_tables(a: Path | None, b: Path | None) -> str:
    if a is None or b is None:
        return "not compared (no report folder printed)"
    diff = [
        t
        for t in TABLES
        if (a / t).is_file() != (b / t).is_file()
        or ((a / t).is_file() and (a / t).read_bytes() != (b / t).read_bytes())
    ]
    return "identical" if not diff else f"DIFFER: {', '.join(diff)}"


def _before(rev: str, work: Path) -> Path:
    tree = work / f"tree-{rev}"
    if not tree.exists():
        tree.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_analyze"), help="outputs and caches (emptied)")
    ap.add_argument("--generate", action="store_true", help="write the store first (perf/gen_paper_store.py)")
    ap.add_argument("--profiles", type=int, default=154)
    ap.add_argument("--mitigations", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=3000)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--before", help="also time the analysis with the code of this git revision")
    ap.add_argument("--stages", action="store_true", help="then profile the re-analysis's steps in-process")
    a = ap.parse_args(argv)
    if a.generate:
        sys.path.insert(0, str(ROOT / "perf"))
        from gen_paper_store import generate

        generate(a.store, a.profiles, a.mitigations, a.prompts, a.samples, True, 0)
    if not (a.store / "eval").is_dir():
        sys.exit(f"error: {a.store / 'eval'} does not exist; pass --generate or a store from perf/gen_paper_store.py")
    for sub in ("out1", "out2", "out0", "cache", "cache0"):
        shutil.rmtree(a.work / sub, ignore_errors=True)
    rows = []
    load0 = " ".join(f"{x:.1f}" for x in os.getloadavg())
    if a.before:
        rows.append(
            (
                f"{a.before} (before)",
                run_analyze(a.store, a.work / "out0", a.work / "cache0", _before(a.before, a.work)),
            )
        )
    first = run_analyze(a.store, a.work / "out1", a.work / "cache")
    second = run_analyze(a.store, a.work / "out2", a.work / "cache")
    rows += [("first analysis", first), ("re-analysis, unchanged store", second)]
    size = sum(f.stat().st_size for f in (a.store / "eval").rglob("samples.jsonl"))
    print(f"store: {a.store / 'eval'}, samples.jsonl total {size / 1e9:.2f} GB")
    print(f"load average before the runs: {load0}, after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("| run | wall s | CPU s (user + sys) | peak RSS GB | results from cache | parsed |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['rss_gb']:.2f} | {r['hits']} | {r['parsed']} |")
    print(f"re-analysis / first: {second['wall'] / first['wall']:.3f}")
    print(f"tables of the two runs: {same_tables(first['report_dir'], second['report_dir'])}")
    if a.stages:
        stages(a.store, a.work / "out3", a.work / "cache")


# Steps of the analyze task whose cumulative time --stages prints (absent names are skipped).
STAGES = (
    "load_results",
    "find_results",
    "prompt_values",
    "compare_prompt_level",
    "pooled_components",
    "mitigation_prompt_level",
    "value_regressions",
    "compare_baselines",
    "mitigation_effects",
    "write_report",
    "make_figures",
)


def stages(store: Path, out: Path, cache: Path) -> None:
    """The analyze task in this process under cProfile (warm parse cache): cumulative seconds per step.
    The profiler adds overhead; the figures rank the steps, the runs above are the timings."""
    import cProfile
    import pstats

    from hydra import compose, initialize_config_dir

    import value_harms.config.schema  # noqa: F401 - registers the typed schemas in Hydra's ConfigStore
    from value_harms.analysis.task import run_analyze

    overrides = [f"analysis.inputs=[{store / 'eval'}]", "logger=none", f"paths.output_dir={out}"]
    overrides += [f"paths.cache_dir={cache}", f"analysis.auto_mitigation_file={out}/auto_mitigation.json"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("analyze", overrides=overrides)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(run_analyze, cfg)
    total = time.perf_counter() - t0
    found = {fn[2]: v[3] for fn, v in pstats.Stats(prof).stats.items() if fn[2] in STAGES}
    print(f"\nsteps of the re-analysis in one process under cProfile ({total:.1f} s in all, imports included):")
    for name in STAGES:
        if name in found:
            print(f"  {name:26s} {found[name]:6.2f} s")


if __name__ == "__main__":
    main()
