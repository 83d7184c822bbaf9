"""Kill-and-rerun fault sweep of the whole pipeline (train.py -> evaluate.py -> analyze.py).

    python tests/fault_sweep.py --iterations 10 [--seed 0] [--workdir DIR] [--keep] [--json FILE]

A calibration run measures, from the processes' own log lines, when each phase starts and ends:
training (per job of the train multirun), generation and scoring (per job of the evaluate multirun:
the `generating:` and `scoring:` lines of value_harms.eval.task) and analysis. Each iteration then,
in a fresh output + cache folder (the tiny model is shared through a symlink):

1. starts the pipeline and SIGKILLs the running subprocess at a random moment: a seeded RNG picks
   the phase, the job and a delay within the calibrated duration of that phase, counted from the
   live run's own marker line (nothing is slowed down);
2. snapshots the store: complete results (mtime + sha256), resumable training steps (last.ckpt
   present, COMPLETE absent);
3. reruns the whole pipeline to completion and checks: every expected result exists exactly once
   (one store folder per (model, stage, profile) for training and per (profile, benchmark,
   mitigation) for evaluation) with COMPLETE, parseable results.json / train_result.json and
   samples.jsonl of the right length; no leftover temporary files in the store; results complete
   before the kill are untouched (mtime and bytes) and reported as skipped; an interrupted training
   step with a last.ckpt resumed from it; every trained adapter (sha256), its best step and
   validation loss and its PVQ check equal the calibration (uninterrupted) run's, and so do the
   evaluation samples.

Prints one summary line (`fault_sweep: ...`) and exits 0 when every iteration passed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ["Pow", "Uni", "Sec"]
EVAL_PROFILES = ["vanilla", *PROFILES]
N_PROMPTS, N_SAMPLES = 3, 2
PHASES = ("training", "generation", "scoring", "analysis")

_JOB = re.compile(r"\[HYDRA\]\s+#(\d+) : ")
_GEN = "[value_harms.eval.job][INFO] - generating:"
_SCORE = "[value_harms.eval.job][INFO] - scoring:"


def data_dir() -> Path:
    return Path(os.environ.get("VALUE_HARMS_DATA_DIR") or ROOT.parent / "shared" / "data")


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        {
            "WANDB_MODE": "offline",
            "WANDB_SILENT": "true",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return e


def commands(out: Path, cache: Path, tag: str) -> list[tuple[str, list[str]]]:
    """The pipeline: (phase group, argv) for train, evaluate, analyze."""
    common = [
        "model=tiny",
        "logger=none",
        f"paths.output_dir={out}",
        f"paths.cache_dir={cache}",
        f"paths.data_dir={data_dir()}",
    ]
    py = sys.executable
    return [
        (
            "train",
            [
                py,
                str(ROOT / "train.py"),
                "-m",
                "debug=fast",
                "vim_stage=ag",
                "value_profile=" + ",".join(PROFILES),
                "alignment.max_new_tokens=4",
                "trainer.max_steps=30",
                "train.checkpoint_every_n_steps=5",
                "trainer.enable_progress_bar=false",
                *common,
                f"hydra.sweep.dir={out}/sweeps/train_{tag}",
            ],
        ),
        (
            "evaluate",
            [
                py,
                str(ROOT / "evaluate.py"),
                "-m",
                "debug=fast",
                "vim_stage=ag",
                "trainer.max_steps=30",
                "value_profile=" + ",".join(EVAL_PROFILES),
                "benchmark=rtp",
                f"benchmark.limit={N_PROMPTS}",
                f"benchmark.num_samples={N_SAMPLES}",
                "benchmark.max_new_tokens=8",
                "scorer=profanity_check",
                "generation.progress=false",
                *common,
                f"hydra.sweep.dir={out}/sweeps/evaluate_{tag}",
            ],
        ),
        ("analyze", [py, str(ROOT / "analyze.py"), *common, f"hydra.run.dir={out}/sweeps/analyze_{tag}"]),
    ]


class Proc:
    """A subprocess whose output lines are recorded with their arrival time."""

    def __init__(self, argv: list[str], log: Path):
        self.t0 = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self._fh = open(log, "a", encoding="utf-8")
        self._fh.write(f"\n$ {' '.join(argv)}\n")
        self.p = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            errors="replace",
        )
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.p.stdout:  # type: ignore[union-attr]
            with self._cv:
                self.lines.append((time.monotonic() - self.t0, line.rstrip("\n")))
                self._cv.notify_all()
            self._fh.write(line)
        with self._cv:
            self._cv.notify_all()

    def wait_for(self, pred, nth: int = 0, timeout: float = 600.0) -> float | None:
        """Time (since start) of the nth line matching pred; None when the process ended first."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                hits = [t for t, line in self.lines if pred(line)]
                if len(hits) > nth:
                    return hits[nth]
                if self.p.poll() is not None and not self._thread.is_alive():
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cv.wait(min(left, 0.05))

    def kill(self) -> bool:
        """SIGKILL; True when the process was still running."""
        alive = self.p.poll() is None
        if alive:
            self.p.send_signal(signal.SIGKILL)
        self.finish()
        return alive

    def finish(self, timeout: float | None = None) -> int:
        rc = self.p.wait(timeout=timeout)
        self._thread.join(timeout=10)
        self._fh.close()
        return rc

    @property
    def duration(self) -> float:
        return self.lines[-1][0] if self.lines else 0.0


def job_pred(k: int):
    return lambda line: (m := _JOB.search(line)) is not None and int(m.group(1)) == k


# ------------------------------------------------------------------------------------ calibration
def calibrate(work: Path, shared_models: Path) -> dict[str, Any]:
    out, cache = fresh_dirs(work / "calibration", shared_models)
    log = work / "calibration" / "pipeline.log"
    cal: dict[str, Any] = {}
    for group, argv in commands(out, cache, "run"):
        t_start = time.monotonic()
        proc = Proc(argv, log)
        rc = proc.finish()
        end = time.monotonic() - proc.t0
        if rc != 0:
            raise RuntimeError(f"calibration {group} failed (rc {rc}); see {log}")
        lines = proc.lines

        def times(pred, lines=lines):
            return [t for t, line in lines if pred(line)]

        if group == "train":
            starts = [times(job_pred(k))[0] for k in range(len(PROFILES))]
            cal["train_jobs"] = [(s, e) for s, e in zip(starts, starts[1:] + [end])]
        elif group == "evaluate":
            starts = [times(job_pred(k))[0] for k in range(len(EVAL_PROFILES))]
            gens, scores = times(lambda line: _GEN in line), times(lambda line: _SCORE in line)
            if len(gens) != len(EVAL_PROFILES) or len(scores) != len(EVAL_PROFILES):
                raise RuntimeError(
                    f"calibration: {len(gens)} generation / {len(scores)} scoring markers "
                    f"for {len(EVAL_PROFILES)} jobs; see {log}"
                )
            ends = starts[1:] + [end]
            cal["generation"] = [s2 - g for g, s2 in zip(gens, scores)]
            cal["scoring"] = [e - s for s, e in zip(scores, ends)]
        else:
            cal["analysis"] = end
        cal[f"{group}_seconds"] = round(time.monotonic() - t_start, 2)
    cal["results"] = {rel: sha(out / "store" / rel / "samples.jsonl") for rel in eval_store_paths(out)}
    cal["train"] = {prof: train_identity(out, prof) for prof in PROFILES}
    return cal


# ------------------------------------------------------------------------------------ store checks
def fresh_dirs(base: Path, shared_models: Path) -> tuple[Path, Path]:
    out, cache = base / "out", base / "cache"
    out.mkdir(parents=True)
    cache.mkdir(parents=True)
    (cache / "models").symlink_to(shared_models, target_is_directory=True)
    return out, cache


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stamp(path: Path) -> tuple[int, str]:
    return path.stat().st_mtime_ns, sha(path)


def eval_store_paths(out: Path) -> dict[str, Path]:
    """store/eval/... fingerprint folders, relative, keyed by their path."""
    root = out / "store"
    return {str(p.relative_to(root)): p for p in sorted((root / "eval").glob("*/*/*/*/*/*/*")) if p.is_dir()}


def train_identity(out: Path, prof: str) -> dict[str, Any] | None:
    """What an interruption must not change in a training result: adapter bytes, best step and
    validation loss, steps trained, the PVQ check (its file path aside)."""
    found = sorted((out / "store" / "train" / "tiny" / "ag" / prof).glob("*/train_result.json"))
    if len(found) != 1:
        return None
    res = json.loads(found[0].read_text())
    fit = res.get("steps", {}).get("ag", {})
    adapter = found[0].parent / "ag" / "adapter"
    # adapter_sha256 also hashes base_model_name_or_path, the base model's path in this iteration's
    # own cache folder: compare the weights' bytes and the rest of the adapter config instead
    config = json.loads((adapter / "adapter_config.json").read_text())
    config.pop("base_model_name_or_path", None)
    return {
        "adapter_weights_sha256": sha(adapter / "adapter_model.safetensors"),
        "adapter_config": config,
        "best_step": fit.get("best_step"),
        "best_val_loss": fit.get("best_val_loss"),
        "global_step": fit.get("global_step"),
        "alignment": {k: v for k, v in (res.get("alignment") or {}).items() if k != "items_path"},
    }


def snapshot(out: Path) -> dict[str, Any]:
    """What the store holds right after the kill."""
    store = out / "store"
    snap: dict[str, Any] = {"complete_files": {}, "train_steps_complete": [], "resumable": {}, "tmp": []}
    for prof in PROFILES:
        for fp in sorted((store / "train" / "tiny" / "ag" / prof).glob("*")):
            step = fp / "ag"
            if (step / "COMPLETE").is_file():
                snap["train_steps_complete"].append(prof)
                for f in [step / "COMPLETE", *sorted((step / "adapter").glob("*"))]:
                    snap["complete_files"][str(f.relative_to(store))] = stamp(f)
            elif (step / "ckpt" / "last.ckpt").is_file():
                import torch

                ck = torch.load(step / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
                snap["resumable"][prof] = int(ck["global_step"])
    for rel, fp in eval_store_paths(out).items():
        if (fp / "COMPLETE").is_file():
            for name in ("COMPLETE", "results.json", "samples.jsonl"):
                snap["complete_files"][f"{rel}/{name}"] = stamp(fp / name)
    snap["tmp"] = leftovers(store)
    return snap


def leftovers(store: Path) -> list[str]:
    if not store.exists():
        return []
    return sorted(
        str(p.relative_to(store))
        for p in store.rglob("*")
        if p.name.endswith(".tmp") or ".old." in p.name or ".tmp-" in p.name
    )


def check(out: Path, snap: dict[str, Any], calibration: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Problems after the rerun (empty = pass) and facts worth counting."""
    from value_harms.models.lora import adapter_problem

    store = out / "store"
    problems: list[str] = []
    facts: dict[str, Any] = {"resumed": [], "skipped_train": [], "skipped_eval": 0, "identical_train": []}
    # training: one store folder per (model, stage, profile)
    for prof in PROFILES:
        fps = [p for p in (store / "train" / "tiny" / "ag" / prof).glob("*") if p.is_dir()]
        if len(fps) != 1:
            problems.append(f"train {prof}: {len(fps)} store folders")
            continue
        fp = fps[0]
        for f in (fp / "COMPLETE", fp / "ag" / "COMPLETE"):
            if not f.is_file():
                problems.append(f"train {prof}: no {f.relative_to(store)}")
        try:
            res = json.loads((fp / "train_result.json").read_text())
            done = json.loads((fp / "ag" / "COMPLETE").read_text())
        except (OSError, ValueError) as exc:
            problems.append(f"train {prof}: unreadable result ({exc})")
            continue
        if (bad := adapter_problem(fp / "ag" / "adapter")) is not None:
            problems.append(f"train {prof}: {bad}")
        if done["fit"].get("global_step") != 30:
            problems.append(f"train {prof}: global_step {done['fit'].get('global_step')} != 30")
        if res.get("alignment", {}).get("n_items") != 40:
            problems.append(f"train {prof}: alignment check missing")
        expected = calibration.get("train", {}).get(prof)
        got = train_identity(out, prof)
        if expected is not None and got != expected:
            diff = sorted(k for k in expected if (got or {}).get(k) != expected[k])
            problems.append(f"train {prof}: differs from the uninterrupted run ({', '.join(diff)})")
        elif expected is not None:
            facts["identical_train"].append(prof)
        if prof in snap["resumable"]:
            if str(done["fit"].get("resumed_from") or "").endswith("last.ckpt"):
                facts["resumed"].append((prof, snap["resumable"][prof]))
            else:
                problems.append(
                    f"train {prof}: a last.ckpt (step {snap['resumable'][prof]}) existed but the "
                    f"rerun did not resume from it"
                )
        if prof in snap["train_steps_complete"]:
            rerun = [
                json.loads(p.read_text()) for p in (out / "sweeps" / "train_rerun").glob(f"*_{prof}/train_result.json")
            ]
            if len(rerun) != 1:
                problems.append(f"train {prof}: {len(rerun)} rerun results")
            elif not (rerun[0].get("skipped") or rerun[0].get("steps", {}).get("ag", {}).get("skipped")):
                problems.append(f"train {prof}: complete before the kill but retrained")
            else:
                facts["skipped_train"].append(prof)
    # evaluation: one store folder per (profile, benchmark, mitigation)
    found = eval_store_paths(out)
    per_key: dict[tuple[str, ...], list[str]] = {}
    for rel in found:
        parts = rel.split("/")  # eval/<model>/<baseline>/<stage>/<profile>/<benchmark>/<mitigation>/<fp>
        per_key.setdefault((parts[4], parts[5], parts[6]), []).append(rel)
    expected = {(p, "rtp", "none") for p in EVAL_PROFILES}
    if set(per_key) != expected:
        problems.append(f"eval store keys {sorted(per_key)} != {sorted(expected)}")
    for key, rels in per_key.items():
        if len(rels) != 1:
            problems.append(f"eval {key}: {len(rels)} store folders")
        for rel in rels:
            fp = found[rel]
            if not (fp / "COMPLETE").is_file():
                problems.append(f"eval {rel}: no COMPLETE")
            try:
                res = json.loads((fp / "results.json").read_text())
                lines = [json.loads(x) for x in (fp / "samples.jsonl").read_text().splitlines()]
            except (OSError, ValueError) as exc:
                problems.append(f"eval {rel}: unreadable ({exc})")
                continue
            if len(lines) != N_PROMPTS * N_SAMPLES:
                problems.append(f"eval {rel}: {len(lines)} samples, {N_PROMPTS * N_SAMPLES} expected")
            if res["metrics"]["overall"].get("missing_samples") != 0:
                problems.append(f"eval {rel}: missing samples")
            if calibration.get("results", {}).get(rel) not in (None, sha(fp / "samples.jsonl")):
                facts.setdefault("differs_from_uninterrupted", []).append(rel)
                problems.append(f"eval {rel}: samples differ from the uninterrupted run")
    for p in (out / "sweeps" / "evaluate_rerun").glob("*_*/results.json"):
        if json.loads(p.read_text()).get("skipped"):
            facts["skipped_eval"] += 1
    # untouched complete work
    for rel, (mtime, digest) in snap["complete_files"].items():
        f = store / rel
        if not f.is_file():
            problems.append(f"{rel}: complete before the kill, gone after the rerun")
        elif stamp(f) != (mtime, digest):
            problems.append(f"{rel}: complete before the kill, rewritten by the rerun")
    n_complete_eval = sum(1 for r in snap["complete_files"] if r.startswith("eval/") and r.endswith("/COMPLETE"))
    if facts["skipped_eval"] != n_complete_eval:
        problems.append(
            f"evaluation: {n_complete_eval} results complete before the kill, "
            f"{facts['skipped_eval']} skipped by the rerun"
        )
    # leftovers and the analysis
    if tmp := leftovers(store):
        problems.append(f"leftover temporary files in the store: {tmp[:5]}")
    try:
        json.loads((out / "sweeps" / "analyze_rerun" / "analysis.json").read_text())
        json.loads((out / "analysis" / "auto_mitigation.json").read_text())
    except (OSError, ValueError) as exc:
        problems.append(f"analysis output missing or unreadable ({exc})")
    return problems, facts


# ------------------------------------------------------------------------------------ iterations
@dataclass
class Iteration:
    index: int
    phase: str
    job: int
    delay_s: float
    killed: bool = False
    observed: str = ""
    leftovers_at_kill: int = 0
    complete_at_kill: int = 0
    resumable: dict = field(default_factory=dict)
    resumed: list = field(default_factory=list)
    skipped_train: list = field(default_factory=list)
    skipped_eval: int = 0
    differs_from_uninterrupted: list = field(default_factory=list)
    identical_train: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.problems


def observed_phase(group: str, proc: Proc) -> str:
    """The phase the killed process was in, read from its last marker lines."""
    last = ""
    for _, line in proc.lines:
        if _JOB.search(line):
            last = "setup"
        elif _GEN in line:
            last = "generation"
        elif _SCORE in line:
            last = "scoring"
    if group == "train":
        return "training"
    if group == "analyze":
        return "analysis"
    return f"evaluate-{last or 'startup'}"


def run_iteration(
    i: int, rng: random.Random, phase: str, cal: dict[str, Any], work: Path, shared_models: Path
) -> Iteration:
    t0 = time.monotonic()
    base = work / f"iter_{i:02d}"
    out, cache = fresh_dirs(base, shared_models)
    log = base / "pipeline.log"
    if phase == "training":
        job = rng.randrange(len(PROFILES))
        s, e = cal["train_jobs"][job]
        delay = rng.uniform(0, e - s)
    elif phase in ("generation", "scoring"):
        job = rng.randrange(len(EVAL_PROFILES))
        delay = rng.uniform(0, cal[phase][job])
    else:
        job, delay = 0, rng.uniform(0, cal["analysis"])
    it = Iteration(i, phase, job, round(delay, 3))
    target_group = {"training": "train", "generation": "evaluate", "scoring": "evaluate", "analysis": "analyze"}[phase]
    # 1. the pipeline, killed at the chosen moment
    for group, argv in commands(out, cache, "kill"):
        proc = Proc(argv, log)
        if group != target_group:
            if proc.finish() != 0:
                it.problems.append(f"{group} failed before the kill; see {log}")
                return it
            continue
        if phase == "training":
            t_mark = proc.wait_for(job_pred(job))
        elif phase == "generation":
            t_mark = proc.wait_for(lambda line: _GEN in line, nth=job)
        elif phase == "scoring":
            t_mark = proc.wait_for(lambda line: _SCORE in line, nth=job)
        else:
            t_mark = 0.0
        if t_mark is not None:
            time.sleep(max(0.0, proc.t0 + t_mark + delay - time.monotonic()))
        it.observed = observed_phase(group, proc)
        it.killed = proc.kill()
        break
    # 2. what the kill left
    snap = snapshot(out)
    it.leftovers_at_kill = len(snap["tmp"])
    it.complete_at_kill = sum(1 for r in snap["complete_files"] if r.endswith("/COMPLETE"))
    it.resumable = dict(snap["resumable"])
    # 3. rerun everything to completion
    for group, argv in commands(out, cache, "rerun"):
        proc = Proc(argv, log)
        rc = proc.finish()
        if rc != 0:
            it.problems.append(f"rerun {group} failed (rc {rc}); see {log}")
            it.seconds = round(time.monotonic() - t0, 1)
            return it
    problems, facts = check(out, snap, cal)
    it.problems += problems
    it.resumed = facts["resumed"]
    it.skipped_train = facts["skipped_train"]
    it.skipped_eval = facts["skipped_eval"]
    it.differs_from_uninterrupted = facts.get("differs_from_uninterrupted", [])
    it.identical_train = facts["identical_train"]
    it.seconds = round(time.monotonic() - t0, 1)
    return it


def sweep(
    iterations: int,
    seed: int = 0,
    workdir: str | None = None,
    keep: bool = False,
    progress=print,
    kill_phases: tuple[str, ...] = PHASES,
) -> dict[str, Any]:
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="fault_sweep_"))
    work.mkdir(parents=True, exist_ok=True)
    shared_models = work / "shared_models"
    shared_models.mkdir(exist_ok=True)
    rng = random.Random(seed)
    t0 = time.monotonic()
    cal = calibrate(work, shared_models)
    progress(
        f"calibration: train {cal['train_seconds']}s, evaluate {cal['evaluate_seconds']}s, "
        f"analyze {cal['analyze_seconds']}s; generation per job {[round(x, 3) for x in cal['generation']]}s, "
        f"scoring per job {[round(x, 3) for x in cal['scoring']]}s"
    )
    # every phase is hit: a seeded shuffle of the phases, repeated
    order: list[str] = []
    while len(order) < iterations:
        block = list(kill_phases)
        rng.shuffle(block)
        order += block
    results = []
    for i in range(iterations):
        it = run_iteration(i, rng, order[i], cal, work, shared_models)
        results.append(it)
        progress(
            f"iteration {i}: phase={it.phase} job={it.job} delay={it.delay_s}s observed={it.observed} "
            f"killed={it.killed} complete_at_kill={it.complete_at_kill} resumable={it.resumable} "
            f"resumed={it.resumed} leftovers_at_kill={it.leftovers_at_kill} {it.seconds}s "
            f"{'PASS' if it.passed else 'FAIL: ' + '; '.join(it.problems)}"
        )
        if it.passed and not keep:
            shutil.rmtree(work / f"iter_{i:02d}", ignore_errors=True)
    phases: dict[str, int] = {}
    for it in results:
        phases[it.observed] = phases.get(it.observed, 0) + 1
    summary = {
        "iterations": iterations,
        "passed": sum(it.passed for it in results),
        "killed": sum(it.killed for it in results),
        "phases_chosen": {p: sum(it.phase == p for it in results) for p in kill_phases},
        "phases_observed": phases,
        "resumable": sum(len(it.resumable) for it in results),
        "resumed": sum(len(it.resumed) for it in results),
        "leftovers_at_kill": sum(it.leftovers_at_kill for it in results),
        "differs_from_uninterrupted": sum(len(it.differs_from_uninterrupted) for it in results),
        # resumed training jobs whose adapter, best step and PVQ check equal the uninterrupted run's
        "resumed_identical": sum(sum(p in it.identical_train for p, _ in it.resumed) for it in results),
        "mean_iteration_s": round(sum(it.seconds for it in results) / max(1, len(results)), 1),
        "total_s": round(time.monotonic() - t0, 1),
        "calibration": {k: v for k, v in cal.items() if k not in ("results", "train")},
        "workdir": str(work),
        "details": [asdict(it) for it in results],
    }
    if not keep and summary["passed"] == iterations:
        shutil.rmtree(work, ignore_errors=True)
    return summary


def summary_line(s: dict[str, Any]) -> str:
    return (
        f"fault_sweep: iterations={s['iterations']} passed={s['passed']} killed={s['killed']} "
        f"phases_chosen={s['phases_chosen']} phases_observed={s['phases_observed']} "
        f"resumed={s['resumed']}/{s['resumable']} leftovers_at_kill={s['leftovers_at_kill']} "
        f"differs_from_uninterrupted={s['differs_from_uninterrupted']} "
        f"resumed_identical={s['resumed_identical']}/{s['resumed']} "
        f"mean_iteration_s={s['mean_iteration_s']} total_s={s['total_s']}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="where iterations run (default: a new temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep every iteration's folder")
    ap.add_argument("--json", default=None, help="write the full summary here")
    ap.add_argument("--phases", default=",".join(PHASES), help="phases to kill in (comma-separated)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    phases = tuple(x for x in args.phases.split(",") if x)
    if not phases or set(phases) - set(PHASES):
        ap.error(f"--phases: choose from {','.join(PHASES)}")
    s = sweep(
        args.iterations, args.seed, args.workdir, args.keep, progress=lambda m: print(m, flush=True), kill_phases=phases
    )
    if args.json:
        Path(args.json).write_text(json.dumps(s, indent=2, default=str))
    print(summary_line(s), flush=True)
    if s["passed"] != s["iterations"]:
        print(f"failed iterations kept in {s['workdir']}", flush=True)
    return 0 if s["passed"] == s["iterations"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
