"""The SLURM launcher configs (no cluster needed): slurm_gpu and slurm_cpu share everything but
resources, and `--cfg hydra` shows every sbatch parameter a real cluster needs."""

from __future__ import annotations

from omegaconf import OmegaConf

from helpers.cli import run_script

RESOURCES = {"gpus_per_node", "gres", "cpus_per_task", "mem_gb", "timeout_min", "setup"}


def test_cpu_and_gpu_launchers_differ_only_in_resources(compose):
    cfgs = {
        name: compose("train", [f"hydra/launcher={name}", "model=tiny"], return_hydra_config=True).hydra.launcher
        for name in ("slurm_gpu", "slurm_cpu")
    }
    gpu, cpu = cfgs["slurm_gpu"], cfgs["slurm_cpu"]
    raw = {name: OmegaConf.to_container(c, resolve=False) for name, c in cfgs.items()}  # the sweep dir has a time
    assert set(gpu) == set(cpu)
    assert {k for k in gpu if raw["slurm_gpu"][k] != raw["slurm_cpu"][k]} <= RESOURCES
    assert gpu._target_.endswith("SlurmLauncher") and cpu.timeout_min > 10  # USR2 = preemption, not timeout
    assert (gpu.gpus_per_node, cpu.gpus_per_node) == (1, None)
    assert dict(gpu.additional_parameters) == {"requeue": True} and gpu.max_num_timeout == 3
    assert cpu.setup == ["export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK MKL_NUM_THREADS=$SLURM_CPUS_PER_TASK"]


def test_cfg_hydra_shows_the_sbatch_parameters_and_takes_a_clusters_values():
    res = run_script(
        "train.py",
        [
            "hydra/launcher=slurm_gpu",
            "model=tiny",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.account=my_lab",
            "hydra.launcher.array_parallelism=8",
            "hydra.launcher.setup=[module load cuda/12.1]",
            "--cfg",
            "hydra",
            "-p",
            "hydra.launcher",
        ],
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    for line in (
        "partition: gpu",
        "account: my_lab",
        "qos: null",
        "gres: null",
        "gpus_per_node: 1",
        "cpus_per_task: 8",
        "mem_gb: 64",
        "timeout_min: 720",
        "array_parallelism: 8",
        "max_num_timeout: 3",
        "signal_delay_s: 120",
        "- module load cuda/12.1",
        "requeue: true",
    ):
        assert line in res.stdout.splitlines() or f"  {line}" in res.stdout.splitlines(), (line, res.stdout)
