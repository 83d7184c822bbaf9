"""train.py end to end on the tiny model: stages, adapters, resume, multirun, W&B offline files."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers.cli import ROOT, run_script


def _overrides(tmp_path, cache_dir, data_dir, *extra):
    return [
        "model=tiny",
        "debug=fast",
        "logger=none",
        "trainer.enable_progress_bar=false",
        f"paths.output_dir={tmp_path}/out",
        f"paths.cache_dir={cache_dir}",
        f"paths.data_dir={data_dir}",
        # the tiny tokenizer spends ~100 tokens on the QA prompt: give the target room
        "vim_stage.max_length=256",
        "vim_stage.lr=0.01",
        *extra,
    ]


@pytest.fixture
def train(compose, tmp_path, cache_dir, data_dir):
    from value_harms.train.task import run_train

    def _train(*extra):
        cfg = compose("train", _overrides(tmp_path, cache_dir, data_dir, *extra))
        return run_train(cfg)

    return _train


def _logits(model, tokenizer, text="Statement: we should protect nature. Answer:"):
    batch = tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("stage", ["ag", "qa", "full"])
def test_stage_produces_adapter_that_changes_output(train, stage, cache_dir):
    from omegaconf import OmegaConf

    from value_harms.models.loading import get_base_model
    from value_harms.models.lora import detach_lora, load_adapter

    res = train("value_profile=Pow", f"vim_stage={stage}")
    adapter = Path(res["adapter_dir"])
    assert (adapter / "adapter_config.json").is_file()
    assert set(res["steps"]) == set({"ag": ["ag"], "qa": ["qa"], "full": ["ag", "qa"]}[stage])
    assert all(s["global_step"] == 4 for s in res["steps"].values())
    base, tok = get_base_model(OmegaConf.load(ROOT / "conf/model/tiny.yaml"), str(cache_dir))
    before = _logits(base, tok)
    peft = load_adapter(base, str(adapter))
    after = _logits(peft, tok)
    detach_lora(peft)
    assert not torch.allclose(before, after), "the trained adapter does not change the model's output"
    assert torch.allclose(before, _logits(base, tok)), "detaching must restore the base model"
    assert res["alignment"]["n_items"] == 40


def test_full_stage_continues_the_stage1_adapter(train):
    res = train("value_profile=Uni", "vim_stage=full")
    store = Path(res["store_dir"])
    assert (store / "ag" / "adapter").is_dir() and (store / "qa" / "adapter").is_dir()
    # stage-1 counts for the Uni anchor (PROTOCOL.md: 311 positives in all)
    pos = res["data_counts"]["ag"]["positives"]
    assert sum(pos.values()) == 311
    assert res["data_counts"]["qa"]["examples"] == {"train": 16594, "valid": 2062}


def test_rerun_skips_complete_work(train):
    first = train("value_profile=Pow", "vim_stage=ag")
    again = train("value_profile=Pow", "vim_stage=ag")
    assert again["skipped"] is True, "a complete job is not recomputed (no model load)"
    assert again["adapter_sha256"] == first["adapter_sha256"]


def test_profile_without_positives_trains_and_says_so(train, caplog):
    res = train("value_profile=close_Ach", "vim_stage=ag")
    assert sum(res["data_counts"]["ag"]["positives"].values()) == 0
    assert "no positive argument" in caplog.text


def test_vanilla_checks_alignment_without_training(train):
    res = train("value_profile=vanilla")
    assert res["stage"] == "none" and "adapter_dir" not in res
    assert res["alignment"]["nmse_expected"] is None  # no target profile
    assert len(res["alignment"]["rows"]) == 40


@pytest.mark.slow  # 400 steps; the normal suite's kill-and-resume proof is tests/test_resume.py (identical adapters)
def test_killed_run_resumes_from_last_checkpoint(tmp_path, cache_dir, data_dir):
    args = _overrides(
        tmp_path,
        cache_dir,
        data_dir,
        "value_profile=Sec",
        "vim_stage=ag",
        "trainer.max_steps=400",
        "train.checkpoint_every_n_steps=5",
        "trainer.val_check_interval=200",
        "alignment.enabled=false",
    )
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    ckpts: list[str] = []
    while time.time() < deadline and not ckpts and proc.poll() is None:
        ckpts = glob.glob(f"{tmp_path}/out/store/train/tiny/ag/Sec/*/ag/ckpt/last.ckpt")
        time.sleep(0.05)
    assert ckpts, "no checkpoint appeared before the run ended"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step_dir = Path(ckpts[0]).parents[1]
    assert not (step_dir / "COMPLETE").exists()
    killed_at = torch.load(ckpts[0], map_location="cpu", weights_only=False)["global_step"]
    assert 0 < killed_at < 400
    res = run_script("train.py", args)
    assert res.returncode == 0, res.stderr[-2000:]
    done = json.loads((step_dir / "COMPLETE").read_text())
    assert done["fit"]["resumed_from"].endswith("last.ckpt")
    assert done["fit"]["global_step"] == 400


def test_multirun_two_profiles_with_wandb_offline(tmp_path, cache_dir, data_dir):
    args = _overrides(tmp_path, cache_dir, data_dir, "vim_stage=ag", "logger=wandb", "alignment.max_new_tokens=4")
    res = run_script("train.py", ["-m", "value_profile=Pow,Uni", *args])
    assert res.returncode == 0, res.stderr[-3000:]
    runs_ = sorted(glob.glob(f"{tmp_path}/out/multiruns/train/*/*_*/train_result.json"))
    assert [Path(r).parent.name for r in runs_] == ["0_Pow", "1_Uni"]
    for r in runs_:
        wb = glob.glob(str(Path(r).parent / "wandb" / "offline-run-*" / "run-*.wandb"))
        assert wb, "no offline W&B run file"
        blob = Path(wb[0]).read_bytes()
        # the resolved config and the flat value keys are in the run's record
        for key in (b"value/Power", b"value/Universalism", b"lora_r", b"q_proj", b"profile/anchor"):
            assert key in blob, key
        assert b"${" not in blob, "config logged without resolving interpolations"
