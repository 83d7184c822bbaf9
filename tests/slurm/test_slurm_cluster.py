"""Sweeps through a real SLURM scheduler (sbatch job arrays via `hydra/launcher=slurm_cpu`).

Run with `make test-slurm` (starts the single-node cluster of scripts/slurm/up.sh when it is not up).
Every job here goes through sbatch, slurmctld, slurmd and accounting (sacct): nothing is imitated.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slurm

PROFILES = ["Pow", "Uni", "Ach"]
# Long enough to be caught mid-training (checkpoints every 2 of 12 steps), short on the tiny model.
TRAIN = [
    "model=tiny",
    "debug=fast",
    "logger=none",
    "vim_stage=ag",
    "alignment.enabled=false",
    "trainer.max_steps=12",
    "trainer.val_check_interval=4",
    "train.checkpoint_every_n_steps=2",
    "trainer.enable_progress_bar=false",
]
EVAL = [
    "benchmark=rtp",
    "benchmark.limit=2",
    "benchmark.num_samples=2",
    "benchmark.max_new_tokens=4",
    "scorer=profanity_check",
    "generation.progress=false",
]
SLURM = ["hydra/launcher=slurm_cpu"]


# ------------------------------------------------------------------------------------------ helpers
def _env() -> dict:
    env = dict(os.environ)
    env.update(
        {
            "WANDB_MODE": "offline",
            "WANDB_SILENT": "true",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _paths(out: Path, cache: Path, data: Path) -> list[str]:
    return [f"paths.output_dir={out}", f"paths.cache_dir={cache}", f"paths.data_dir={data}"]


def run(script: str, args: list[str], timeout: int = 400) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert res.returncode == 0, f"{script} {' '.join(args)}\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    return res


def start(script: str, args: list[str], log: Path) -> subprocess.Popen:
    """A Hydra multirun in the background (its output in `log`)."""
    fh = open(log, "w")
    return subprocess.Popen(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        env=_env(),
        stdout=fh,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_until(pred, timeout: float, what: str, poll: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def slurm(*cmd: str) -> str:
    res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, f"{' '.join(cmd)}: {res.stderr}"
    return res.stdout


def sweep_dir(out: Path, task: str) -> Path | None:
    found = sorted(glob.glob(f"{out}/multiruns/{task}/*/multirun.yaml"))
    return Path(found[-1]).parent if found else None


def array_id(sweep: Path) -> str | None:
    """The SLURM array job id of a submitit sweep (.submitit/<id>/<id>_submission.sh)."""
    found = glob.glob(f"{sweep}/.submitit/*/*_submission.sh")
    return Path(found[0]).parent.name if found else None


def sacct_states(job: str) -> dict[str, str]:
    """{array task id: state} from accounting (the scheduler's own record)."""
    text = slurm("sacct", "-X", "-n", "-P", "-j", job, "-o", "JobID,State")
    return dict(line.split("|", 1) for line in text.splitlines() if line.strip())  # "CANCELLED by 0"


def job_state(sweep: Path, num: int) -> str | None:
    found = glob.glob(f"{sweep}/{num}_*/status.json")
    if not found:
        return None
    try:
        return json.loads(Path(found[0]).read_text()).get("status")
    except ValueError:
        return None


def in_queue(job: str) -> bool:
    return bool(slurm("squeue", "-h", "-j", job, "-o", "%i").strip())


def status(sweep: Path) -> tuple[int, dict, str]:
    """`python -m value_harms.status SWEEP` as a user runs it: exit code, --json report, table."""

    def call(*extra):
        return subprocess.run(
            [sys.executable, "-m", "value_harms.status", str(sweep), *extra],
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    table = call()
    js = call("--json")
    return table.returncode, json.loads(js.stdout), table.stdout


def rerun(st: dict) -> None:
    """Run the printed rerun command (python <task>.py -m ...) from where the sweep was started."""
    assert len(st["rerun"]) == 1, st["rerun"]
    argv = st["rerun"][0]
    assert argv[:3] == ["python", st["script"], "-m"], argv
    res = subprocess.run(
        [sys.executable, *argv[1:]], cwd=st["cwd"] or ROOT, env=_env(), capture_output=True, text=True, timeout=400
    )
    assert res.returncode == 0, res.stderr[-4000:]


def notice_bound(since_submit: float) -> float:
    """How long submitit may take to see a task end without a result: it polls sacct at 2, 4, 8, ...
    s after the submission (half the time since the submission), capped at 10 s by the project's
    SlurmPollCallback (value_harms.runtime.cluster; submitit's own cap is 10 min), then gives the result file
    15 s to appear; plus 20 s for a busy machine. No accounting = no bound (a hang)."""
    return min(10.0, max(2.0, since_submit / 2)) + 15 + 20


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def adapters(out: Path) -> dict[str, str]:
    """{profile: sha256 of the kept adapter} of every training in the store."""
    found = {}
    for f in glob.glob(f"{out}/store/train/**/adapter/adapter_model.safetensors", recursive=True):
        profile = Path(f).relative_to(out / "store" / "train").parts[2]
        found[profile] = sha256(Path(f))
    return found


def eval_results(out: Path) -> dict[str, tuple]:
    """{profile: (metrics, generated texts and scores)} of every evaluation in the store."""
    found = {}
    for f in glob.glob(f"{out}/store/eval/**/results.json", recursive=True):
        res = json.loads(Path(f).read_text())
        samples = [json.loads(line) for line in (Path(f).parent / "samples.jsonl").read_text().splitlines()]
        profile = Path(f).relative_to(out / "store" / "eval").parts[3]  # <model>/<kind>/<stage>/<profile>/...
        found[profile] = (res["metrics"], [(s["continuation"], s["score"]) for s in samples])
    return found


def analysis_table(out: Path) -> list[tuple]:
    """The tidy table analyze.py wrote, without its path columns."""
    import pandas as pd

    tidy = pd.read_csv(sorted(glob.glob(f"{out}/runs/analyze/*/tidy.csv"))[-1])
    cols = ["profile", "benchmark", "mitigation", "metric", "value", "n", "missing"]
    return sorted(map(tuple, tidy[cols].astype(str).values.tolist()))


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def reference(tmp_path_factory, cache, data_dir) -> Path:
    """The same sweep with Hydra's basic launcher (sequential, in one process): the results the
    cluster runs must reproduce."""
    out = tmp_path_factory.mktemp("basic")
    paths = _paths(out, cache, data_dir)
    run("train.py", ["-m", f"value_profile={','.join(PROFILES)}", *TRAIN, *paths])
    run("evaluate.py", ["-m", f"value_profile={','.join(PROFILES)}", *TRAIN, *EVAL, *paths])
    run("analyze.py", ["logger=none", *paths])
    return out


@pytest.fixture
def cleanup():
    """Array jobs a test submitted; cancelled at the end if still queued (a failed test)."""
    jobs: list[str] = []
    yield jobs
    for job in jobs:
        subprocess.run(["scancel", job], capture_output=True, timeout=30)


# ------------------------------------------------------------------------------------------ tests
def test_sweep_through_sbatch_gives_the_basic_launchers_results(cluster, reference, cache, data_dir, tmp_path, cleanup):
    out = tmp_path / "out"
    paths = _paths(out, cache, data_dir)
    profiles = f"value_profile={','.join(PROFILES)}"
    res = run("train.py", ["-m", *SLURM, profiles, *TRAIN, *paths])
    assert "Submitit 'slurm' sweep output dir" in res.stdout + res.stderr
    train_sweep = sweep_dir(out, "train")
    job = array_id(train_sweep)
    cleanup.append(job)
    # one sbatch array of 3 tasks, each recorded COMPLETED by the scheduler's accounting (a task
    # leaves the queue a moment after its result is written)
    wait_until(lambda: not in_queue(job), 60, "the array to leave the queue")
    # accounting (slurmdbd) may record the end a moment after the queue forgets the task
    wait_until(
        lambda: sacct_states(job) == {f"{job}_{i}": "COMPLETED" for i in range(3)},
        60,
        "accounting to record every task COMPLETED",
    )
    script = next((train_sweep / ".submitit" / job).glob("*_submission.sh")).read_text()
    assert "#SBATCH --array=0-2%" in script and "#SBATCH --cpus-per-task=1" in script
    assert "#SBATCH --requeue" in script and "export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK" in script

    res = run("evaluate.py", ["-m", *SLURM, profiles, *TRAIN, *EVAL, *paths])
    eval_job = array_id(sweep_dir(out, "evaluate"))
    cleanup.append(eval_job)
    wait_until(lambda: not in_queue(eval_job), 60, "the array to leave the queue")
    wait_until(
        lambda: set(sacct_states(eval_job).values()) == {"COMPLETED"}, 60, "accounting to record every task COMPLETED"
    )
    run("analyze.py", ["logger=none", *paths])

    assert status(train_sweep)[0] == 0 and status(sweep_dir(out, "evaluate"))[0] == 0
    assert adapters(out) == adapters(reference) and len(adapters(out)) == 3
    assert eval_results(out) == eval_results(reference) and len(eval_results(out)) == 3
    assert analysis_table(out) == analysis_table(reference)


def test_preempted_training_job_requeues_and_resumes_from_its_checkpoint(
    cluster, reference, cache, data_dir, tmp_path, cleanup
):
    out = tmp_path / "out"
    # timeout_min > 10: submitit reads a USR2 as a preemption (a timeout only near the time limit)
    proc = start(
        "train.py",
        ["-m", *SLURM, "hydra.launcher.timeout_min=30", "value_profile=Pow", *TRAIN, *_paths(out, cache, data_dir)],
        tmp_path / "hydra.log",
    )
    try:
        sweep = wait_until(lambda: sweep_dir(out, "train"), 120, "the sweep folder")
        job = wait_until(lambda: array_id(sweep), 60, "the sbatch submission")
        cleanup.append(job)
        task = job  # submitit sends a one-job sweep as a plain job, not a one-task array
        ckpt = wait_until(
            lambda: next(iter(glob.glob(f"{out}/store/train/**/ckpt/last.ckpt", recursive=True)), None),
            300,
            "the first training checkpoint",
        )
        slurm("scancel", "--signal=USR2", task)  # what the scheduler sends a job it preempts
        import torch

        step_at_preemption = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
        assert step_at_preemption > 0
        # submitit checkpoints and requeues the task; SLURM holds a requeued job back ~2 min: release it
        wait_until(lambda: slurm("squeue", "-h", "-j", task, "-o", "%T").strip() == "PENDING", 60, "the requeue")
        slurm("scontrol", "update", f"JobId={task}", "StartTime=now")
        assert proc.wait(timeout=400) == 0, (tmp_path / "hydra.log").read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_until(lambda: not in_queue(task), 60, "the job to leave the queue")
    # accounting (slurmdbd) may record the end a moment after the queue forgets the job
    wait_until(lambda: sacct_states(task) == {task: "COMPLETED"}, 60, "accounting to record the job COMPLETED")
    starts = glob.glob(f"{sweep}/.submitit/{task}/{task}_0_log.out")
    assert len(starts) == 1 and Path(starts[0]).read_text().count("Starting with JobEnvironment") == 2, (
        "ran twice: before and after"
    )
    log = next(sweep.glob("0_Pow/train.log")).read_text()
    assert "resuming ag from" in log, log[-3000:]
    result = json.loads(next(sweep.glob("0_Pow/train_result.json")).read_text())
    assert status(sweep)[0] == 0
    # the resumed job ends with the adapter of the uninterrupted run
    assert adapters(out)["Pow"] == adapters(reference)["Pow"], result


def _killed_job_is_listed_and_rerun(sweep: Path, killed: int, done: list[int]) -> None:
    """status lists exactly `killed` as not done, with a rerun command that completes it alone."""
    code, st, table = status(sweep)
    assert code == 1
    assert st["failed"] + st["killed"] == [killed], st["jobs"]
    assert st["done"] == done and st["missing"] == [] and st["no_status"] == []
    assert st["rerun_commands"][0] in table
    argv = st["rerun"][0]
    assert "hydra/launcher=slurm_cpu" in argv
    assert [a for a in argv if a.startswith("value_profile=")] == [f"value_profile={PROFILES[killed]}"]
    before = {i: st["jobs"][i]["attempts"] for i in done}
    rerun_dir = Path(st["rerun_dir"])
    rerun(st)
    code, st, table = status(sweep)
    assert code == 0 and st["all_done"], table
    assert {i: st["jobs"][i]["attempts"] for i in done} == before, "done jobs were not rerun"
    assert [p.name for p in rerun_dir.glob("*_*")] == [f"0_{PROFILES[killed]}"], "only that job ran again"


def _lose_one_task(
    tmp_path, cache, data_dir, cleanup, launcher: list[str], task: int, strike, state: str, train: tuple[str, ...] = ()
) -> None:
    """A 2-task sweep; `strike(<array>_<task>)` once that task runs, returning when SLURM has ended it
    (state `state`). Hydra must then fail within submitit's bound, the other task complete, and the
    status + rerun complete the sweep."""
    out = tmp_path / "out"
    replaced = {a.split("=", 1)[0] for a in train}
    train_args = [a for a in TRAIN if a.split("=", 1)[0] not in replaced] + list(train)
    proc = start(
        "train.py",
        ["-m", *SLURM, *launcher, "value_profile=Pow,Uni", *train_args, *_paths(out, cache, data_dir)],
        tmp_path / "hydra.log",
    )
    try:
        sweep = wait_until(lambda: sweep_dir(out, "train"), 120, "the sweep folder")
        job = wait_until(lambda: array_id(sweep), 60, "the sbatch submission")
        submitted = time.monotonic()
        cleanup.append(job)
        wait_until(lambda: job_state(sweep, task) == "running", 300, f"task {task} to start its training")
        strike(f"{job}_{task}")
        t0 = time.monotonic()
        code = proc.wait(timeout=300)
        failed_after = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = (tmp_path / "hydra.log").read_text()
    assert code != 0 and f"(state: {state}" in text, text[-3000:]
    bound = notice_bound(t0 - submitted)
    assert failed_after < bound, f"Hydra took {failed_after:.0f} s to notice the {state} task (bound {bound:.0f} s)"
    print(f"\n{state}: Hydra failed {failed_after:.1f} s after the task ended ({t0 - submitted:.0f} s after sbatch)")
    wait_until(lambda: not in_queue(job), 300, "the other task to finish")

    def recorded() -> bool:  # accounting may lag the queue by a moment
        st = sacct_states(job)
        return st.get(f"{job}_{task}", "").startswith(state) and st.get(f"{job}_{1 - task}") == "COMPLETED"

    wait_until(recorded, 60, f"accounting to record {state} and COMPLETED")
    _killed_job_is_listed_and_rerun(sweep, killed=task, done=[1 - task])


def test_cancelled_array_task_fails_the_sweep_at_once_and_reruns_alone(cluster, cache, data_dir, tmp_path, cleanup):
    # 150 steps: still training when cancelled, even on an idle machine (see the time-limit test)
    _lose_one_task(
        tmp_path,
        cache,
        data_dir,
        cleanup,
        [],
        task=0,
        strike=lambda t: slurm("scancel", t),
        state="CANCELLED",
        train=("trainer.max_steps=150",),
    )


def test_task_past_its_time_limit_fails_the_sweep_at_once_and_reruns_alone(cluster, cache, data_dir, tmp_path, cleanup):
    def hang(task: str) -> None:
        # the task hangs (as on a stuck file system): it cannot finish within its limit, task 0 can
        slurm("scancel", "--signal=STOP", task)
        wait_until(lambda: sacct_states(task).get(task) == "TIMEOUT", 240, "SLURM to enforce the limit")

    # sbatch --time=2 for every task; signal_delay_s=0: no warning signal before the limit, SLURM itself
    # ends a task that passes it (state TIMEOUT)
    # 150 steps: long enough that the task is still training when it is stopped (12 tiny steps end in
    # about a second on an idle machine), short enough for task 0 to finish well within the 2 minutes
    _lose_one_task(
        tmp_path,
        cache,
        data_dir,
        cleanup,
        ["hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=0"],
        task=1,
        strike=hang,
        state="TIMEOUT",
        train=("trainer.max_steps=150",),
    )


def test_up_cancels_jobs_a_machine_restart_left_running_and_takes_a_busy_node(cluster, tmp_path):
    """A machine restart kills every daemon and every job's processes; slurmctld comes back from its
    saved state, which still lists the jobs as running: they held both cores of the study's cluster
    until cancelled by hand. Here the restart is that loss on a live cluster: an array task's slurmstepd
    and slurmd killed with SIGKILL, slurmctld stopped (it saves its state) and started again by
    `make slurm-up`, which must end the task it left behind and answer 0. An array task is the hard
    case: the restored controller answers "invalid job id" to its raw id (CI failed on exactly that)."""
    out = tmp_path / "sleep.out"
    # two tasks, one at a time: task 0 is split off the array record, so its raw id is not the array's
    array = slurm("sbatch", "--parsable", "-c", "1", "--array=0-1%1", "-o", str(out), "--wrap", "sleep 600")
    array = array.strip().split(";")[0]
    task = f"{array}_0"
    wait_until(lambda: slurm("squeue", "-h", "-j", task, "-o", "%T").strip() == "RUNNING", 60, "the task to run")
    raw = slurm("squeue", "-h", "-j", task, "-o", "%A").strip()
    assert raw != array
    try:
        subprocess.run(["pkill", "-KILL", "-x", "slurmd"], check=False)
        subprocess.run(["pkill", "-KILL", "-f", rf"^slurmstepd: \[{raw}\."], check=False)
        subprocess.run(["pkill", "-KILL", "-f", "^sleep 600$"], check=False)
        ctld = subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True, text=True).stdout.split()
        subprocess.run(["kill", "-TERM", *ctld], check=False)
        wait_until(lambda: not subprocess.run(["pgrep", "-x", "slurmctld"]).returncode == 0, 30, "slurmctld to stop")
        res = subprocess.run([str(ROOT / "scripts" / "slurm" / "up.sh")], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        # up.sh answers once the task has left the node: the core it held is free
        assert slurm("squeue", "-h", "-j", raw, "-t", "RUNNING,COMPLETING", "-o", "%A").strip() == "", res.stderr
        assert f"cancelling job(s) {task} " in res.stderr  # the ghost the restart left, named as scancel takes it
        wait_until(lambda: sacct_states(task).get(task, "").startswith("CANCELLED"), 30, "accounting to record it")
    finally:
        slurm("scancel", array)
    # a node that is running live jobs is up: a second `make slurm-up` beside a running job answers 0 at once
    live = slurm("sbatch", "--parsable", "-c", "1", "-o", str(out), "--wrap", "sleep 60").strip().split(";")[0]
    try:
        wait_until(lambda: slurm("squeue", "-h", "-j", live, "-o", "%T").strip() == "RUNNING", 60, "the job to run")
        again = subprocess.run([str(ROOT / "scripts" / "slurm" / "up.sh")], capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr
        assert "cancelling" not in again.stderr
        assert slurm("squeue", "-h", "-j", live, "-o", "%T").strip() == "RUNNING"
    finally:
        slurm("scancel", live)
