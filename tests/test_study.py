"""The study runner (`python -m value_harms.study`): plans, the commands it runs, resume, its record and status."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.cli import ROOT
from value_harms.errors import ConfigError
from value_harms.tools import study as S


def _plan_file(tmp_path: Path, **changes) -> Path:
    plan = {
        "name": "t",
        "experiment": "demo",
        "launcher": "basic",
        "output_dir": str(tmp_path / "out"),
        "profiles": {"two": ["Pow", "Uni"]},
        "stages": [{"name": "train", "script": "train.py", "args": ["value_profile={two}"]}],
    }
    plan.update(changes)
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"stagez": []}, "unknown field(s) ['stagez']"),
        ({"stages": [{"name": "x", "script": "fit.py"}]}, "script 'fit.py'"),
        ({"stages": [{"name": "x", "script": "train.py", "args": ["value_profile={three}"]}]}, "{three} names no list"),
        ({"stages": [{"name": "x", "script": "train.py"}, {"name": "x", "script": "train.py"}]}, "unique"),
    ],
)
def test_a_bad_plan_is_one_line_naming_the_field(tmp_path, changes, needle):
    with pytest.raises(ConfigError) as exc:
        S.load_plan(str(_plan_file(tmp_path, **changes)))
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_unknown_plan_name_lists_the_plans():
    with pytest.raises(ConfigError, match="one of: .*smollm2"):
        S.load_plan("no_such_study")


def test_study_plan_commands_compose_for_every_job():
    """Each stage of the shipped plan is a command Hydra accepts for every one of its jobs (printed, not run)."""
    plan = S.load_plan("smollm2")
    assert plan.stages[-1].module == "value_harms.study"
    for stage in plan.stages:
        argv = stage.argv(plan)
        if stage.module:
            continue
        assert f"experiment={plan.experiment}" in argv and f"logger.group={plan.name}/{stage.name}" in argv
        if not stage.multirun:
            continue
        assert f"hydra/launcher={plan.launcher}" in argv
        out = subprocess.run(
            [sys.executable, *argv[1:], "--cfg", "job"], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, (stage.name, out.stderr[-2000:])
        assert out.stdout.count("# job ") >= 1


def test_stage_folder_changes_with_its_command(tmp_path):
    plan = S.load_plan(str(_plan_file(tmp_path)))
    other = S.load_plan(str(_plan_file(tmp_path, overrides=["trainer.max_steps=3"])))
    assert plan.stages[0].folder(plan) != other.stages[0].folder(other)
    assert plan.stages[0].folder(plan).parent == tmp_path / "out" / "study"


def test_run_resume_and_status_on_the_tiny_model(tmp_path, cache_dir, data_dir):
    """A real two-job training stage: run, status done; one job's result removed -> the rerun launches that job only."""
    fixed = [
        "model=tiny",
        "debug=fast",
        "logger=none",
        "vim_stage=ag",
        "alignment.enabled=false",
        "trainer.max_steps=2",
        "trainer.enable_progress_bar=false",
        f"paths.cache_dir={cache_dir}",
        f"paths.data_dir={data_dir}",
    ]
    plan = S.load_plan(str(_plan_file(tmp_path, overrides=fixed)))
    stage = plan.stages[0]
    assert S.run(plan) == 0
    rows = S.study_status(plan)
    assert rows[0]["state"] == "done" and rows[0]["done"] == rows[0]["expected"] == 2
    assert S.stage_command(plan, stage)[0] == []  # nothing left to run

    # lose one job's stored result: the stage reruns only that job, into the sweep's rerun folder
    stored = sorted(p.parent / "COMPLETE" for p in (tmp_path / "out" / "store" / "train").rglob("train_result.json"))
    assert len(stored) == 2
    lost = stored[0].parent
    profile = lost.parent.name
    shutil.rmtree(lost)
    argv, why = S.stage_command(plan, stage)
    assert why.startswith("1 of 2 jobs not done")
    assert f"value_profile={profile}" in argv and any("rerun_1" in a for a in argv)
    assert S.run(plan) == 0
    assert len(sorted((tmp_path / "out" / "store" / "train").rglob("train_result.json"))) == 2

    record = json.loads(plan.record_path.read_text())
    attempts = record["stages"]["train"]["attempts"]
    assert [a["rc"] for a in attempts] == [0, 0] and all(a["wall_seconds"] > 0 for a in attempts)
    assert record["stages"]["train"]["slurm_by_folder"] == {}  # basic launcher: no SLURM accounting, not zero
    out = subprocess.run(
        [sys.executable, "-m", "value_harms.study", "status", str(plan.path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "train" in out.stdout and "2/2" in out.stdout
    # the status tool given the study's output folder prints the same table
    same = subprocess.run(
        [sys.executable, "-m", "value_harms.status", str(plan.output_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert same.returncode == 0 and same.stdout == out.stdout


def test_a_failing_stage_stops_the_study_and_says_how_to_resume(tmp_path, capsys):
    plan = S.load_plan(
        str(
            _plan_file(
                tmp_path,
                stages=[
                    {"name": "bad", "module": "value_harms.power", "args": [str(tmp_path / "nothing")]},
                    {"name": "never", "module": "value_harms.power", "args": []},
                ],
            )
        )
    )
    rc = S.run(plan)
    assert rc != 0
    err = capsys.readouterr().err
    assert "stage bad exited" in err and "make study" in err
    record = json.loads(plan.record_path.read_text())
    assert "never" not in record["stages"]
    assert (plan.stages[0].folder(plan) / "output.txt").is_file()


def test_one_runner_per_study_and_the_attempts_a_killed_runner_left_are_recorded_as_interrupted(tmp_path, capsys):
    import fcntl

    stages = [{"name": "bad", "module": "value_harms.power", "args": [str(tmp_path / "nothing")]}]
    plan = S.load_plan(str(_plan_file(tmp_path, stages=stages)))
    # a runner killed mid-stage: its attempt has a start and no exit
    plan.study_dir.mkdir(parents=True)
    killed = {"start": 1.8e9, "argv": ["python", "-m", "value_harms.power"], "why": "first run"}
    plan.record_path.write_text(json.dumps({"plan": "t", "stages": {"bad": {"attempts": [killed]}}}))
    with open(plan.study_dir / ".runner.lock", "a+") as held:  # another runner holds the study
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242 on elsewhere\n")
        held.flush()
        with pytest.raises(ConfigError, match=r"study t is already running \(pid 4242 on elsewhere\)"):
            S.run(plan)
        assert json.loads(plan.record_path.read_text())["stages"]["bad"]["attempts"] == [killed]  # untouched
        assert S.run(plan, dry_run=True) == 0  # printing the commands needs no lock
        fcntl.flock(held, fcntl.LOCK_UN)
    assert S.run(plan) != 0  # the stage fails again: its new attempt records the exit
    first, second = json.loads(plan.record_path.read_text())["stages"]["bad"]["attempts"]
    assert first["interrupted"] is True and first["rc"] is None and second["rc"] not in (None, 0)
    assert "recorded as interrupted: bad" in capsys.readouterr().out
    assert S.main(["run", str(plan.path)]) != 0  # the lock went with the run: a second run proceeds
