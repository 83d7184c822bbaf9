"""Resume identical: a training job SIGKILLed mid-epoch and rerun with the same command ends with
the same adapter (sha256 of its files), the same best step / validation loss and the same PVQ check
as an uninterrupted run, bit for bit on CPU.

Kills are real: `train.py` runs in a subprocess that is SIGKILLed a random time after its m-th
checkpoint write (m and the fraction of a checkpoint interval drawn from a seeded RNG,
RESUME_TEST_SEED), so a kill lands anywhere in a step: forward/backward, validation, adapter or
checkpoint writing. The runs cross epoch boundaries (limit_train_batches), validate every 2 steps
and checkpoint every 3, so resumes start mid-epoch, right after a validation or at an epoch end.
"""

from __future__ import annotations

import glob
import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from helpers.cli import ROOT

MAX_STEPS = 16
# 5 batches an epoch (16 steps cross 3 epoch ends), validation every 2 batches, a checkpoint every
# 3 steps; lr 3.0 makes the validation loss go down then up: the best adapter is saved mid-run, so
# some kills come after it and the rerun must keep it.
TRAIN = [
    "model=tiny",
    "logger=none",
    "value_profile=Pow",
    "vim_stage=ag",
    "trainer.enable_progress_bar=false",
    f"trainer.max_steps={MAX_STEPS}",
    "trainer.limit_train_batches=5",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=2",
    "vim_stage.lr=3.0",
    "data.pad_to=longest",
    "alignment.max_new_tokens=4",
    "train.num_threads=1",
]
SEED = int(os.environ.get("RESUME_TEST_SEED", "0"))


def _args(tmp_path, name, cache_dir, data_dir, every_n_steps: int = 3):
    return [
        *TRAIN,
        f"paths.output_dir={tmp_path}/{name}",
        f"paths.cache_dir={cache_dir}",
        f"paths.data_dir={data_dir}",
        f"train.checkpoint_every_n_steps={every_n_steps}",
    ]


def _env():
    return {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }


def _ckpt(out: Path) -> Path | None:
    found = glob.glob(f"{out}/store/train/tiny/ag/Pow/*/ag/ckpt/last.ckpt")
    return Path(found[0]) if found else None


def _stamp(path: Path | None):
    try:
        st = path.stat() if path else None
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns) if st else None


def run_and_kill(args: list[str], out: Path, writes: int, fraction: float, log: Path) -> dict:
    """Start train.py, SIGKILL it `fraction` of a checkpoint interval after its `writes`-th
    checkpoint write; returns where it stopped (the checkpoint's global_step) and the timing."""
    with open(log, "a") as fh:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=_env(), stdout=fh, stderr=subprocess.STDOUT
        )
        seen: list[float] = []
        last = _stamp(_ckpt(out))
        deadline = time.monotonic() + 600
        try:
            while proc.poll() is None and time.monotonic() < deadline and len(seen) < writes:
                now = _stamp(_ckpt(out))
                if now is not None and now != last:
                    seen.append(time.monotonic())
                    last = now
                time.sleep(0.005)
            interval = seen[-1] - seen[-2] if len(seen) >= 2 else 0.3
            time.sleep(fraction * interval)
        finally:
            alive = proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    ckpt = _ckpt(out)
    assert alive and len(seen) == writes, f"the run ended before the kill ({len(seen)} checkpoint writes); see {log}"
    assert not (ckpt.parents[1] / "COMPLETE").exists(), "the step was complete before the kill"
    step = int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])
    return {"writes": writes, "fraction": round(fraction, 3), "resume_step": step}


def run_to_end(args: list[str], out: Path, log: Path) -> dict:
    with open(log, "a") as fh:
        rc = subprocess.run(
            [sys.executable, str(ROOT / "train.py"), *args],
            cwd=ROOT,
            env=_env(),
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=900,
        ).returncode
    assert rc == 0, f"train.py failed (rc {rc}); see {log}"
    return _result(out)


def _result(out: Path) -> dict:
    found = glob.glob(f"{out}/store/train/tiny/ag/Pow/*/train_result.json")
    assert len(found) == 1, found
    return json.loads(Path(found[0]).read_text())


def _identity(res: dict) -> dict:
    """What must not depend on interruptions: adapter bytes, best step / loss, steps, PVQ check."""
    fit = res["steps"]["ag"]
    alignment = {k: v for k, v in res["alignment"].items() if k != "items_path"}
    return {
        "adapter_sha256": res["adapter_sha256"],
        "best_step": fit["best_step"],
        "best_val_loss": fit["best_val_loss"],
        "global_step": fit["global_step"],
        "alignment": alignment,
    }


@pytest.fixture
def in_process(compose, monkeypatch):
    """run_train in this process (train.num_threads=1 is restored afterwards)."""
    from value_harms.train.task import run_train

    threads = torch.get_num_threads()

    def _run(args):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = run_train(compose("train", args))
        assert not [w for w in caught if "not resumable" in str(w.message)], "Lightning: dataloader not resumable"
        return res

    yield _run
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------------
# the resumable data order, without training


def test_epoch_order_depends_on_seed_and_epoch_only():
    from value_harms.data.resumable import EpochSampler

    a, b = EpochSampler(50, seed=3), EpochSampler(50, seed=3)
    b.set_epoch(2)
    first_in_b = list(b)
    a.set_epoch(2)
    assert list(a) == first_in_b and sorted(first_in_b) == list(range(50))
    a.set_epoch(1)
    assert list(a) != first_in_b, "two epochs with the same order"
    assert list(EpochSampler(50, seed=4)) != list(EpochSampler(50, seed=3)), "train.seed does not change the order"


def test_loader_state_skips_exactly_the_batches_already_trained_on():
    from value_harms.data.resumable import ResumableDataLoader

    def loader():
        return ResumableDataLoader(list(range(23)), batch_size=4, seed=7, collate_fn=list)

    full = loader()
    full.sampler.set_epoch(1)
    uninterrupted = list(full)
    killed = loader()
    killed.sampler.set_epoch(1)
    it = iter(killed)
    seen = [next(it), next(it)]
    state = killed.state_dict()
    assert state == {"seed": 7, "n": 23, "epoch": 1, "position": 8}
    resumed = loader()  # a new process: fresh objects, the state from the checkpoint
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(1)  # what Lightning does at the start of the resumed epoch
    rest = list(resumed)
    assert seen + rest == uninterrupted
    assert resumed.state_dict()["position"] == 23
    resumed.sampler.set_epoch(2)  # the next epoch starts at its beginning again
    assert sorted(x for b in resumed for x in b) == list(range(23))
    with pytest.raises(ValueError, match="n=23, seed=7.*n=23, seed=8"):
        ResumableDataLoader(list(range(23)), batch_size=4, seed=8, collate_fn=list).load_state_dict(state)


def test_adapter_files_do_not_depend_on_the_process(compose, cache_dir, tmp_path):
    """PEFT writes target_modules (a set) in string-hash order, which differs between processes
    (PYTHONHASHSEED): the same weights must still give the same files and sha256."""
    from value_harms.models.loading import get_base_model
    from value_harms.models.lora import adapter_sha256, attach_lora, detach_lora
    from value_harms.train.module import save_adapter

    cfg = compose("train", ["model=tiny", f"paths.cache_dir={cache_dir}"])
    base, _ = get_base_model(cfg.model, str(cache_dir))
    model = attach_lora(base, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    try:
        shas = []
        for i, order in enumerate((["q_proj", "v_proj"], ["v_proj", "q_proj"])):
            model.peft_config["default"].target_modules = order  # what two processes can hold
            save_adapter(model, tmp_path / f"a{i}")
            shas.append(adapter_sha256(tmp_path / f"a{i}"))
    finally:
        detach_lora(model)
    assert shas[0] == shas[1]
    assert json.loads((tmp_path / "a1" / "adapter_config.json").read_text())["target_modules"] == ["q_proj", "v_proj"]


# --------------------------------------------------------------------------------------------------
# SIGKILL and rerun


def test_killed_twice_then_rerun_equals_uninterrupted(in_process, tmp_path, cache_dir, data_dir):
    """Two SIGKILLs at random points of one job (the second one kills the resumed run), then the
    same command to the end: adapter sha256, best step, best val loss and PVQ check are equal to
    an uninterrupted run's; no 'dataloader not resumable' warning. The uninterrupted run writes a
    checkpoint every step, the killed one every 3: the cadence does not change the adapter either
    (it is not part of the training key)."""
    rng = random.Random(SEED)
    ref = in_process(_args(tmp_path, "ref", cache_dir, data_dir, every_n_steps=1))
    assert ref["steps"]["ag"]["global_step"] == MAX_STEPS and ref["steps"]["ag"]["resumed_from"] is None
    assert ref["steps"]["ag"]["best_step"] < 14, "the best adapter is the last one: the test needs one mid-run"
    args = _args(tmp_path, "killed", cache_dir, data_dir)
    out, log = tmp_path / "killed", tmp_path / "killed.log"
    first = run_and_kill(args, out, writes=rng.randint(1, 2), fraction=rng.random(), log=log)
    second = run_and_kill(args, out, writes=rng.randint(1, 2), fraction=rng.random(), log=log)
    print(f"kill points: {first} then {second}")
    assert 0 < first["resume_step"] < second["resume_step"] < MAX_STEPS
    assert "not resumable" not in log.read_text()
    res = in_process(args)
    assert res["steps"]["ag"]["resumed_from"].endswith("last.ckpt")
    assert _identity(res) == _identity(ref)


@pytest.mark.slow
def test_sigkill_at_random_points_all_identical(tmp_path, cache_dir, data_dir):
    """Four more jobs, each SIGKILLed once at a random point and rerun, all through train.py
    (reference included, with a checkpoint every 7 steps): every rerun equals the uninterrupted run."""
    rng = random.Random(SEED + 1)
    ref = run_to_end(
        _args(tmp_path, "ref", cache_dir, data_dir, every_n_steps=7), tmp_path / "ref", tmp_path / "ref.log"
    )
    points = []
    for i in range(4):
        args = _args(tmp_path, f"kill{i}", cache_dir, data_dir)
        log = tmp_path / f"kill{i}.log"
        point = run_and_kill(args, tmp_path / f"kill{i}", writes=rng.randint(1, 4), fraction=rng.random(), log=log)
        res = run_to_end(args, tmp_path / f"kill{i}", log)
        point["identical"] = _identity(res) == _identity(ref)
        points.append(point)
        assert res["steps"]["ag"]["resumed_from"].endswith("last.ckpt")
        assert "not resumable" not in log.read_text()
    print(f"kill points: {points}; best step {ref['steps']['ag']['best_step']}")
    assert all(p["identical"] for p in points), points
