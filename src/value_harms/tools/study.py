"""`python -m value_harms.study`: run a whole study from its plan, resumably, and say where it stands.

    python -m value_harms.study run smollm2            # studies/smollm2.yaml, every stage in order
    python -m value_harms.study run smollm2 --only train --dry-run
    python -m value_harms.study status smollm2         # per stage: jobs done / expected, wall time, CPU hours
    python -m value_harms.study report smollm2         # the study document from the store (study_report)

A plan (`studies/<name>.yaml`) names the experiment preset, the launcher, the output folder and the
stages; each stage is one command a user could type (`python train.py -m ...`). The runner adds the
shared arguments (`experiment=`, `hydra/launcher=`, `logger.group=<name>/<stage>`, a fixed sweep folder
`<output_dir>/study/<stage>-<hash of its arguments>`) and runs the stages in order, each to the end
before the next. Resuming is the store's job: every job's result is content-keyed and a complete one
is skipped. When a stage's sweep folder already exists, only the jobs that `python -m value_harms.status`
finds not done are launched again (its rerun command, into `<sweep>/rerun_<k>/`); a killed study thus
loses at most the jobs in flight. Single-run stages (analyze.py) are run again each time (minutes).

The runner's own record, `<output_dir>/study/study.json`, keeps per stage the command, the sweep folder,
every attempt's start, end and exit status, and the SLURM accounting of its jobs per sweep folder (CPU
seconds allocated, `sacct` CPUTimeRAW = elapsed x CPUs), which `status` and the report read.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from value_harms.errors import ConfigError
from value_harms.store.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[3]
PLAN_DIR = ROOT / "studies"
SCRIPTS = ("train.py", "evaluate.py", "analyze.py")
PLAN_KEYS = {"name", "experiment", "launcher", "output_dir", "document", "profiles", "overrides", "design", "stages"}
OPTIONAL_KEYS = {"document", "profiles", "overrides", "design"}


@dataclass
class Stage:
    name: str
    script: str | None  # train.py / evaluate.py / analyze.py, or None for a `module` stage
    args: list[str]
    module: str | None = None  # a `python -m` tool (e.g. value_harms.power); its output is kept in output.txt

    @property
    def multirun(self) -> bool:
        return self.script in ("train.py", "evaluate.py")

    def argv(self, plan: Plan) -> list[str]:
        """The stage's command (without the sweep folder), as a user would type it."""
        if self.module:
            return ["python", "-m", self.module, *self.args]
        shared = [f"experiment={plan.experiment}", *plan.overrides, f"logger.group={plan.name}/{self.name}"]
        if self.multirun:
            return ["python", self.script, "-m", *self.args, *shared, f"hydra/launcher={plan.launcher}"]
        return ["python", self.script, *self.args, *shared]

    def folder(self, plan: Plan) -> Path:
        """Where the stage's sweep (or single run) lives: named by a hash of its command, so an edited
        stage starts a fresh folder and never mixes its jobs with the old command's."""
        digest = hashlib.sha256("\0".join(self.argv(plan)).encode()).hexdigest()[:8]
        return plan.study_dir / f"{self.name}-{digest}"


@dataclass
class Plan:
    name: str
    experiment: str
    launcher: str
    output_dir: Path
    document: Path
    profiles: dict[str, list[str]]
    stages: list[Stage] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)  # added to every stage's command
    design: dict[str, Any] = field(default_factory=dict)  # the pre-stated effect (read by the report)
    path: Path | None = None

    @property
    def study_dir(self) -> Path:
        return self.output_dir / "study"

    @property
    def record_path(self) -> Path:
        return self.study_dir / "study.json"


def _fail(path: Path, msg: str) -> ConfigError:
    return ConfigError(f"study plan {path}: {msg}")


def load_plan(name_or_path: str) -> Plan:
    """A plan by name (studies/<name>.yaml) or path, checked: one-line errors naming the bad field."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PLAN_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PLAN_DIR.glob("*.yaml"))) or "none"
        raise ConfigError(f"study plan {name_or_path!r} not found (expected a file or one of: {known})")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise _fail(path, "expected a mapping at the top")
    unknown, missing = sorted(set(data) - PLAN_KEYS), sorted(PLAN_KEYS - OPTIONAL_KEYS - set(data))
    if unknown or missing:
        raise _fail(path, f"unknown field(s) {unknown or 'none'}, missing {missing or 'none'}")
    profiles = {str(k): [str(x) for x in v] for k, v in (data.get("profiles") or {}).items()}
    out = Path(os.path.expanduser(str(data["output_dir"])))
    out = out if out.is_absolute() else ROOT / out
    subst = {k: ",".join(v) for k, v in profiles.items()} | {"output_dir": str(out)}
    stages = []
    for i, st in enumerate(data["stages"] or []):
        if not isinstance(st, dict) or set(st) - {"name", "script", "module", "args"} or "name" not in st:
            raise _fail(path, f"stage {i}: expected name, script or module, args; got {st!r}")
        script, module = st.get("script"), st.get("module")
        if (script is None) == (module is None) or (script is not None and script not in SCRIPTS):
            raise _fail(
                path,
                f"stage {st['name']!r}: script {script!r} / module {module!r}: expected one of "
                f"{', '.join(SCRIPTS)} or a python -m module",
            )
        try:
            args = [str(a).format(**subst) for a in st.get("args") or []]
        except KeyError as exc:
            raise _fail(path, f"stage {st['name']!r}: {{{exc.args[0]}}} names no list of `profiles`") from None
        stages.append(Stage(str(st["name"]), script, args, module=module))
    names = [s.name for s in stages]
    if len(set(names)) != len(names) or not names:
        raise _fail(path, f"stage names must be unique and at least one, got {names}")
    return Plan(
        name=str(data["name"]),
        experiment=str(data["experiment"]),
        launcher=str(data["launcher"]),
        output_dir=out,
        document=ROOT / str(data.get("document") or f"docs/STUDY-{data['name']}.md"),
        profiles=profiles,
        stages=stages,
        overrides=[str(x) for x in data.get("overrides") or []],
        design=dict(data.get("design") or {}),
        path=path,
    )


# ---------------------------------------------------------------------------------- the record
def read_record(plan: Plan) -> dict[str, Any]:
    try:
        return json.loads(plan.record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"plan": plan.name, "stages": {}}


def _write_record(plan: Plan, record: dict[str, Any]) -> None:
    plan.study_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(plan.record_path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def slurm_job_ids(sweep_dir: Path) -> list[str]:
    """The SLURM array ids submitit used for a sweep (its `.submitit/<id>` folders, reruns included)."""
    ids = set()
    for sub in [sweep_dir, *sorted(sweep_dir.glob("rerun_*"))]:
        for p in (sub / ".submitit").glob("*"):
            if p.is_dir():
                ids.add(p.name.split("_")[0])
    return sorted(ids)


def slurm_accounting(job_ids: list[str]) -> dict[str, Any] | None:
    """CPU seconds, elapsed seconds and states of the array tasks (sacct), or None without sacct."""
    if not job_ids:
        return None
    cmd = ["sacct", "-X", "-n", "-P", "-o", "JobID,State,ElapsedRaw,CPUTimeRAW", "-j", ",".join(job_ids)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    states: dict[str, int] = {}
    cpu = elapsed = 0
    for line in out.stdout.splitlines():
        parts = line.split("|")
        if len(parts) != 4:
            continue
        state = parts[1].split()[0] if parts[1] else "UNKNOWN"
        states[state] = states.get(state, 0) + 1
        elapsed += int(parts[2] or 0)
        cpu += int(parts[3] or 0)
    return {"tasks": sum(states.values()), "states": states, "cpu_seconds": cpu, "elapsed_seconds": elapsed}


def stage_folders(rec: dict[str, Any], folder: Path) -> list[str]:
    """Every sweep folder a stage has used: its current one and those its attempts' commands named."""
    found = {str(folder)}
    for attempt in rec.get("attempts", []):
        for arg in attempt.get("argv", []):
            if arg.startswith("hydra.sweep.dir="):
                found.add(arg.split("=", 1)[1].strip("'").split("/rerun_")[0])
    return sorted(found)


def stage_accounting(rec: dict[str, Any], folder: Path) -> dict[str, Any]:
    """SLURM accounting per sweep folder of a stage: asked from sacct now, else as recorded (cluster down)."""
    recorded = dict(rec.get("slurm_by_folder") or {})
    out = {}
    for f in sorted(set(stage_folders(rec, folder)) | set(recorded)):
        acct = slurm_accounting(slurm_job_ids(Path(f)))
        if acct is not None or f in recorded:
            out[f] = acct if acct is not None else recorded[f]
    return out


# ---------------------------------------------------------------------------------- running
def _env(plan: Plan) -> dict[str, str]:
    env = dict(os.environ)
    env["VALUE_HARMS_OUTPUT_DIR"] = str(plan.output_dir)
    env.setdefault("WANDB_MODE", "offline")
    return env


def stage_command(plan: Plan, stage: Stage) -> tuple[list[str], str]:
    """The command that (re)runs a stage now, and why: the whole sweep the first time, only the jobs not
    done when its sweep folder exists, the single run (analyze.py) every time."""
    folder = stage.folder(plan)
    base = stage.argv(plan)
    if stage.module:
        return base, "tool"
    if not stage.multirun:
        return [*base, f"hydra.run.dir={folder}"], "single run"
    if not (folder / "multirun.yaml").is_file():
        return [*base, f"hydra.sweep.dir={folder}"], "first run"
    from value_harms.tools.status import sweep_status

    st = sweep_status(folder)
    if st["all_done"]:
        return [], f"all {st['expected']} jobs done"
    if len(st["rerun"]) != 1:  # not one cartesian product: rerun the whole sweep (complete jobs skip)
        return [*st["rerun_all"]], f"{st['expected'] - len(st['done'])} jobs not done (whole sweep)"
    return [*st["rerun"][0]], f"{st['expected'] - len(st['done'])} of {st['expected']} jobs not done"


def _python(argv: list[str]) -> list[str]:
    return [sys.executable, *argv[1:]] if argv and argv[0] == "python" else argv


def run_stage(plan: Plan, stage: Stage, record: dict[str, Any], dry_run: bool = False) -> int:
    argv, why = stage_command(plan, stage)
    rec = record["stages"].setdefault(stage.name, {"attempts": []})
    rec.update(command=" ".join(shlex.quote(a) for a in stage.argv(plan)), folder=str(stage.folder(plan)))
    if not argv:
        print(f"[{stage.name}] {why}: skipped", flush=True)
        return 0
    print(f"[{stage.name}] {why}: {' '.join(shlex.quote(a) for a in argv)}", flush=True)
    if dry_run:
        return 0
    start = time.time()
    attempt = {"start": start, "argv": argv, "why": why}
    rec["attempts"].append(attempt)
    _write_record(plan, record)
    if stage.module:  # a tool's report is part of the study's record (the report quotes it)
        folder = stage.folder(plan)
        folder.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(_python(argv), cwd=ROOT, env=_env(plan), capture_output=True, text=True)
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        atomic_write_text(folder / "output.txt", proc.stdout + (f"\n[stderr]\n{proc.stderr}" if proc.stderr else ""))
        rc = proc.returncode
    else:
        rc = subprocess.run(_python(argv), cwd=ROOT, env=_env(plan)).returncode
    attempt.update(end=time.time(), rc=rc, wall_seconds=round(time.time() - start, 1))
    if stage.multirun:  # per sweep folder: an edited stage's earlier folders keep their own accounting
        rec["slurm_by_folder"] = stage_accounting(rec, stage.folder(plan))
    _write_record(plan, record)
    print(f"[{stage.name}] exit {rc} after {attempt['wall_seconds']:.0f} s", flush=True)
    return rc


@contextlib.contextmanager
def _runner_lock(plan: Plan) -> Iterator[None]:
    """One runner per study: a second `make study` beside a running one would launch the same jobs again
    and overwrite the record. Held for the whole run (an advisory lock: it goes with the process)."""
    plan.study_dir.mkdir(parents=True, exist_ok=True)
    with open(plan.study_dir / ".runner.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise ConfigError(
                f"study {plan.name} is already running ({holder}); `python -m value_harms.study status "
                f"{plan.name}` shows its progress"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _mark_interrupted(record: dict[str, Any]) -> list[str]:
    """Attempts that never recorded an end were killed with their runner (this runner holds the lock, so
    none of them is running): say so in the record. Returns the stages that had one."""
    hit = []
    for name, rec in record.get("stages", {}).items():
        for attempt in rec.get("attempts", []):
            if "rc" not in attempt:
                attempt.update(rc=None, end=None, interrupted=True)
                hit.append(name)
    return sorted(set(hit))


def run(plan: Plan, only: list[str] | None = None, dry_run: bool = False) -> int:
    names = [s.name for s in plan.stages]
    bad = [n for n in only or [] if n not in names]
    if bad:
        raise ConfigError(f"--only {','.join(bad)}: no such stage (stages: {', '.join(names)})")
    if dry_run:
        return _run(plan, only, dry_run)
    with _runner_lock(plan):
        return _run(plan, only, dry_run)


def _run(plan: Plan, only: list[str] | None, dry_run: bool) -> int:
    record = read_record(plan)
    if not dry_run and (stale := _mark_interrupted(record)):
        print(f"[study] attempts killed with an earlier runner, recorded as interrupted: {', '.join(stale)}")
        _write_record(plan, record)
    record["plan_path"] = str(plan.path)  # `python -m value_harms.status <output_dir>` finds the plan by it
    if not dry_run:
        record.setdefault("git", []).append(_git_commit())
    for stage in plan.stages:
        if only and stage.name not in only:
            continue
        rc = run_stage(plan, stage, record, dry_run=dry_run)
        if rc != 0:
            print(
                f"error: stage {stage.name} exited {rc}; its finished jobs are kept. See "
                f"`python -m value_harms.study status {plan.name}`, then rerun `make study` to resume.",
                file=sys.stderr,
            )
            return rc
    return 0


# ---------------------------------------------------------------------------------- status
def study_status(plan: Plan) -> list[dict[str, Any]]:
    """Per stage: state, jobs done / expected (multiruns), wall seconds over attempts, CPU hours (sacct)."""
    from value_harms.errors import SweepError
    from value_harms.tools.status import sweep_status

    record = read_record(plan)
    rows = []
    for stage in plan.stages:
        rec = record["stages"].get(stage.name, {})
        folder = stage.folder(plan)
        row = {"stage": stage.name, "folder": str(folder), "done": None, "expected": None}
        if stage.multirun and (folder / "multirun.yaml").is_file():
            try:
                st = sweep_status(folder)
                row.update(done=len(st["done"]), expected=st["expected"], state="done" if st["all_done"] else "open")
            except SweepError as exc:
                row["state"] = f"unreadable ({exc})"
        elif not stage.multirun and any(a.get("rc") == 0 for a in rec.get("attempts", [])):
            row["state"] = "done"
        else:
            row["state"] = "not started" if not rec.get("attempts") else "open"
        row["wall_seconds"] = sum(a.get("wall_seconds") or 0 for a in rec.get("attempts", []))
        row["attempts"] = len(rec.get("attempts", []))
        accts = list(stage_accounting(rec, folder).values()) if stage.multirun else []
        # CPU hours allocated to the stage's SLURM tasks (sacct CPUTimeRAW: elapsed x CPUs), every folder it used
        row["cpu_hours"] = round(sum(a["cpu_seconds"] for a in accts) / 3600, 3) if accts else None
        states: dict[str, int] = {}
        for a in accts:
            for k, v in a["states"].items():
                states[k] = states.get(k, 0) + v
        row["slurm_states"] = states or None
        rows.append(row)
    return rows


def format_status(plan: Plan, rows: list[dict[str, Any]]) -> str:
    lines = [
        f"study {plan.name}: {plan.output_dir}",
        f"{'stage':<16}{'state':<14}{'jobs':>9}{'wall min':>10}{'CPU h':>8}",
    ]
    for r in rows:
        jobs = f"{r['done']}/{r['expected']}" if r["expected"] is not None else "-"
        cpu = f"{r['cpu_hours']:.2f}" if r["cpu_hours"] is not None else "-"
        lines.append(f"{r['stage']:<16}{r['state']:<14}{jobs:>9}{r['wall_seconds'] / 60:>10.1f}{cpu:>8}")
    return "\n".join(lines)


def _study_record(folder: Path) -> str | None:
    """The plan path of a study whose output folder (or its `study/` folder) this is, else None."""
    for rec in (folder / "study.json", folder / "study" / "study.json"):
        if rec.is_file():
            try:
                data = json.loads(rec.read_text(encoding="utf-8"))
                return str(data.get("plan_path") or data["plan"])
            except (OSError, ValueError, KeyError):
                return None
    return None


def status_main(argv: list[str] | None = None) -> int:
    """`python -m value_harms.status FOLDER`: a study's output folder gets the per-stage study table,
    anything else is a sweep folder for `value_harms.tools.status` (which knows nothing of studies)."""
    from value_harms.tools.status import main as sweep_main

    args = list(sys.argv[1:] if argv is None else argv)
    folders = [a for a in args if not a.startswith("-")]
    study = _study_record(Path(folders[0])) if len(folders) == 1 else None
    if study is None:
        return sweep_main(args)
    return main(["status", study, *(["--json"] if "--json" in args else [])])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m value_harms.study", description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["run", "status", "report"])
    ap.add_argument("plan", help="a plan name (studies/<name>.yaml) or a path")
    ap.add_argument("--only", default=None, help="comma-separated stage names (run)")
    ap.add_argument("--dry-run", action="store_true", help="print each stage's command, run nothing (run)")
    ap.add_argument("--json", action="store_true", help="status as JSON")
    args = ap.parse_args(argv)
    try:
        plan = load_plan(args.plan)
        if args.action == "run":
            return run(plan, only=args.only.split(",") if args.only else None, dry_run=args.dry_run)
        if args.action == "status":
            rows = study_status(plan)
            try:
                print(json.dumps(rows, indent=2) if args.json else format_status(plan, rows))
            except BrokenPipeError:  # `... | head`: quiet, like other command-line tools
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0 if all(r["state"] == "done" for r in rows) else 1
        from value_harms.tools.study_report import write_report

        print(write_report(plan, read_record(plan), study_status(plan)))
        return 0
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
