"""Sweeps: `value_harms.tools.status` on real tiny multiruns, the launcher configs, the W&B sweep files."""

from __future__ import annotations

import glob
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.cli import ROOT, run_script
from value_harms.tools.status import sweep_status


def _fixed(tmp_path, cache_dir, data_dir) -> list[str]:
    return [
        "model=tiny",
        "debug=fast",
        "logger=none",
        "vim_stage=ag",
        "alignment.enabled=false",
        "trainer.max_steps=2",
        "trainer.enable_progress_bar=false",
        f"paths.output_dir={tmp_path}/out",
        f"paths.cache_dir={cache_dir}",
        f"paths.data_dir={data_dir}",
    ]


def _sweep_dir(tmp_path) -> Path:
    dirs = glob.glob(f"{tmp_path}/out/multiruns/train/*/multirun.yaml")
    assert len(dirs) == 1, dirs
    return Path(dirs[0]).parent


def _status_cli(sweep: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "value_harms.status", str(sweep), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _fake_sweep(folder: Path, task: list[str], name: str = "train") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"hydra": {"overrides": {"hydra": ["hydra.mode=MULTIRUN"], "task": task}, "job": {"name": name}}}
    (folder / "multirun.yaml").write_text(yaml.safe_dump(cfg))
    return folder


def _fake_job(sweep: Path, sub: str, overrides: list[str], status: str | None) -> None:
    (sweep / sub / ".hydra").mkdir(parents=True)
    (sweep / sub / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if status:
        (sweep / sub / "status.json").write_text(json.dumps({"status": status}))


# ------------------------------------------------------------------------------ real multiruns
def test_status_lists_missing_and_killed_jobs_and_the_rerun_completes_them(tmp_path, cache_dir, data_dir):
    fixed = _fixed(tmp_path, cache_dir, data_dir)
    res = run_script("train.py", ["-m", "value_profile=Pow,Uni", *fixed])
    assert res.returncode == 0, res.stderr[-3000:]
    sweep = _sweep_dir(tmp_path)

    st = sweep_status(sweep)
    assert st["task"] == "train" and st["expected"] == 2 and st["all_done"]
    assert st["counts"]["complete"] == 2 and st["rerun"] == []
    cli = _status_cli(sweep)
    assert cli.returncode == 0, cli.stderr
    assert "all jobs are done" in cli.stdout

    # the sweep was cut short: job 0 never launched, job 1 was killed while running (neither left a
    # result in the store: status reads the store, so a finished result would count as done)
    for job in st["jobs"]:
        shutil.rmtree(job["store_dir"])
    shutil.rmtree(sweep / "0_Pow")
    status_file = sweep / "1_Uni" / "status.json"
    status_file.write_text(json.dumps({**json.loads(status_file.read_text()), "status": "running"}))

    st = sweep_status(sweep)
    assert st["missing"] == [0] and st["killed"] == [1] and st["done"] == [] and not st["all_done"]
    assert len(st["rerun"]) == 1, st["rerun"]
    cmd = st["rerun"][0]
    assert cmd[:3] == ["python", "train.py", "-m"]
    assert "value_profile=Pow,Uni" in cmd
    assert f"hydra.sweep.dir={sweep}/rerun_1" in cmd
    cli = _status_cli(sweep)
    assert cli.returncode == 1
    assert "missing" in cli.stdout and "running" in cli.stdout
    assert st["rerun_commands"][0] in cli.stdout
    assert "idempotent" in cli.stdout

    res = run_script("train.py", cmd[2:])  # the printed command, as a user would run it
    assert res.returncode == 0, res.stderr[-3000:]
    assert "best val/loss" in (Path(glob.glob(f"{sweep}/rerun_1/1_Uni/train.log")[0]).read_text())  # trained
    st = sweep_status(sweep)
    assert st["all_done"], st["jobs"]
    assert [Path(j["folder"]).relative_to(sweep).as_posix() for j in st["jobs"]] == ["rerun_1/0_Pow", "rerun_1/1_Uni"]
    assert st["jobs"][1]["attempts"] == 2
    cli = _status_cli(sweep, "--json")
    assert cli.returncode == 0 and json.loads(cli.stdout)["all_done"]


def test_joblib_launcher_runs_two_jobs_in_parallel(tmp_path, cache_dir, data_dir):
    res = run_script(
        "train.py",
        [
            "-m",
            "hydra/launcher=joblib_cpu",
            "hydra.launcher.n_jobs=2",
            "train.num_threads=1",
            "value_profile=Pow,Uni",
            *_fixed(tmp_path, cache_dir, data_dir),
        ],
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in res.stdout + res.stderr
    st = sweep_status(_sweep_dir(tmp_path))
    assert st["counts"]["complete"] == 2 and st["all_done"]
    # a rerun keeps the launcher
    assert "hydra/launcher=joblib_cpu" in st["rerun_all"] and "hydra.launcher.n_jobs=2" in st["rerun_all"]


def test_submitit_local_launcher_runs_the_jobs(tmp_path, cache_dir, data_dir):
    res = run_script(
        "train.py",
        [
            "-m",
            "hydra/launcher=slurm_local",
            "value_profile=Pow,Uni",
            "train.num_threads=1",
            *_fixed(tmp_path, cache_dir, data_dir),
        ],
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    sweep = _sweep_dir(tmp_path)
    assert (sweep / ".submitit").is_dir()
    st = sweep_status(sweep)
    assert st["counts"]["complete"] == 2 and st["all_done"]


# ------------------------------------------------------------------------------ expansion only
def test_glob_sweep_expands_against_the_config_group(tmp_path):
    sweep = _fake_sweep(tmp_path / "sw", ["value_profile=glob(close_Pow*)", "model=tiny"])
    st = sweep_status(sweep)
    assert st["expected"] == 10 and st["counts"]["missing"] == 10
    names = sorted(j["overrides"][0].split("=")[1] for j in st["jobs"])
    assert names == sorted(["close_Pow"] + [f"close_Pow_{i}" for i in range(2, 11)])
    assert len(st["rerun"]) == 1 and "model=tiny" in st["rerun"][0]
    assert _status_cli(sweep).returncode == 1


def test_not_done_set_that_is_no_product_gives_one_command_per_job(tmp_path):
    sweep = _fake_sweep(tmp_path / "sw", ["value_profile=Pow,Uni", "train.lora_r=4,8", "alignment.enabled=false"])
    _fake_job(sweep, "0_Pow", ["value_profile=Pow", "train.lora_r=4", "alignment.enabled=False"], "complete")
    _fake_job(sweep, "1_Pow", ["value_profile=Pow", "train.lora_r=8", "alignment.enabled=False"], "failed")
    _fake_job(sweep, "2_Uni", ["alignment.enabled=False", "train.lora_r=4", "value_profile=Uni"], None)  # order-free
    _fake_job(sweep, "9_x", ["value_profile=Ach", "train.lora_r=4", "alignment.enabled=False"], "complete")
    st = sweep_status(sweep)
    assert [j["state"] for j in st["jobs"]] == ["complete", "failed", "no_status", "missing"]
    assert st["extra"] == [str(sweep / "9_x")]
    assert len(st["rerun"]) == 3
    assert st["rerun"][0][3:6] == ["value_profile=Pow", "train.lora_r=8", "alignment.enabled=False"]
    # only the sweep's own key varies among the rest: one product command
    _fake_job(sweep, "1_Pow_again", ["value_profile=Pow", "train.lora_r=8", "alignment.enabled=False"], "complete")
    st = sweep_status(sweep)
    assert st["jobs"][1]["attempts"] == 2 and st["jobs"][1]["state"] == "complete"
    assert len(st["rerun"]) == 1 and "value_profile=Uni" in st["rerun"][0] and "train.lora_r=4,8" in st["rerun"][0]


def test_not_a_sweep_folder_is_exit_2(tmp_path):
    res = _status_cli(tmp_path)
    assert res.returncode == 2 and "multirun.yaml" in res.stderr


# ------------------------------------------------------------------------------ launcher configs
@pytest.mark.parametrize(
    "launcher,target,checks",
    [
        ("joblib_cpu", "JoblibLauncher", {"n_jobs": 2}),
        (
            "slurm_gpu",
            "SlurmLauncher",
            {
                "gpus_per_node": 1,
                "tasks_per_node": 1,
                "cpus_per_task": 8,
                "mem_gb": 64,
                "timeout_min": 720,
                "array_parallelism": 32,
                "max_num_timeout": 3,
                "partition": None,
                "setup": [],
                "signal_delay_s": 120,
            },
        ),
        ("slurm_local", "LocalLauncher", {"tasks_per_node": 1}),
    ],
)
def test_launcher_configs_extend_the_plugin_configs(compose, launcher, target, checks):
    cfg = compose("train", [f"hydra/launcher={launcher}", "model=tiny"], return_hydra_config=True)
    lc = cfg.hydra.launcher
    assert lc._target_.endswith(target)
    for key, value in checks.items():
        assert lc[key] == value, key


# ------------------------------------------------------------------------------ W&B sweep files
SWEEP_FILES = sorted((ROOT / "sweeps").glob("*.yaml"))


def test_all_sweep_files_present():
    assert {p.stem for p in SWEEP_FILES} >= {"lora_rank", "learning_rate", "epochs", "stage"}


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_sweep_file_hands_hydra_valid_overrides(path, compose):
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args, load_sweep_config

    sweep = load_sweep_config(str(path))
    assert sweep["program"] == "train.py" and (ROOT / sweep["program"]).is_file()
    assert sweep["method"] == "grid"
    assert sweep["metric"] == {"name": "alignment/nmse_expected", "goal": "minimize"}
    assert sweep["command"] == ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]
    params = sweep["parameters"]
    keys = list(params)
    grids = [p["values"] if "values" in p else [p["value"]] for p in params.values()]
    for point in itertools.product(*grids):
        # exactly what the agent puts on the command line
        args = create_sweep_command_args({"args": {k: {"value": v} for k, v in zip(keys, point)}})["args_no_hyphens"]
        cfg = compose("train", args)
        for k, v in zip(keys, point):
            if "." in k:
                assert cfg[k.split(".")[0]][k.split(".", 1)[1]] == v, (k, v)
            elif k == "experiment":  # a preset (@package _global_): it names the run's experiment
                assert cfg.experiment_name == v, (k, v)
            else:
                assert cfg[k].name == v, (k, v)
        if path.stem == "lora_rank":  # the W&B sweep scales alpha like experiment=ablation_lora_rank (alpha/r = 4)
            assert cfg.train.lora_alpha == 4 * cfg.train.lora_r


def test_batched_evaluate_job_is_done_when_every_profile_is(tmp_path):
    sweep = _fake_sweep(tmp_path / "sw", ["benchmark=rtp,beavertails", "batch_profiles=[Pow,Uni]"], name="evaluate")
    for i, bench in enumerate(["rtp", "beavertails"]):
        _fake_job(sweep, f"{i}_{bench}", [f"benchmark={bench}", "batch_profiles=[Pow,Uni]"], None)
        (sweep / f"{i}_{bench}" / ".hydra" / "config.yaml").write_text(
            yaml.safe_dump({"batch_profiles": ["Pow", "Uni"]})
        )
        for name in ("Pow", "Uni") if bench == "rtp" else ("Pow",):
            (sweep / f"{i}_{bench}" / name).mkdir()
            (sweep / f"{i}_{bench}" / name / "status.json").write_text(json.dumps({"status": "complete"}))
    st = sweep_status(sweep)
    assert [j["state"] for j in st["jobs"]] == ["complete", "no_status"]
    assert st["rerun"] == [
        [
            "python",
            "evaluate.py",
            "-m",
            "benchmark=beavertails",
            "batch_profiles=[Pow,Uni]",
            f"hydra.sweep.dir={sweep}/rerun_1",
        ]
    ]
