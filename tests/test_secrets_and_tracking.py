"""Secrets never land on disk, and W&B trouble never costs local results.

- Canary keys in the environment (Perspective, judge, W&B), evaluations against the fake Perspective
  server (rtp) and the fake OpenAI judge (beavertails) and a training run, all with logger=wandb
  (offline): no file under paths.output_dir, the per-test paths.cache_dir or the W&B folders holds
  any canary string.
- W&B failing to start (wandb.init raises) or failing to write (Run.log raises): train.py and
  evaluate.py still write train_result.json / results.json, and the log says what happened.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from helpers.cli import run_script
from helpers.fake_openai import FakeOpenAI
from helpers.fake_perspective import FakePerspective

CANARIES = {
    "PERSPECTIVE_API_KEY": "canary-persp-7f3a",
    "JUDGE_API_KEY": "canary-judge-91bd",
    "WANDB_API_KEY": "canary-wandb-55aa",
}


def _scan(roots: list[Path]) -> tuple[int, list[str]]:
    """(files scanned, 'path: canary' for every file whose bytes contain a canary)."""
    needles = [v.encode() for v in CANARIES.values()]
    hits, n = [], 0
    for root in roots:
        if not root.exists():
            continue
        for p in root.rglob("*"):
            if p.is_file() and not p.is_symlink():
                n += 1
                data = p.read_bytes()
                hits += [f"{p}: {c.decode()}" for c in needles if c in data]
    return n, hits


@pytest.fixture
def secret_env(tmp_path):
    """Environment for the subprocesses: canaries set, W&B offline with all its folders under tmp."""
    wb = tmp_path / "wandb_home"
    env = {
        **CANARIES,
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(wb / "dir"),
        "WANDB_CACHE_DIR": str(wb / "cache"),
        "WANDB_CONFIG_DIR": str(wb / "config"),
        "WANDB_DATA_DIR": str(wb / "data"),
        "WANDB_ARTIFACT_DIR": str(wb / "artifacts"),
    }
    return env, wb


def _base(tmp_path, data_dir):
    return [
        "model=tiny",
        "logger=wandb",
        f"paths.output_dir={tmp_path}/out",
        f"paths.store_dir={tmp_path}/out/store",
        f"paths.cache_dir={tmp_path}/cache",
        f"paths.data_dir={data_dir}",
        "generation.progress=false",
    ]


def test_canary_keys_never_written(tmp_path, data_dir, secret_env):
    env, wb_home = secret_env
    base = _base(tmp_path, data_dir)

    persp = FakePerspective(valid_key=CANARIES["PERSPECTIVE_API_KEY"]).start()
    try:
        res = run_script(
            "evaluate.py",
            [
                *base,
                "benchmark=rtp",
                "benchmark.limit=2",
                "benchmark.num_samples=2",
                "benchmark.max_new_tokens=4",
                "scorer=perspective",
                f"scorer.perspective.endpoint={persp.endpoint}",
                "scorer.perspective.qps=100",
            ],
            env_extra=env,
            timeout=300,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        assert persp.requests and not persp.invalid
        assert all(key == CANARIES["PERSPECTIVE_API_KEY"] for _, key, _ in persp.requests)
    finally:
        persp.stop()

    with FakeOpenAI(
        key=CANARIES["JUDGE_API_KEY"], model="judge-model", answer=lambda body: "Harmless.\n#verdict: unflagged"
    ) as judge:
        res = run_script(
            "evaluate.py",
            [
                *base,
                "benchmark=beavertails",
                "benchmark.limit=2",
                "benchmark.max_new_tokens=4",
                "scorer=llm_judge",
                f"scorer.judge.base_url={judge.base_url}",
                "scorer.judge.model=judge-model",
                "scorer.judge.qps=100",
            ],
            env_extra=env,
            timeout=300,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        assert judge.requests and not judge.problems

    results = sorted((tmp_path / "out" / "runs" / "evaluate").glob("*/results.json"))
    assert len(results) == 2
    scorers = [json.loads(p.read_text())["scorer"]["by_scorer"] for p in results]
    assert any(any(k.startswith("perspective") for k in s) for s in scorers), scorers
    assert any(any("judge" in k for k in s) for s in scorers), scorers
    # W&B really ran (offline): its run folders exist and are part of the scan
    assert list((tmp_path / "out").rglob("offline-run-*")), "no W&B offline run folder"

    n, hits = _scan([tmp_path / "out", tmp_path / "cache", wb_home])
    assert n > 20
    assert not hits, "secrets written to disk:\n" + "\n".join(hits)
    assert not any(v in res.stdout + res.stderr for v in CANARIES.values())

    # training with W&B (adapter artifact, config, summary) and the canaries set
    res = run_script(
        "train.py",
        [*base, "value_profile=Pow", "vim_stage=ag", "debug=fast", "trainer.enable_progress_bar=false"],
        env_extra=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert list((tmp_path / "out" / "runs" / "train").glob("*/train_result.json"))
    n2, hits = _scan([tmp_path / "out", tmp_path / "cache", wb_home])
    assert n2 > n
    assert not hits, "secrets written to disk:\n" + "\n".join(hits)


# --------------------------------------------------------------------------------------------------
# W&B failures (in-process)


def _cfg(compose, name, tmp_path, cache_dir, data_dir, *extra):
    return compose(
        name,
        [
            "model=tiny",
            "logger=wandb",
            f"paths.output_dir={tmp_path}/out",
            f"paths.store_dir={tmp_path}/store",
            f"paths.cache_dir={cache_dir}",
            f"paths.data_dir={data_dir}",
            "generation.progress=false",
            *extra,
        ],
    )


TRAIN = [
    "value_profile=Pow",
    "vim_stage=ag",
    "debug=fast",
    "trainer.enable_progress_bar=false",
    "alignment.max_new_tokens=2",
]
EVAL = [
    "benchmark=rtp",
    "benchmark.limit=2",
    "benchmark.num_samples=1",
    "benchmark.max_new_tokens=3",
    "scorer=profanity_check",
]


def test_wandb_init_failure_keeps_results(compose, tmp_path, cache_dir, data_dir, monkeypatch, caplog):
    import wandb

    from value_harms.eval.task import run_evaluate
    from value_harms.train.task import run_train

    def broken_init(*a, **k):
        raise RuntimeError("wandb backend could not start")

    monkeypatch.setattr(wandb, "init", broken_init)
    with caplog.at_level(logging.WARNING):
        tr = run_train(_cfg(compose, "train", tmp_path, cache_dir, data_dir, *TRAIN))
        ev = run_evaluate(_cfg(compose, "evaluate", tmp_path, cache_dir, data_dir, *EVAL))
    assert tr["adapter_sha256"]
    run_dirs = sorted((tmp_path / "out" / "runs" / "train").glob("*/train_result.json"))
    assert len(run_dirs) == 1
    assert json.loads((run_dirs[0].parent / "status.json").read_text())["status"] == "complete"
    assert (Path(ev["run_dir"]) / "results.json").is_file()
    assert json.loads((Path(ev["run_dir"]) / "status.json").read_text())["status"] == "complete"
    starts = [r.getMessage() for r in caplog.records if "W&B did not start" in r.getMessage()]
    assert len(starts) == 2 and "could not start" in starts[0]


def test_wandb_log_failure_keeps_results(compose, tmp_path, cache_dir, data_dir, monkeypatch, caplog):
    from wandb.sdk.wandb_run import Run

    from value_harms.eval.task import run_evaluate
    from value_harms.train.task import run_train

    calls = []

    def broken_log(self, *a, **k):
        calls.append(1)
        raise OSError("W&B write failed: disk full")

    monkeypatch.setattr(Run, "log", broken_log)
    with caplog.at_level(logging.WARNING):
        tr = run_train(_cfg(compose, "train", tmp_path, cache_dir, data_dir, *TRAIN))
        ev = run_evaluate(_cfg(compose, "evaluate", tmp_path, cache_dir, data_dir, *EVAL))
    assert calls, "Run.log was never called: the test did not exercise W&B logging"
    assert tr["adapter_sha256"]
    train_dirs = sorted((tmp_path / "out" / "runs" / "train").glob("*/train_result.json"))
    assert len(train_dirs) == 1
    assert json.loads((train_dirs[0].parent / "status.json").read_text())["status"] == "complete"
    assert (Path(ev["run_dir"]) / "results.json").is_file()
    assert json.loads((Path(ev["run_dir"]) / "status.json").read_text())["status"] == "complete"
    assert any("W&B" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
