"""Which jobs of a Hydra multirun finished, and the command that reruns only the others.

    python -m value_harms.status outputs/multiruns/train/2025-01-01_12-00-00-000000_1234 [--json]

A sweep folder holds `multirun.yaml` (the sweep's own config, with the overrides as typed) and one
subfolder per job (`<num>_<label>/.hydra/overrides.yaml` + `status.json`, written by
`runs.job_status`). The expected jobs are re-expanded exactly as Hydra's BasicSweeper does: the
sweeper's `params` then the command-line task overrides, parsed by Hydra's OverridesParser with a
config loader on the project's config dir (so `glob(...)` lists the same group options), then the
cartesian product of `BasicSweeper.split_arguments`. Each expected job is then

    complete   its result is complete in the store, however it got there (this sweep, a rerun of
               the same command elsewhere, another sweep sharing the store)
    partial    its result is in the store as PARTIAL (missing scores): a rerun retries them
    failed     the job raised (status failed)
    running    status says running: the job is still running, or was killed (SIGKILL, OOM, node lost)
    no_status  a job folder without status.json: stopped before the task started

(a batched evaluate job, `batch_profiles=[...]`, writes one status.json per profile sub-folder: it
is complete when all of them are).
    missing    no job folder: the sweep was stopped before launching it

Reruns go into `<sweep>/rerun_<k>/` (a Hydra multirun with `hydra.sweep.dir` set there), and this
command reads those attempts too, so one folder keeps the whole history. Reruns are idempotent: a
store result marked COMPLETE is skipped and interrupted training resumes from its last.ckpt, so
rerunning the whole sweep is also safe; the rerun command only saves the start-up of done jobs.

Exit status: 0 when every expected job is complete, 1 otherwise, 2 when the folder is not a sweep.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

import value_harms.config.schema  # noqa: F401 - registers the typed schemas in Hydra's ConfigStore
from value_harms.config.sweep import BASIC_SWEEPER as _BASIC_SWEEPER
from value_harms.config.sweep import normalise_overrides, overrides_parser, sweep_conf_dir
from value_harms.errors import SweepError

STATES = ("complete", "partial", "failed", "running", "no_status", "missing")
NOT_DONE = ("partial", "failed", "running", "no_status", "missing")
_SAFE_HYDRA_VALUE = re.compile(r"[\w\-+./:@%~]+")
_NOTE = (
    "Reruns are idempotent: complete store results are skipped and interrupted training resumes "
    "from its last.ckpt, so rerunning the whole sweep is also safe."
)


# ---------------------------------------------------------------------------------- expansion
def _load_sweep(sweep_dir: Path):
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        raise SweepError(f"{sweep_dir} is not a Hydra multirun folder (no multirun.yaml)")
    cfg = OmegaConf.load(path)
    target = OmegaConf.select(cfg, "hydra.sweeper._target_", default=_BASIC_SWEEPER)
    if target != _BASIC_SWEEPER:
        raise SweepError(f"{sweep_dir}: sweeper {target} is not Hydra's basic sweeper; its jobs cannot be re-expanded")
    return cfg


# ---------------------------------------------------------------------------------- job folders
def _job_folders(sweep_dir: Path) -> list[Path]:
    """Every job folder under the sweep (its own and those of reruns in nested sweep folders)."""
    found = []
    for ov in sweep_dir.rglob("overrides.yaml"):
        if ov.parent.name != ".hydra":
            continue
        rel = ov.relative_to(sweep_dir).parts
        if any(p in (".submitit", "wandb") for p in rel):
            continue
        found.append(ov.parent.parent)
    return sorted(found)


def _read_state(status_file: Path) -> tuple[str, dict]:
    if not status_file.is_file():
        return "no_status", {}
    try:
        info = json.loads(status_file.read_text())
    except (OSError, ValueError):
        return "no_status", {}
    return {"complete": "complete", "failed": "failed", "running": "running"}.get(info.get("status"), "no_status"), info


def _batch_profiles(folder: Path) -> list[str]:
    """`batch_profiles` of an evaluate job (one status.json per profile in `<job>/<profile>/`)."""
    try:
        cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
        return [str(x) for x in (OmegaConf.select(cfg, "batch_profiles", default=None) or [])]
    except Exception:
        return []


def _attempt(folder: Path) -> dict[str, Any]:
    status_file = folder / "status.json"
    mtime = status_file.stat().st_mtime if status_file.is_file() else (folder / ".hydra").stat().st_mtime
    state, info = _read_state(status_file)
    if not status_file.is_file() and (names := _batch_profiles(folder)):
        # a batched evaluate job: done when every profile's sub-folder says complete
        states = [_read_state(folder / name / "status.json")[0] for name in names]
        state = next((s for s in ("failed", "running", "no_status") if s in states), "complete")
    return {"folder": str(folder), "state": state, "mtime": mtime, "store_dir": info.get("store_dir")}


def _store_state(store_dir: str | None) -> str | None:
    """complete | partial | absent for a train or evaluation store folder (None when unknown)."""
    if not store_dir:
        return None
    from value_harms.store import records

    folder = Path(store_dir)
    state = records.result_state(folder)
    if state == "complete" and (folder / "train_result.json").is_file():
        return "complete"
    if state == "complete":
        return "complete" if records.read_result(folder).complete else "absent"
    return state


def _expected_store(conf: Path, task: str, overrides: list[str]) -> str | None:
    """The store folder a job that never started would fill: its config composed exactly as the task
    composes it, and the same key function the task uses. None when it cannot be told without
    running the job (e.g. its adapter is not trained yet)."""
    try:
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose(config_name=task, overrides=[o for o in overrides if not o.startswith("hydra")])
        from value_harms.core.profiles import profile_from_cfg

        profile = profile_from_cfg(cfg.value_profile)
        if task == "train":
            from value_harms.train.task import train_store_dir

            return str(train_store_dir(cfg, profile))
        if task == "evaluate" and not cfg.batch_profiles:
            from value_harms.eval.measures import get_measure

            if get_measure(str(cfg.benchmark.measure)).reads_answers:  # the PVQ job files its own way
                return None
            from value_harms.eval.job import load_benchmark, prepare_job
            from value_harms.eval.variants import resolve_baseline

            prompts, fp = load_benchmark(cfg)
            return str(prepare_job(cfg, profile, resolve_baseline(cfg, profile), prompts, fp).store)
    except Exception:  # noqa: BLE001 - anything that stops the composition: the job stays "missing"
        return None
    finally:
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
    return None


# ---------------------------------------------------------------------------------- commands
def _hydra_value(value: str) -> str:
    """A value spelled so Hydra's override grammar reads it back unchanged (paths, mostly)."""
    if _SAFE_HYDRA_VALUE.fullmatch(value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _next_rerun_dir(sweep_dir: Path) -> Path:
    k = 1
    while (sweep_dir / f"rerun_{k}").exists():
        k += 1
    return sweep_dir / f"rerun_{k}"


def _as_product(jobs: list[list[tuple[str, str]]]) -> list[str] | None:
    """`key=v1,v2` overrides whose cartesian product is exactly `jobs` (same key order), else None."""
    keys = [k for k, _ in jobs[0]]
    if any([k for k, _ in job] != keys for job in jobs):
        return None
    values: list[list[str]] = [[] for _ in keys]
    for job in jobs:
        for i, (_, v) in enumerate(job):
            if v not in values[i]:
                values[i].append(v)
    if set(itertools.product(*values)) != {tuple(v for _, v in job) for job in jobs}:
        return None
    return [f"{k}={','.join(vs)}" for k, vs in zip(keys, values)]


def _command(script: str, hydra_args: list[str], task_args: list[str]) -> list[str]:
    return ["python", script, "-m", *task_args, *hydra_args]


def _shell(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


# ---------------------------------------------------------------------------------- the status
def sweep_status(sweep_dir: str | Path) -> dict[str, Any]:
    """The state of every expected job of a multirun folder and the commands that rerun the others.

    Returns a dict: sweep_dir, task, script, cwd (where the sweep was started: run the commands
    there), expected (number of jobs), jobs (one dict per expected job, in launch order: index,
    overrides, label, state, folder, attempts), counts (per state), done / failed / killed /
    no_status / missing (job indexes), extra (job folders matching no expected job), all_done,
    rerun (argv lists: python <task>.py -m ...), rerun_commands (the same, shell-quoted),
    rerun_all (argv rerunning the whole sweep), rerun_dir, note.
    """
    # size: one pass joining expected jobs with every attempt's folders and the store
    sweep_dir = Path(sweep_dir).resolve()
    cfg = _load_sweep(sweep_dir)
    conf = sweep_conf_dir(cfg)
    parser = overrides_parser(conf)

    task_overrides = [str(x) for x in (OmegaConf.select(cfg, "hydra.overrides.task", default=None) or [])]
    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + task_overrides
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    batches = BasicSweeper.split_arguments(parser.parse_overrides(arguments), max_batch_size=None)
    expected = [list(job) for batch in batches for job in batch]
    parsed = [
        [(o.get_key_element(), o.get_value_element_as_str()) for o in parser.parse_overrides(job)] for job in expected
    ]
    varying = [i for i in range(len(parsed[0]) if parsed else 0) if len({job[i] for job in parsed}) > 1]

    index = {frozenset(job): i for i, job in enumerate(parsed)}
    attempts: dict[int, list[dict]] = {i: [] for i in range(len(parsed))}
    extra = []
    for folder in _job_folders(sweep_dir):
        try:
            ov = OmegaConf.to_container(OmegaConf.load(folder / ".hydra" / "overrides.yaml"))
            key = normalise_overrides(parser, [str(x) for x in ov or []])
        except Exception:  # unreadable: report it, never guess
            extra.append(str(folder))
            continue
        if key in index:
            attempts[index[key]].append(_attempt(folder))
        else:
            extra.append(str(folder))

    task = str(OmegaConf.select(cfg, "hydra.job.name", default="train"))
    jobs = []
    for i, job in enumerate(parsed):
        tries = sorted(attempts[i], key=lambda a: a["mtime"])
        done = [a for a in tries if a["state"] == "complete"]
        best = done[-1] if done else (tries[-1] if tries else None)
        state = best["state"] if best else "missing"
        store_dir = next((a["store_dir"] for a in reversed(tries) if a.get("store_dir")), None)
        stored_now = _store_state(store_dir) if state == "complete" and store_dir else "complete"
        if stored_now != "complete":
            # the job said complete but its stored result is gone or damaged since: it is to be redone
            state = "partial" if stored_now == "partial" else "missing"
        elif state != "complete":
            if store_dir is None and not tries:
                store_dir = _expected_store(conf, task, expected[i])
            stored = _store_state(store_dir)
            if stored in ("complete", "partial"):
                state = stored
        jobs.append(
            {
                "index": i,
                "overrides": expected[i],
                "label": " ".join(f"{k}={v}" for k, v in (job[j] for j in varying)) or " ".join(expected[i]),
                "state": state,
                "folder": best["folder"] if best else None,
                "store_dir": store_dir,
                "attempts": len(tries),
            }
        )

    counts = {s: sum(j["state"] == s for j in jobs) for s in STATES}
    script = f"{task}.py"
    rerun_dir = _next_rerun_dir(sweep_dir)
    hydra_args = [
        str(x)
        for x in (OmegaConf.select(cfg, "hydra.overrides.hydra", default=None) or [])
        if not str(x).startswith(("hydra.mode=", "hydra.sweep.dir="))
    ]
    hydra_args.append(f"hydra.sweep.dir={_hydra_value(str(rerun_dir))}")

    todo = [parsed[j["index"]] for j in jobs if j["state"] in NOT_DONE]
    rerun: list[list[str]] = []
    if todo:
        product = _as_product(todo)
        if product is not None:
            rerun = [_command(script, hydra_args, product)]
        else:
            rerun = [_command(script, hydra_args, [f"{k}={v}" for k, v in job]) for job in todo]

    return {
        "sweep_dir": str(sweep_dir),
        "task": task,
        "script": script,
        "cwd": OmegaConf.select(cfg, "hydra.runtime.cwd", default=None),
        "conf_dir": str(conf),
        "expected": len(jobs),
        "jobs": jobs,
        "counts": counts,
        "done": [j["index"] for j in jobs if j["state"] == "complete"],
        "failed": [j["index"] for j in jobs if j["state"] == "failed"],
        "partial": [j["index"] for j in jobs if j["state"] == "partial"],
        "killed": [j["index"] for j in jobs if j["state"] == "running"],
        "no_status": [j["index"] for j in jobs if j["state"] == "no_status"],
        "missing": [j["index"] for j in jobs if j["state"] == "missing"],
        "extra": extra,
        "all_done": bool(jobs) and counts["complete"] == len(jobs),
        "rerun": rerun,
        "rerun_commands": [_shell(c) for c in rerun],
        "rerun_all": _command(script, hydra_args, task_overrides),
        "rerun_dir": str(rerun_dir),
        "note": _NOTE,
    }


def format_status(st: dict[str, Any]) -> str:
    """The human-readable report: a table, the counts, and the rerun commands."""
    lines = [f"sweep  {st['sweep_dir']}", f"task   {st['task']} ({st['expected']} expected jobs)", ""]
    width = max([len(j["label"]) for j in st["jobs"]] + [4])
    lines.append(f"{'#':>4}  {'state':<9}  {'job':<{width}}  folder")
    for j in st["jobs"]:
        folder = "-"
        if j["folder"]:
            folder = str(Path(j["folder"]).relative_to(st["sweep_dir"]))
            if j["attempts"] > 1:
                folder += f"  ({j['attempts']} attempts)"
        lines.append(f"{j['index']:>4}  {j['state']:<9}  {j['label']:<{width}}  {folder}")
    c = st["counts"]
    lines += [
        "",
        f"done {c['complete']}, partial {c['partial']}, failed {c['failed']}, running-or-killed {c['running']}, "
        f"no status {c['no_status']}, missing {c['missing']}",
    ]
    if st["extra"]:
        lines.append(f"{len(st['extra'])} job folder(s) match no expected job: " + ", ".join(st["extra"][:5]))
    if st["all_done"]:
        lines.append("all jobs are done.")
        return "\n".join(lines)
    if c["running"]:
        lines.append(
            "running: status.json still says running: the job is either still running or was killed. "
            "Check before rerunning (two jobs on one store folder wait for its lock, never clash)."
        )
    where = f" (from {st['cwd']})" if st.get("cwd") else ""
    n = sum(c[s] for s in NOT_DONE)
    lines += ["", f"rerun the {n} job(s) not done{where}:"]
    lines += [f"  {cmd}" for cmd in st["rerun_commands"]]
    lines += ["", st["note"], f"  {_shell(st['rerun_all'])}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m value_harms.status", description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep_dir", help="a Hydra multirun folder (holds multirun.yaml)")
    ap.add_argument("--json", action="store_true", help="print the status as JSON")
    args = ap.parse_args(argv)
    try:
        st = sweep_status(args.sweep_dir)
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(st, indent=2, default=str) if args.json else format_status(st))
    except BrokenPipeError:  # `... | head`: quiet, like other command-line tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0 if st["all_done"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
