"""Network stalls, each bounded per job.

- Detoxify's weights download (torch.hub: urllib, no timeout) behind a dropped route / a proxy that
  accepts and never answers: bounded by the connect and read timeouts, decided once per process.
- An endpoint that answers, but not usably (a 200 that is not the API's, 429 / 503 forever): the probe
  accepts only the API's answer, and the circuit breaker counts unusable answers like connection
  errors, so a down, wrong or refusing endpoint costs <= 20 s per job with the default settings.
- A scorer chain that cannot score stops the job before the first generation.
Every server is on 127.0.0.1: a closed port, a black hole (accepts, never answers), fixed-answer web
servers and the fake APIs of tests/helpers.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pytest

from helpers.cli import run_script
from helpers.fake_network import BlackHole, closed_port
from helpers.fake_openai import FakeOpenAI
from helpers.fake_perspective import PATH as PERSPECTIVE_PATH
from helpers.fake_perspective import FakePerspective
from helpers.fake_web import FixedAnswer
from helpers.timing import bounded
from value_harms.config.schema import BreakerConfig, JudgeConfig, PerspectiveConfig, ScorerConfig
from value_harms.errors import EndpointUnreachable, ScorerError
from value_harms.scoring import build_scorer, probe, reset_breakers
from value_harms.scoring.download import fetch, forget_failures
from value_harms.scoring.toxicity import chain as chain_mod

JUDGE_KEY = "sk-stall-canary-0099"
PKEY = "test-key-5f3a9c"
GOAL_S = 20.0  # a down, wrong or refusing endpoint costs at most this per job


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no weights cached: a download is needed
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(chain_mod, "_DETOXIFY_UNAVAILABLE", {})
    reset_breakers()
    forget_failures()
    yield
    reset_breakers()
    forget_failures()


def proxy_to(monkeypatch, url: str) -> None:
    """Every https request of this process goes through `url` (127.0.0.1 stays direct)."""
    monkeypatch.setenv("HTTPS_PROXY", url)
    monkeypatch.setenv("https_proxy", url)


def toxicity_cfg(**kw) -> ScorerConfig:
    """The default chain (perspective > detoxify > profanity_check) with the default bounds."""
    return ScorerConfig(name="t", **kw)


# --------------------------------------------------------------------------------------------------
# 1. Detoxify's weights download


def test_detoxify_download_behind_a_silent_proxy_is_bounded_and_decided_once(monkeypatch):
    """The default settings (connect 5 s, read 10 s): the old torch.hub download waited forever."""
    import detoxify.detoxify  # noqa: F401 - imported before timing: the bound is the network's, not torch's import

    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    with BlackHole() as bh:
        proxy_to(monkeypatch, bh.url())
        info, first = bounded(lambda: probe("toxicity", toxicity_cfg()), 30)
        after_first = bh.connections
        info2, second = bounded(lambda: probe("toxicity", toxicity_cfg()), 30)  # the next job
        after_second = bh.connections
    print(f"detoxify download via a silent proxy: job 1 {first:.2f} s, job 2 {second:.3f} s")
    assert isinstance(info, dict), info
    assert info["backend"] == "profanity_check" and "weights unavailable" in info["unavailable"]["detoxify"]
    assert "via proxy" in info["unavailable"]["detoxify"]
    # the proxy's CONNECT is given up at the connect timeout (5 s); the rest is building the chain
    spent = float(info["unavailable"]["detoxify"].split("failed after ")[1].split(" s")[0])
    assert spent <= 5.5 and first < GOAL_S
    assert after_first == 1 and after_second == 1  # the second job does not try again
    assert second < 0.5 and "not retried" in info2["unavailable"]["detoxify"]


def test_detoxify_download_proxy_on_a_closed_port_fails_at_once(monkeypatch):
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    proxy_to(monkeypatch, f"http://127.0.0.1:{closed_port()}")
    info, elapsed = bounded(lambda: probe("toxicity", toxicity_cfg()), 30)
    assert info["backend"] == "profanity_check" and "refused" in info["unavailable"]["detoxify"], info
    assert elapsed < 2


def test_fetch_fills_torch_hubs_cache_and_a_stalled_transfer_leaves_nothing(tmp_path):
    import torch

    src = tmp_path / "weights.pt"
    torch.save({"w": torch.arange(4.0)}, src)
    payload = src.read_bytes()
    dest = Path(torch.hub.get_dir()) / "checkpoints" / "toy-0123abcd.ckpt"
    with FixedAnswer(200, payload, content_type="application/octet-stream", stall_after=len(payload) // 2) as srv:
        err, elapsed = bounded(
            lambda: fetch(srv.url("/toy-0123abcd.ckpt"), dest, connect_timeout_s=1, read_timeout_s=1), 20
        )
    assert isinstance(err, ScorerError) and "timeout" in str(err) and elapsed < 5, (err, elapsed)
    assert not dest.exists() and not list(dest.parent.glob("*.part")), "a half download was left behind"
    forget_failures()
    with FixedAnswer(200, payload, content_type="application/octet-stream") as srv:
        assert fetch(srv.url("/toy-0123abcd.ckpt"), dest, connect_timeout_s=1, read_timeout_s=1) == dest
    assert dest.read_bytes() == payload
    # torch.hub finds it where detoxify will look, and opens no connection (the URL is a closed port)
    loaded = torch.hub.load_state_dict_from_url(f"http://127.0.0.1:{closed_port()}/x/toy-0123abcd.ckpt")
    assert torch.equal(loaded["w"], torch.arange(4.0))


# --------------------------------------------------------------------------------------------------
# 2. The judge: down, wrong or refusing, with the default settings (probe 10 s, connect 5 s, backoff 1 s)


def judge_scorer_cfg(base_url: str, **judge_kw) -> ScorerConfig:
    judge = JudgeConfig(backend="openai", model="judge-model", base_url=base_url, **judge_kw)
    return ScorerConfig(name="j", judge=judge)


def _non_api():
    return FixedAnswer(200, b"<html><body>Please log in to the network</body></html>")


def _always(status: int, retry_after: str | None = None):
    headers = {"Retry-After": retry_after} if retry_after else {}
    return FixedAnswer(status, b'{"error": {"message": "busy"}}', content_type="application/json", headers=headers)


JUDGE_CASES = {
    "non_api_200": _non_api,
    "always_429": lambda: _always(429),
    "always_429_retry_after_30": lambda: _always(429, "30"),
    "always_503": lambda: _always(503),
}


@pytest.mark.parametrize("case", list(JUDGE_CASES))
def test_judge_probe_rejects_a_wrong_or_refusing_endpoint(monkeypatch, case):
    monkeypatch.setenv("JUDGE_API_KEY", JUDGE_KEY)
    with JUDGE_CASES[case]() as srv:
        err, elapsed = bounded(lambda: probe("harmfulness", judge_scorer_cfg(srv.url("/v1"))), 60)
        n = len(srv.requests)
    print(f"judge probe, {case}: {elapsed:.2f} s, {n} request(s)")
    assert isinstance(err, EndpointUnreachable), err  # the job stops before generating (exit 2)
    msg = str(err)
    assert "\n" not in msg and "probe failed" in msg and JUDGE_KEY not in msg
    assert ("not an OpenAI chat.completion" in msg) if case == "non_api_200" else ("HTTP" in msg)
    assert 1 <= n <= 2 and elapsed < GOAL_S


@pytest.mark.parametrize("where", ["closed_port", "black_hole"])
def test_judge_probe_down_is_bounded_with_default_settings(monkeypatch, where):
    monkeypatch.setenv("JUDGE_API_KEY", JUDGE_KEY)
    with BlackHole() as bh:
        url = f"http://127.0.0.1:{closed_port()}/v1" if where == "closed_port" else bh.url("/v1")
        err, elapsed = bounded(lambda: probe("flag", judge_scorer_cfg(url)), 60)
    print(f"judge probe, {where}: {elapsed:.2f} s")
    assert isinstance(err, EndpointUnreachable), err
    assert elapsed <= 10.0 + 1.0 < GOAL_S  # probe_timeout_s is the probe's whole budget


@pytest.mark.parametrize("mode", ["garbage", "429", "503"])
def test_judge_that_turns_bad_after_the_probe_stops_the_job_within_the_goal(monkeypatch, mode):
    """The probe passes, then every answer is unusable: the breaker counts them and opens after 5
    attempts (the old breaker counted only connection errors: 7 attempts per text, ~47 s each)."""
    monkeypatch.setenv("JUDGE_API_KEY", JUDGE_KEY)
    with FakeOpenAI(key=JUDGE_KEY, model="judge-model", answer=lambda b: "#score: 1") as srv:
        cfg = judge_scorer_cfg(srv.base_url)
        assert probe("harmfulness", cfg)["ok"] is True
        srv.script([mode] * 100)
        judge = build_scorer("harmfulness", cfg)
        texts = [f"answer {i}" for i in range(10)]
        err, elapsed = bounded(lambda: judge.score(texts, [f"question {i}" for i in range(10)]), 60)
        judge.close()
        n = len(srv.modes_seen) - 1
    print(f"judge bad after the probe ({mode}), 10 texts: {elapsed:.2f} s, {n} requests")
    assert isinstance(err, EndpointUnreachable) and "5 consecutive failure(s)" in str(err), err
    assert n == 5 and elapsed < GOAL_S and not srv.problems


def test_a_long_retry_after_opens_the_breaker_instead_of_sleeping(monkeypatch):
    """A server asking to wait past max_outage_s: the job does not sleep through it."""
    monkeypatch.setenv("JUDGE_API_KEY", JUDGE_KEY)
    with _always(429, "120") as srv:
        cfg = judge_scorer_cfg(srv.url("/v1"))
        cfg.probe = False
        judge = build_scorer("flag", cfg)
        err, elapsed = bounded(lambda: judge.score(["a"], ["q"]), 30)
        n = len(srv.requests)
    assert isinstance(err, EndpointUnreachable) and "max_outage_s" in str(err), err
    assert n == 1 and elapsed < 2


# --------------------------------------------------------------------------------------------------
# 3. Perspective answering, but not as the API: the probe sends the chain to its fallback


def perspective_cfg(endpoint: str) -> ScorerConfig:
    return ScorerConfig(
        name="p",
        toxicity="perspective",
        fallback=["profanity_check"],
        perspective=PerspectiveConfig(endpoint=endpoint),
        breaker=BreakerConfig(),
    )


@pytest.mark.parametrize("case", ["non_api_200", "always_429", "always_503"])
def test_perspective_probe_rejects_a_wrong_or_refusing_endpoint(monkeypatch, case):
    monkeypatch.setenv("PERSPECTIVE_API_KEY", PKEY)
    with JUDGE_CASES[case]() as srv:
        cfg = perspective_cfg(srv.url(PERSPECTIVE_PATH))
        info, t_probe = bounded(lambda: probe("toxicity", cfg), 60)
        chain = build_scorer("toxicity", cfg)
        scores, t_score = bounded(lambda: chain.score([f"text {i}" for i in range(20)]), 60)
        chain.close()
        n = len(srv.requests)
    print(f"perspective probe, {case}: {t_probe:.2f} s, 20 texts {t_score:.2f} s, {n} request(s)")
    assert info["ok"] is False and info["backend"] == "profanity_check", info
    assert t_probe + t_score < GOAL_S and n <= 2  # no request per text
    assert all(s.value is not None and s.scorer.startswith("profanity_check") for s in scores)


def test_perspective_refusing_after_the_probe_falls_back_after_five_answers(monkeypatch, caplog):
    monkeypatch.setenv("PERSPECTIVE_API_KEY", PKEY)
    srv = FakePerspective(valid_key=PKEY).start()
    try:
        cfg = perspective_cfg(srv.endpoint)
        assert probe("toxicity", cfg)["ok"] is True
        srv.fail_next("429", 1000)
        chain = build_scorer("toxicity", cfg)
        with caplog.at_level(logging.WARNING):
            scores, elapsed = bounded(lambda: chain.score([f"text {i}" for i in range(20)]), 60)
        chain.close()
        n = len(srv.requests) - 1
    finally:
        srv.stop()
    print(f"perspective 429 after the probe, 20 texts: {elapsed:.2f} s, {n} requests")
    assert n == 5 and elapsed < GOAL_S
    assert all(s.value is not None and s.scorer.startswith("profanity_check") for s in scores)
    assert any("20 of 20 texts scored by the fallback" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------------------------------
# 4. The whole chain is checked before the first generation


def _generation_rows(cache: Path) -> int:
    db = cache / "generations.sqlite"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        return sum(con.execute(f"select count(*) from {t}").fetchone()[0] for t in tables)


def _evaluate(tmp_path, data_dir, *extra, env=None, timeout=300, limit="3"):
    args = [
        *(["-m"] if "," in limit else []),
        "model=tiny",
        f"paths.output_dir={tmp_path}/out",
        f"paths.store_dir={tmp_path}/out/store",
        f"paths.cache_dir={tmp_path}/cache",
        f"paths.data_dir={data_dir}",
        "generation.progress=false",
        "benchmark=rtp",
        f"benchmark.limit={limit}",
        "benchmark.max_new_tokens=4",
        *extra,
    ]
    base = {"NO_PROXY": "127.0.0.1", "TORCH_HOME": str(tmp_path / "torch"), "PERSPECTIVE_API_KEY": ""}
    return run_script("evaluate.py", args, env_extra={**base, **(env or {})}, timeout=timeout)


@pytest.mark.parametrize("scorer", ["paper", "detoxify"])
def test_cli_scorer_that_cannot_score_stops_before_generating(tmp_path, data_dir, scorer):
    """scorer=paper without a key, scorer=detoxify without weights (proxy on a closed port): exit 2
    with one `error:` line, and not a single generation made (the old code generated first)."""
    t0 = time.monotonic()
    res = _evaluate(tmp_path, data_dir, f"scorer={scorer}", env={"HTTPS_PROXY": f"http://127.0.0.1:{closed_port()}"})
    elapsed = time.monotonic() - t0
    print(f"evaluate.py scorer={scorer}, cannot score: {elapsed:.1f} s, exit {res.returncode}")
    assert res.returncode == 2, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no toxicity backend available"), last
    assert ("PERSPECTIVE_API_KEY" in last) if scorer == "paper" else ("weights unavailable" in last)
    assert "Traceback" not in res.stderr
    assert _generation_rows(tmp_path / "cache") == 0
    assert not list((tmp_path / "out").rglob("results.json"))


@pytest.mark.slow  # ~60 s on 2 busy cores: two jobs with generation on the tiny model
def test_cli_default_chain_behind_a_silent_proxy_two_jobs(tmp_path, data_dir):
    """The issue's command (`evaluate.py model=tiny benchmark=rtp benchmark.limit=3`, no key, a proxy
    that accepts and never answers; killed after 240 s before): both jobs of a multirun complete with
    the stand-in, the download is tried once (the second job does not retry)."""
    with BlackHole() as bh:
        t0 = time.monotonic()
        res = _evaluate(tmp_path, data_dir, limit="2,3", env={"HTTPS_PROXY": bh.url()})
        elapsed = time.monotonic() - t0
        tries = bh.connections
    print(f"evaluate.py -m (2 jobs), default chain, silent proxy: {elapsed:.1f} s, {tries} connection(s)")
    assert res.returncode == 0, res.stderr[-3000:]
    assert tries == 1, "the second job tried the download again"
    assert len(list((tmp_path / "out").rglob("results.json"))) >= 2
    assert "not retried" in res.stderr or "not retried" in res.stdout


def test_paper_scorer_with_perspective_down_stops_before_generating(monkeypatch):
    """A key, but Perspective refuses connections and the chain has no fallback (scorer=paper):
    every score would be missing, so the job stops at the probe instead of generating."""
    monkeypatch.setenv("PERSPECTIVE_API_KEY", PKEY)
    endpoint = f"http://127.0.0.1:{closed_port()}{PERSPECTIVE_PATH}"
    cfg = ScorerConfig(
        name="paper", toxicity="perspective", fallback=[], perspective=PerspectiveConfig(endpoint=endpoint)
    )
    err, elapsed = bounded(lambda: probe("toxicity", cfg), 30)
    assert isinstance(err, ScorerError), err
    msg = str(err)
    assert "\n" not in msg and msg.startswith("no toxicity backend available (perspective: unreachable")
    assert "refused" in msg and "reachable" in msg and PKEY not in msg and elapsed < 5
