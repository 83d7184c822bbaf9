"""`python -m value_harms.serve [overrides] [--host H --port P] [--dry-run]`: the vLLM server of a config,
in the foreground, for a GPU node or a SLURM job that several evaluation jobs connect to.

    sbatch --gpus-per-node=1 --time=24:00:00 --wrap "python -m value_harms.serve experiment=paper --host 0.0.0.0"
    python evaluate.py -m experiment=paper generation.engine=vllm generation.vllm.base_url=http://NODE:8000/v1 ...

It runs exactly the command the project would start itself (eval/engines/vllm.py `server_argv`:
the model of the config, `generation.vllm` settings, served name "base", LoRA enabled with
`--max-loras` / `--max-lora-rank` from generation.vllm (default 8 / 64 here: the adapters come
later), adapters registered at run time by the evaluation jobs, which is why
VLLM_ALLOW_RUNTIME_LORA_UPDATING is set). A key, when wanted, comes from VLLM_API_KEY in the
environment of both the server and the jobs, never from the command line.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import replace

import value_harms.config.schema  # noqa: F401 - registers the typed schemas in Hydra's ConfigStore
from value_harms.eval.engines import engine_settings, installed_engine
from value_harms.eval.engines.vllm import server_argv, server_env
from value_harms.models.loading import resolve_model_dir
from value_harms.runtime.cli import run_task


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=paper model=llama2_7b")
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--dry-run", action="store_true", help="print the command and the environment, start nothing")
    # no engine environment, an unknown engine: `error: ...` and exit status 2, not a traceback
    return int(run_task(_serve, ap.parse_intermixed_args(argv)) or 0)


def _serve(a: argparse.Namespace) -> int:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from value_harms.config.paths import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("evaluate", [*a.overrides, f"generation.vllm.host={a.host}", f"generation.vllm.port={a.port}"])
    s = engine_settings(cfg)
    # the adapters come later, from the evaluation jobs: room for 8 per batch, ranks up to 64
    s = replace(s, max_loras=s.max_loras or 8, max_lora_rank=s.max_lora_rank or 64)
    dist, version = installed_engine(s.python)
    model_dir = resolve_model_dir(cfg.model, s.cache_dir)
    argv_ = server_argv(s, model_dir, a.port, {})
    env = {k: val for k, val in server_env(s, dist, os.environ.get("VLLM_API_KEY", "")).items() if val}
    url = f"http://{a.host}:{a.port}/v1"
    print(f"{dist} {version}: serving {model_dir} as 'base' at {url}", file=sys.stderr)
    print(f"  evaluate with: generation.engine=vllm generation.vllm.base_url={url}", file=sys.stderr)
    print(
        "  " + " ".join(f"{k}=..." if k == "VLLM_API_KEY" else f"{k}={val}" for k, val in env.items()), file=sys.stderr
    )
    print("  " + shlex.join(argv_), file=sys.stderr, flush=True)
    if a.dry_run:
        return 0
    os.execve(argv_[0], argv_, {**os.environ, **env})  # the server replaces this process (SLURM signals reach it)


if __name__ == "__main__":
    raise SystemExit(main())
