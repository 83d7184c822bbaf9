"""Network scorers and W&B with the network down: bounded per job, never per text.

Unreachable endpoints on 127.0.0.1: a closed port (refused at once) and a black hole (accepts the
connection, never answers: the client waits its read timeout). Timeouts are small here; the bounds
asserted are generous and far below the old behaviour (7 attempts per text, ~45-50 s per text with
the default settings; 97 s per job for W&B online).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.cli import ROOT, run_script
from helpers.fake_network import BlackHole, closed_port
from helpers.fake_openai import FakeOpenAI
from helpers.fake_perspective import PATH as PERSPECTIVE_PATH
from helpers.fake_perspective import FakePerspective, fake_score
from helpers.timing import bounded
from value_harms.config.schema import BreakerConfig, JudgeConfig, PerspectiveConfig, ScorerConfig
from value_harms.errors import EndpointUnreachable, ScorerError, ScorerUnavailable
from value_harms.net import breaker_for
from value_harms.scoring import probe, reset_breakers
from value_harms.scoring.download import forget_failures
from value_harms.scoring.judge import JudgeScorer
from value_harms.scoring.toxicity.chain import build_toxicity_scorer
from value_harms.scoring.toxicity.perspective import PROBE_TEXT, PerspectiveScorer

KEY = "test-key-5f3a9c"
JUDGE_KEY = "sk-judge-canary-0042"
TEXTS = [f"generated text number {i}" for i in range(50)]


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    reset_breakers()
    forget_failures()
    yield
    reset_breakers()  # no open breaker leaks into another test
    forget_failures()


def breaker(**kw) -> BreakerConfig:
    return BreakerConfig(**{"max_consecutive_failures": 5, "max_outage_s": 60.0, "connect_timeout_s": 1.0, **kw})


def pcfg(endpoint: str, **kw) -> PerspectiveConfig:
    base = dict(endpoint=endpoint, qps=0.0, max_retries=6, backoff_base_s=0.05, backoff_max_s=0.2, timeout_s=0.5)
    return PerspectiveConfig(**{**base, **kw})


def scfg(endpoint: str, fallback=("profanity_check",), brk: BreakerConfig | None = None, **kw) -> ScorerConfig:
    return ScorerConfig(
        name="t",
        toxicity="perspective",
        fallback=list(fallback),
        perspective=pcfg(endpoint),
        breaker=brk or breaker(),
        **kw,
    )


def jcfg(base_url: str, **kw) -> JudgeConfig:
    base = dict(
        backend="openai",
        model="judge-model",
        base_url=base_url,
        qps=0.0,
        max_retries=6,
        timeout_s=0.5,
        backoff_base_s=0.05,
        backoff_max_s=0.2,
    )
    return JudgeConfig(**{**base, **kw})


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# --------------------------------------------------------------------------------------------------
# Perspective: the toxicity chain falls back, with one warning giving the count


def test_perspective_black_hole_opens_breaker_and_falls_back_once(monkeypatch, caplog):
    monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
    caplog.set_level(logging.INFO)
    with BlackHole() as bh:
        chain = build_toxicity_scorer(scfg(bh.url(PERSPECTIVE_PATH)))
        scores, elapsed = bounded(lambda: chain.score(TEXTS), 60)
        prov = chain.provenance()
        chain.close()
        requests = bh.requests
    print(f"perspective black hole, 50 texts, no probe: {elapsed:.2f} s, {requests} requests")
    assert isinstance(scores, list) and len(scores) == 50
    assert requests == 5  # 5 timeouts in a row open the breaker: no request for the other 49 texts
    assert elapsed < 20  # 5 x 0.5 s read timeout + backoff; the old code: 50 x 7 x 0.5 s = 175 s
    assert all(s.value is not None and s.scorer.startswith("profanity_check") for s in scores)
    lines = [m for m in warnings_of(caplog) if "unreachable" in m]
    assert len(lines) == 1 and "50 of 50 texts" in lines[0] and KEY not in caplog.text, lines
    assert prov["unreachable_texts"] == {"perspective": 50}
    assert prov["backends"]["perspective"]["breaker"]["open"] is True


def test_perspective_closed_port_probe_then_no_request_per_text(monkeypatch, caplog):
    monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
    caplog.set_level(logging.INFO)
    cfg = scfg(f"http://127.0.0.1:{closed_port()}{PERSPECTIVE_PATH}")
    info, t_probe = bounded(lambda: probe("toxicity", cfg), 30)
    assert info["ok"] is False and "refused" in info["reason"], info
    assert KEY not in json.dumps(info) and info["endpoint"].endswith(PERSPECTIVE_PATH)
    probe_warnings = warnings_of(caplog)
    assert len(probe_warnings) == 1 and "falls back to profanity_check" in probe_warnings[0]
    chain = build_toxicity_scorer(cfg)
    scores, elapsed = bounded(lambda: chain.score(TEXTS), 30)
    persp = chain._built["perspective"]
    print(f"perspective closed port: probe {t_probe:.2f} s, 50 texts {elapsed:.2f} s")
    assert persp.stats["requests"] == 0  # the breaker opened by the probe: nothing sent per text
    assert all(s.value is not None for s in scores)
    later = [m for m in warnings_of(caplog)[1:] if "unreachable" in m]
    assert len(later) == 1 and "50 of 50 texts" in later[0]
    chain.close()


def test_perspective_black_hole_probe_is_bounded_and_spares_the_texts(monkeypatch, caplog):
    monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
    caplog.set_level(logging.WARNING)
    with BlackHole() as bh:
        cfg = scfg(bh.url(PERSPECTIVE_PATH), probe_timeout_s=1.0)
        cfg.perspective.timeout_s = 30.0  # the probe uses its own short timeout, not this one
        info, t_probe = bounded(lambda: probe("toxicity", cfg), 30)
        after_probe = bh.requests
        chain = build_toxicity_scorer(cfg)
        scores, elapsed = bounded(lambda: chain.score(TEXTS), 30)
        chain.close()
        total = bh.requests
    print(f"perspective black hole: probe {t_probe:.2f} s ({after_probe} requests), 50 texts {elapsed:.2f} s")
    assert info["ok"] is False and "timeout" in info["reason"]
    # the probe's whole budget is probe_timeout_s: one request that times out; no request per text
    assert after_probe == 1 and total == 1
    assert t_probe < 3 and elapsed < 10
    assert all(s.value is not None for s in scores)


def test_perspective_without_fallback_counts_missing_never_zero(monkeypatch):
    monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
    with BlackHole() as bh:
        chain = build_toxicity_scorer(scfg(bh.url(PERSPECTIVE_PATH), fallback=()))
        scores, elapsed = bounded(lambda: chain.score(TEXTS), 60)
        chain.close()
        requests = bh.requests
    assert requests == 5 and elapsed < 20
    assert all(s.value is None for s in scores)  # missing, never 0
    assert chain.missing == 50
    assert sum("circuit open" in (s.error or "") for s in scores) >= 49


def test_breaker_opens_after_max_outage_even_below_the_failure_count(monkeypatch):
    with BlackHole() as bh:
        sc = PerspectiveScorer(
            pcfg(bh.url(PERSPECTIVE_PATH), timeout_s=2.0),
            KEY,
            breaker_cfg=breaker(max_consecutive_failures=100, max_outage_s=3.0),
        )
        scores, elapsed = bounded(lambda: sc.score(TEXTS[:10]), 60)
        state = sc.provenance()["breaker"]
        sc.close()
        requests = bh.requests
    print(f"max_outage_s=3, timeout 2 s: {elapsed:.2f} s, {requests} requests")
    assert state["open"] and requests <= 3 and elapsed < 7
    assert all(s.value is None for s in scores)


def test_breakers_reset_per_job(monkeypatch):
    """One job's outage does not poison the next job of an in-process multirun."""
    monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
    srv = FakePerspective(valid_key=KEY).start()
    try:
        cfg = scfg(srv.endpoint)
        breaker_for(srv.endpoint).trip("outage in the previous job")
        sc = PerspectiveScorer(cfg.perspective, KEY, breaker_cfg=cfg.breaker)
        [down] = sc.score(["hello"])
        assert down.value is None and "circuit open" in down.error and not srv.requests
        info = probe("toxicity", cfg)  # the start of the next job
        assert info["ok"] is True
        [up] = sc.score(["hello"])  # the scorer built before the reset sees the fresh breaker
        sc.close()
        assert up.value == fake_score("hello")
        assert [t for t, *_ in srv.requests] == [PROBE_TEXT, "hello"]
    finally:
        srv.stop()


def test_perspective_probe_answers(monkeypatch, tmp_path):
    srv = FakePerspective(valid_key=KEY).start()
    try:
        cfg = scfg(srv.endpoint)
        monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
        assert probe("toxicity", cfg)["ok"] is None and not srv.requests  # no key: not used, not probed
        monkeypatch.setenv("PERSPECTIVE_API_KEY", "wrong-key-1234")
        with pytest.raises(ScorerError) as info:
            probe("toxicity", cfg)
        assert "PERSPECTIVE_API_KEY" in str(info.value) and "wrong-key-1234" not in str(info.value)
        monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
        ok = probe("toxicity", cfg)
        assert ok["ok"] is True and ok["scorer"] == "perspective" and KEY not in json.dumps(ok)
        assert [t for t, *_ in srv.requests] == [PROBE_TEXT, PROBE_TEXT]
        assert probe("regard", cfg)["ok"] is None
        # no weights and no way to fetch them (proxy on a closed port): stop before generation
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port()}")
        with pytest.raises(ScorerError, match="no toxicity backend available.*weights unavailable"):
            probe("toxicity", ScorerConfig(name="d", toxicity="detoxify", fallback=[]))
    finally:
        srv.stop()


# --------------------------------------------------------------------------------------------------
# The LLM judge: no fallback, so a one-line error


def test_judge_black_hole_stops_with_one_line_error():
    with BlackHole() as bh:
        judge = JudgeScorer("harmfulness", jcfg(bh.url("/v1")), api_key=JUDGE_KEY, breaker_cfg=breaker())
        err, elapsed = bounded(
            lambda: judge.score([f"answer {i}" for i in range(20)], [f"question {i}" for i in range(20)]), 60
        )
        judge.close()
        requests = bh.requests
    print(f"judge black hole, 20 pairs, no probe: {elapsed:.2f} s, {requests} requests")
    assert isinstance(err, EndpointUnreachable) and isinstance(err, ScorerError)
    msg = str(err)
    assert "\n" not in msg and "LLM judge" in msg and "unreachable" in msg and "/v1/chat/completions" in msg
    assert JUDGE_KEY not in msg
    assert requests == 5 and elapsed < 20  # the old code: 20 x 7 x 0.5 s, then exit 0, all missing


def test_judge_probe_closed_port_fails_fast(monkeypatch):
    monkeypatch.setenv("JUDGE_API_KEY", JUDGE_KEY)
    cfg = ScorerConfig(name="j", judge=jcfg(f"http://127.0.0.1:{closed_port()}/v1", timeout_s=60.0), breaker=breaker())
    err, elapsed = bounded(lambda: probe("harmfulness", cfg), 30)
    print(f"judge probe, closed port: {elapsed:.2f} s")
    assert isinstance(err, EndpointUnreachable), err
    assert "refused" in str(err) and "\n" not in str(err) and JUDGE_KEY not in str(err)
    assert elapsed < 5


def test_judge_probe_black_hole_is_bounded(monkeypatch):
    monkeypatch.setenv("JUDGE_API_KEY", JUDGE_KEY)
    with BlackHole() as bh:
        cfg = ScorerConfig(name="j", judge=jcfg(bh.url("/v1"), timeout_s=60.0), breaker=breaker(), probe_timeout_s=1.0)
        err, elapsed = bounded(lambda: probe("flag", cfg), 30)
        requests = bh.requests
    print(f"judge probe, black hole: {elapsed:.2f} s, {requests} requests")
    assert isinstance(err, EndpointUnreachable) and "timeout" in str(err)
    assert requests == 1 and elapsed < 3  # the probe's whole budget is probe_timeout_s


def test_judge_probe_key_checks(monkeypatch):
    with FakeOpenAI(key=JUDGE_KEY, model="judge-model") as srv:
        cfg = ScorerConfig(name="j", judge=jcfg(srv.base_url), breaker=breaker())
        monkeypatch.delenv("JUDGE_API_KEY", raising=False)
        with pytest.raises(ScorerUnavailable, match="JUDGE_API_KEY"):
            probe("harmfulness", cfg)
        monkeypatch.setenv("JUDGE_API_KEY", "sk-wrong-key-77")
        srv.script(["401"])
        with pytest.raises(ScorerError) as info:
            probe("harmfulness", cfg)
        assert "sk-wrong-key-77" not in str(info.value) and "\n" not in str(info.value)
        monkeypatch.setenv("JUDGE_API_KEY", JUDGE_KEY)
        ok = probe("flag", cfg)
        assert ok["ok"] is True and ok["status"] == "HTTP 200" and JUDGE_KEY not in json.dumps(ok)
        assert srv.requests[-1]["max_tokens"] == 1 and not srv.problems
        local = ScorerConfig(name="j", judge=JudgeConfig(backend="transformers", model="x"))
        assert probe("harmfulness", local)["ok"] is None


@pytest.mark.slow  # ~35 s on 2 busy cores (generation with the tiny model)
def test_cli_judge_unreachable_exits_nonzero_with_one_line(tmp_path, data_dir):
    """evaluate.py with the judge on a black hole: exit 2, `error: ...` in one line, nothing stored
    complete (the old code: exit 0 with every score missing)."""
    with BlackHole() as bh:
        t0 = time.monotonic()
        res = run_script(
            "evaluate.py",
            [
                "model=tiny",
                f"paths.output_dir={tmp_path}/out",
                f"paths.store_dir={tmp_path}/out/store",
                f"paths.cache_dir={tmp_path}/cache",
                f"paths.data_dir={data_dir}",
                "generation.progress=false",
                "benchmark=beavertails",
                "benchmark.limit=3",
                "benchmark.max_new_tokens=4",
                "scorer=llm_judge",
                f"scorer.judge.base_url={bh.url('/v1')}",
                "scorer.judge.model=judge-model",
                "scorer.judge.timeout_s=0.5",
                "scorer.judge.backoff_base_s=0.05",
                "scorer.judge.backoff_max_s=0.2",
                "scorer.breaker.connect_timeout_s=1",
                "scorer.probe_timeout_s=1",
            ],
            env_extra={"JUDGE_API_KEY": JUDGE_KEY, "NO_PROXY": "127.0.0.1"},
            timeout=300,
        )
        elapsed = time.monotonic() - t0
        requests = bh.requests
    print(f"evaluate.py, judge on a black hole: {elapsed:.1f} s, exit {res.returncode}, {requests} requests")
    assert res.returncode == 2, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: LLM judge") and "unreachable" in last, last
    assert "Traceback" not in res.stderr and JUDGE_KEY not in res.stderr + res.stdout
    assert requests <= 5 + 2  # the breaker's 5, plus the probe's 2 when evaluation calls it first
    assert not list((tmp_path / "out").rglob("results.json"))


# --------------------------------------------------------------------------------------------------
# W&B online without a network: <= 10 s per job, then offline with one warning

_WANDB_JOB = r"""
import json, logging, sys, time
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
from value_harms.runtime import tracking
cfg = {"kind": "wandb", "mode": "online", "project": "nd-test"}
out = {}
for job in ("a", "b"):
    t0 = time.monotonic()
    run = tracking.start_run(cfg, run_dir=sys.argv[1] + "/" + job, job_type="eval", name=job, group="g",
                             config={"x": 1})
    out[job] = {"start_s": time.monotonic() - t0, "run": run is not None,
                "offline": bool(run is not None and run.settings._offline)}
    tracking.safe_log(run, {"metric": 0.5})
    tracking.safe_log(run, {"final": 1.0}, summary=True)
    tracking.finish_run(run)
print("RESULT " + json.dumps(out))
"""


@pytest.mark.parametrize("server", ["closed_port", "black_hole"])
def test_wandb_online_without_network_goes_offline_fast(tmp_path, server):
    with BlackHole() as bh:
        url = f"http://127.0.0.1:{closed_port()}" if server == "closed_port" else bh.url()
        env = {
            **os.environ,
            "WANDB_MODE": "online",
            "WANDB_API_KEY": "a" * 40,
            "WANDB_BASE_URL": url,
            "WANDB_SILENT": "true",
            "WANDB_DIR": str(tmp_path / "wb"),
            "WANDB_CONFIG_DIR": str(tmp_path / "cfg"),
            "WANDB_CACHE_DIR": str(tmp_path / "cache"),
            "WANDB_DATA_DIR": str(tmp_path / "data"),
            "NO_PROXY": "127.0.0.1",
        }
        env.pop("WANDB_INIT_TIMEOUT", None)
        t0 = time.monotonic()
        try:
            res = subprocess.run(
                [sys.executable, "-c", _WANDB_JOB, str(tmp_path / "runs")],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        except subprocess.TimeoutExpired:
            pytest.fail("W&B online without a network still stalls (> 60 s for two jobs)")
        total = time.monotonic() - t0
        contacts = bh.requests
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.split("RESULT ", 1)[1])
    print(
        f"W&B online, {server}: job a {out['a']['start_s']:.1f} s, job b {out['b']['start_s']:.1f} s, "
        f"process {total:.1f} s"
    )
    assert out["a"]["start_s"] <= 10 and out["b"]["start_s"] <= 3
    assert out["a"]["run"] and out["a"]["offline"] and out["b"]["offline"]
    warned = [ln for ln in res.stderr.splitlines() if ln.startswith("WARNING") and "offline" in ln]
    assert len(warned) == 2, res.stderr[-2000:]  # one per job
    assert "a" * 40 not in res.stderr
    if server == "black_hole":  # the reachability check only: no W&B telemetry waiting 10 s at exit
        assert contacts == 1 and total < 30, (contacts, total)
    assert list(Path(tmp_path / "runs" / "a").rglob("offline-run-*")), "no offline run written"
