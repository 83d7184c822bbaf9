"""Fault injection: killed runs, failing scorer services, damaged files.

- scorer faults: the fake Perspective / OpenAI servers fail 30% of requests (429, 500, timeouts,
  garbage bodies; seeded): every sample is scored with its scorer named or counted missing, never
  silently 0;
- damaged files: generation / score caches, a stored results.json, a checkpoint, an adapter, a run
  folder's train_result.json and the automatic-mitigation file are truncated or garbled, then the
  rerun detects it (a warning naming the file, or a one-line error) and recomputes;
- kill and rerun (slow): tests/fault_sweep.py SIGKILLs the pipeline at random moments and checks
  that the rerun completes every result exactly once without redoing complete work.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.cli import ROOT, run_script
from helpers.fake_openai import FakeOpenAI
from helpers.fake_perspective import FakePerspective, fake_score

FAIL_RATE = 0.3
PERSPECTIVE_FAILURES = ("429", "500", "timeout", "garbage")
JUDGE_FAILURES = ("unparseable", "429", "timeout", "500", "garbage", "schema")


# --------------------------------------------------------------------------------------------------
# shared set-up


@pytest.fixture
def iso_cache(tmp_path, cache_dir):
    """A cache folder of this test's own (its sqlite caches can be damaged freely) that shares the
    session's tiny model through a symlink."""
    from omegaconf import OmegaConf

    from value_harms.models.loading import resolve_model_dir

    resolve_model_dir(OmegaConf.load(ROOT / "conf/model/tiny.yaml"), str(cache_dir))  # built once
    c = tmp_path / "cache"
    c.mkdir()
    (c / "models").symlink_to(cache_dir / "models", target_is_directory=True)
    return c


def _base(tmp_path, cache, data_dir, *extra):
    return [
        "model=tiny",
        "logger=none",
        "generation.progress=false",
        "trainer.enable_progress_bar=false",
        f"paths.output_dir={tmp_path}/out",
        f"paths.cache_dir={cache}",
        f"paths.data_dir={data_dir}",
        *extra,
    ]


RTP = [
    "value_profile=vanilla",
    "benchmark=rtp",
    "benchmark.limit=3",
    "benchmark.num_samples=2",
    "benchmark.max_new_tokens=6",
    "scorer=profanity_check",
]
TRAIN = ["value_profile=Pow", "vim_stage=ag", "debug=fast", "alignment.enabled=false", "vim_stage.lr=0.05"]


@pytest.fixture
def evaluate(compose, tmp_path, iso_cache, data_dir):
    from value_harms.eval.task import run_evaluate

    return lambda *extra: run_evaluate(compose("evaluate", _base(tmp_path, iso_cache, data_dir, *extra)))


@pytest.fixture
def train(compose, tmp_path, iso_cache, data_dir):
    from value_harms.train.task import run_train

    return lambda *extra: run_train(compose("train", _base(tmp_path, iso_cache, data_dir, *extra)))


def _samples(res) -> list[dict]:
    return [json.loads(x) for x in (Path(res["store_dir"]) / "samples.jsonl").read_text().splitlines()]


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _garble(path: Path, seed: int = 0) -> None:
    rng = random.Random(seed)
    data = bytearray(path.read_bytes())
    for i in range(0, min(len(data), 200)):  # the header and the start of the first page
        data[i] = rng.randrange(256)
    path.write_bytes(bytes(data))


def _warned(caplog, *needles: str) -> bool:
    return any(r.levelno >= logging.WARNING and all(n in r.getMessage() for n in needles) for r in caplog.records)


# --------------------------------------------------------------------------------------------------
# 2. scorer faults


class FlakyPerspective(FakePerspective):
    """The fake Perspective API failing a seeded 30% of requests (429 / 500 / timeout / garbage)."""

    def __init__(self, seed: int, rate: float = FAIL_RATE, **kw):
        super().__init__(**kw)
        self.rng = random.Random(seed)
        self.rate = rate
        self.n_failed = 0

    def take_mode(self, text: str):
        with self._lock:
            if text in self.fail_texts:
                return self.fail_texts[text]
            if self.rng.random() >= self.rate:
                return None
            self.n_failed += 1  # the kinds in turn: every kind shows up once four requests failed
            return PERSPECTIVE_FAILURES[(self.n_failed - 1) % len(PERSPECTIVE_FAILURES)]


def test_perspective_failures_fall_back_or_count_missing(evaluate, monkeypatch):
    srv = FlakyPerspective(seed=7, delay_s=0.5).start()
    try:
        monkeypatch.setenv("PERSPECTIVE_API_KEY", srv.valid_key)
        # two texts always fail (the service gives up on them): they must reach the fallback chain
        first = evaluate(*RTP[:-1], "benchmark.limit=8", "scorer=profanity_check", "force=true", "scorer.cache=false")
        texts = sorted({s["scored_text"] for s in _samples(first)})
        for t in texts[:2]:
            srv.fail_texts[t] = "500"
        res = evaluate(
            *RTP[:-1],
            "benchmark.limit=8",
            "scorer=perspective",
            "scorer.fallback=[detoxify,profanity_check]",
            f"scorer.perspective.endpoint={srv.endpoint}",
            "scorer.perspective.timeout_s=0.3",
            "scorer.perspective.backoff_base_s=0.01",
            "scorer.perspective.max_retries=2",
            "scorer.perspective.qps=1000",
            # failures in a row (the two texts that always fail, next to random ones) would open the
            # breaker, which counts 5xx too (tests/test_network_stalls.py): this test is per text
            "scorer.breaker.max_consecutive_failures=50",
            "scorer.cache=false",
        )
    finally:
        srv.stop()
    assert not srv.invalid
    samples = _samples(res)
    assert len(samples) == 16
    modes = [m for _, _, m in srv.requests]
    assert sum(m is not None for m in modes) >= 0.15 * len(modes), "the fake injected too few failures"
    assert {m for m in modes if m} >= set(PERSPECTIVE_FAILURES)
    per_text: dict[str, list] = {}
    for text, _, mode in srv.requests:
        per_text.setdefault(text, []).append(mode)
    scored = missing = 0
    for s in samples:
        if s["score"] is None:
            missing += 1
            assert s["error"], f"a missing score without an error: {s}"
            continue
        scored += 1
        assert s["scorer"], f"a score without its scorer: {s}"
        if s["scorer"].startswith("perspective"):
            # a Perspective score is the service's answer, never a stand-in for a failure
            assert s["score"] == pytest.approx(fake_score(s["scored_text"]))
            assert any(m is None or m == "timeout" for m in per_text[s["scored_text"]])
        else:
            assert s["scorer"].startswith("profanity_check"), s["scorer"]
            modes_t = per_text.get(s["scored_text"], [])
            assert modes_t and all(m is not None for m in modes_t), "fell back although Perspective answered"
    assert {srv_t for srv_t in texts[:2]} <= {s["scored_text"] for s in samples if s["scorer"].startswith("profanity")}
    info = res["scorer"]
    assert scored + missing == info["n"] == 16
    assert info["missing"] == missing
    assert sum(info["by_scorer"].values()) == scored
    assert info["provenance"]["unavailable"].get("detoxify"), "detoxify is expected to be unavailable here"
    assert info["provenance"]["fallback_texts"] >= 2 and info["stand_in"] is True
    m = res["metrics"]["overall"]
    assert m["missing_samples"] == missing and m["n_prompts"] == 8


class FlakyJudge(FakeOpenAI):
    """The fake OpenAI endpoint failing a seeded 30% of requests, unparseable answers included."""

    def __init__(self, seed: int, rate: float = FAIL_RATE, **kw):
        super().__init__(**kw)
        self.rng = random.Random(seed)
        self.rate = rate
        self.n_failed = 0

    def _next_mode(self) -> str:
        with self._lock:
            if self.rng.random() >= self.rate:
                return "ok"
            self.n_failed += 1
            return JUDGE_FAILURES[(self.n_failed - 1) % len(JUDGE_FAILURES)]


def _verdict(body: dict) -> str:
    text = body["messages"][0]["content"]
    reply = text.split("[ASSISTANT REPLY]", 1)[-1]
    return "flagged" if len(reply) % 2 else "unflagged"


def test_judge_failures_are_missing_never_zero(evaluate, monkeypatch):
    with FlakyJudge(
        seed=3,
        key="sk-flaky",
        model="judge-model",
        slow_s=0.6,
        answer=lambda body: f"Reasoning.\n#verdict: {_verdict(body)}",
    ) as srv:
        monkeypatch.setenv("JUDGE_API_KEY", "sk-flaky")
        res = evaluate(
            "value_profile=vanilla",
            "benchmark=beavertails",
            "benchmark.limit=16",
            "benchmark.max_new_tokens=4",
            "scorer=llm_judge",
            f"scorer.judge.base_url={srv.base_url}",
            "scorer.judge.model=judge-model",
            "scorer.judge.max_retries=1",
            "scorer.judge.timeout_s=0.3",
            "scorer.judge.backoff_base_s=0.01",
            "scorer.judge.qps=1000",
            "scorer.cache=false",
        )
        assert not srv.problems
        bodies = list(srv.requests)
        modes = list(srv.modes_seen)
    assert sum(m != "ok" for m in modes) >= 0.15 * len(modes)
    assert {m for m in modes if m != "ok"} >= set(JUDGE_FAILURES[:4])
    samples = _samples(res)
    assert len(samples) == 16
    # what the judge says for each reply, when it answers properly
    expected = {}
    for body in bodies:
        reply = body["messages"][0]["content"].split("[ASSISTANT REPLY]", 1)[-1]
        expected[reply] = 1.0 if _verdict(body) == "flagged" else 0.0
    scored = missing = 0
    for s in samples:
        if s["score"] is None:
            missing += 1
            assert s["error"], s
            assert s["label"] is None
            continue
        scored += 1
        assert s["scorer"].startswith("judge:openai:judge-model")
        assert s["label"] in ("flagged", "unflagged")
        # a 0 is the judge's "unflagged", never a failure: it matches the answer for this reply
        matches = [v for reply, v in expected.items() if s["continuation"] in reply]
        assert matches and s["score"] in matches, s
    info = res["scorer"]
    assert scored + missing == info["n"] == 16 and info["missing"] == missing
    counts = info["provenance"]["counts"]
    assert counts.get("missing", 0) >= missing - 1  # per unique pair; duplicates may share one answer
    m = res["metrics"]["overall"]
    assert m["n"] + m["missing"] == 16 and m["missing"] == missing
    assert missing >= 1, "no failure reached the results: the test would prove nothing"
    if scored:
        flagged = sum(s["score"] == 1.0 for s in samples if s["score"] is not None)
        assert m["flagged_rate"] == pytest.approx(flagged / scored)


# --------------------------------------------------------------------------------------------------
# 3. damaged files


@pytest.mark.parametrize("damage", [_truncate, _garble], ids=["truncated", "garbled"])
def test_damaged_generation_cache_is_detected_and_regenerated(evaluate, iso_cache, caplog, damage):
    first = evaluate(*RTP)
    db = iso_cache / "generations.sqlite"
    assert db.is_file() and first["generation"]["generated"] == 3
    damage(db)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = evaluate(*RTP, "force=true")
    assert _warned(caplog, "generations.sqlite"), caplog.text
    assert glob.glob(str(iso_cache / "generations.sqlite.corrupt-*"))
    assert again["generation"]["generated"] == 3 and again["generation"]["cached"] == 0
    assert [s["continuation"] for s in _samples(again)] == [s["continuation"] for s in _samples(first)]
    # the fresh cache works: a third run generates nothing
    third = evaluate(*RTP, "force=true")
    assert third["generation"]["cached"] == 3 and third["generation"]["generated"] == 0


@pytest.mark.parametrize("damage", [_truncate, _garble], ids=["truncated", "garbled"])
def test_damaged_score_cache_is_detected_and_rescored(evaluate, iso_cache, caplog, damage):
    first = evaluate(*RTP)
    db = iso_cache / "scores.sqlite"
    assert db.is_file()
    damage(db)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = evaluate(*RTP, "force=true")
    assert _warned(caplog, "scores.sqlite"), caplog.text
    assert glob.glob(str(iso_cache / "scores.sqlite.corrupt-*"))
    assert [s["score"] for s in _samples(again)] == [s["score"] for s in _samples(first)]
    assert again["scorer"]["missing"] == 0
    cache = again["scorer"]["provenance"]["backends"]["profanity_check"]["cache"]
    assert cache["hits"] == 0 and cache["misses"] > 0


def test_truncated_stored_results_json_is_recomputed(evaluate, caplog):
    first = evaluate(*RTP)
    store = Path(first["store_dir"])
    _truncate(store / "results.json")
    assert (store / "COMPLETE").is_file()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = evaluate(*RTP)
    assert _warned(caplog, str(store / "results.json")), caplog.text
    assert again["skipped"] is False and again["store_dir"] == str(store)
    assert json.loads((store / "results.json").read_text())["metrics"] == first["metrics"]
    assert again["generation"]["cached"] == 3 and again["generation"]["generated"] == 0  # nothing regenerated
    assert evaluate(*RTP)["skipped"] is True


def test_truncated_checkpoint_after_a_kill_restarts_the_step(compose, tmp_path, iso_cache, data_dir, caplog):
    """Kill a training run once it has a last.ckpt, truncate the checkpoint, rerun: a warning names
    the file and the step is trained again from scratch to its full length."""
    from value_harms.train.task import run_train

    args = _base(
        tmp_path,
        iso_cache,
        data_dir,
        "value_profile=Sec",
        "vim_stage=ag",
        "alignment.enabled=false",
        "trainer.max_steps=12",
        "train.checkpoint_every_n_steps=2",
        "trainer.val_check_interval=6",
        "trainer.limit_val_batches=1",
    )
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pattern = f"{tmp_path}/out/store/train/tiny/ag/Sec/*/ag/ckpt/last.ckpt"
    deadline = time.time() + 120
    ckpts: list[str] = []
    while time.time() < deadline and not ckpts and proc.poll() is None:
        ckpts = glob.glob(pattern)
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpts, "no checkpoint appeared before the run ended"
    last = Path(ckpts[0])
    step_dir = last.parents[1]
    assert not (step_dir / "COMPLETE").exists(), "the run finished before the kill"
    _truncate(last, 0.3)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        res = run_train(compose("train", args))
    assert _warned(caplog, str(last), "unreadable"), caplog.text
    fit = res["steps"]["ag"]
    assert fit["resumed_from"] is None and fit["global_step"] == 12
    assert json.loads((step_dir / "COMPLETE").read_text())["fit"]["global_step"] == 12


def test_truncated_adapter_is_detected_then_retrained(train, evaluate, caplog):
    from value_harms.errors import EvaluationError
    from value_harms.models.lora import adapter_problem

    first = train(*TRAIN)
    adapter = Path(first["adapter_dir"])
    weights = adapter / "adapter_model.safetensors"
    assert adapter_problem(adapter) is None
    _truncate(weights)
    assert adapter_problem(adapter) is not None
    # evaluation: a one-line error naming the file and the command that retrains, no traceback
    caplog.clear()
    with caplog.at_level(logging.WARNING), pytest.raises(EvaluationError, match="damaged") as err:
        evaluate(*RTP[1:], *TRAIN)
    assert str(weights) in str(err.value) and "python train.py" in str(err.value)
    assert "\n" not in str(err.value)
    assert _warned(caplog, str(weights)), caplog.text
    # an explicit adapter_dir is checked the same way
    with pytest.raises(EvaluationError, match="damaged"):
        evaluate(*RTP[1:], *TRAIN, f"adapter_dir={adapter}")
    # training: the damaged step is found, said, and retrained from scratch (not resumed at its end)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = train(*TRAIN)
    assert _warned(caplog, str(weights), "retraining"), caplog.text
    assert not again.get("skipped") and not again["steps"]["ag"].get("skipped")
    assert again["steps"]["ag"]["resumed_from"] is None and again["steps"]["ag"]["global_step"] == 4
    assert adapter_problem(adapter) is None
    res = evaluate(*RTP[1:], *TRAIN)
    assert res["baseline"] == "vim" and res["model"]["adapter_sha256"] == again["adapter_sha256"]


def test_truncated_train_result_is_skipped_by_analysis_and_status(tmp_path, iso_cache, data_dir, caplog):
    from value_harms.analysis import load_alignment
    from value_harms.analysis.tidy import find_train_results
    from value_harms.tools.status import sweep_status

    sweep_dir = tmp_path / "sweep"
    res = run_script(
        "train.py",
        [
            "-m",
            *_base(tmp_path, iso_cache, data_dir, *TRAIN),
            "trainer.max_steps=2",
            "alignment.enabled=true",
            "alignment.max_new_tokens=1",
            f"hydra.sweep.dir={sweep_dir}",
        ],
    )
    assert res.returncode == 0, res.stderr[-2000:]
    run_result = sweep_dir / "0_Pow" / "train_result.json"
    assert run_result.is_file()
    _truncate(run_result)
    inputs = [str(sweep_dir), f"{tmp_path}/out/store/train"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        files = find_train_results(inputs)
        aln = load_alignment(inputs)
    assert _warned(caplog, str(run_result)), caplog.text
    assert run_result not in files and len(files) == 1  # the store's copy is still read
    assert set(aln["profile"]) == {"Pow"}
    st = sweep_status(sweep_dir)
    assert st["all_done"] is True
    # a garbled status.json: the job is reported as not done (to rerun), not a crash
    (sweep_dir / "0_Pow" / "status.json").write_text('{"status": "comp')
    st = sweep_status(sweep_dir)
    assert st["all_done"] is False and st["no_status"] == [0] and st["rerun_commands"]


def test_garbled_auto_mitigation_file_is_a_one_line_error(tmp_path, cache_dir, data_dir):
    auto = tmp_path / "auto_mitigation.json"
    auto.write_text('{"rtp": {"all": ["Power", ')
    res = run_script(
        "evaluate.py", _base(tmp_path, cache_dir, data_dir, *RTP, "mitigation=auto", f"mitigation.auto_file={auto}")
    )
    assert res.returncode == 2, res.stderr[-2000:]
    err = [line for line in res.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(err) == 1 and str(auto) in err[0] and "not valid JSON" in err[0], res.stderr[-2000:]
    assert "Traceback" not in res.stderr


# --------------------------------------------------------------------------------------------------
# 1. kill and rerun (slow): the whole pipeline, SIGKILLed at random moments


@pytest.mark.slow
def test_kill_and_rerun_sweep(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    import fault_sweep

    n = int(os.environ.get("FAULT_SWEEP_ITERATIONS", "10"))
    summary = fault_sweep.sweep(n, seed=int(os.environ.get("FAULT_SWEEP_SEED", "0")), workdir=str(tmp_path / "sweep"))
    print(fault_sweep.summary_line(summary))
    failed = [d for d in summary["details"] if d["problems"]]
    assert not failed, json.dumps(failed, indent=1, default=str)[:4000]
    assert summary["passed"] == n
    assert set(summary["phases_chosen"]) == set(fault_sweep.PHASES)
    if n >= 4:
        assert all(v > 0 for v in summary["phases_chosen"].values())
