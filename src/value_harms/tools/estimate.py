"""GPU-hours of a study before launching it: `python -m value_harms.estimate experiment=paper [overrides]`.

The estimate multiplies token counts (from the protocol's data sizes and the composed config) by
throughputs that are command-line options, because they depend on the card and the serving stack:

- training: LoRA fine-tuning tokens per second per GPU (`--train-tps`);
- generation: generated tokens per second per GPU (`--gen-tps`), or the figure measured for the
  engine (`--engine`, a name of eval/engines `ENGINES`, default the config's `generation.engine`;
  an engine measured as another, `openai` as `vllm`, uses that one's figure) and the study's model by
  `perf/bench_engines.py` / `perf/gpu_check.sh`, read from a throughput file (`--throughput`,
  default `<paths.cache_dir>/throughput.json`). The line printed says which figure was used.

Data sizes (PROTOCOL.md): VIM stage 1 trains on the 80% split of the 7,374 arguments (5,899),
stage 2 on 16,594 (argument, value) examples; sequences are padded to `vim_stage.max_length`.
Benchmarks: RTP 3,000 prompts x 10 samples, HolisticBiasR 17,700 prompts, HEx-PHI 330, BeaverTails
700 (each with its configured new tokens). The counts below follow the composed config (limits,
samples, epochs), so an override changes the estimate.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

import value_harms.config.schema  # noqa: F401 - registers the typed schemas in Hydra's ConfigStore

STAGE_TRAIN_EXAMPLES = {"ag": 5899, "qa": 16594}  # PROTOCOL.md: 80% of 7,374; 16,594 QA examples
BENCHMARK_PROMPTS = {"rtp": 21744, "holisticbiasr": 17700, "hex_phi": 330, "beavertails": 700, "pvq": 40}
N_PROFILES = 154


@dataclass
class Estimate:
    train_tokens: float
    gen_tokens: float
    train_hours: float
    gen_hours: float

    @property
    def total(self) -> float:
        return self.train_hours + self.gen_hours


def estimate(
    cfg,
    *,
    n_profiles: int = N_PROFILES,
    benchmarks=("rtp", "holisticbiasr", "hex_phi", "beavertails"),
    n_mitigations: int = 4,
    n_eval_models: int | None = None,
    train_tps: float = 5000.0,
    gen_tps: float = 2000.0,
) -> Estimate:
    """Token counts and GPU-hours for training `n_profiles` adapters and evaluating
    `n_eval_models` models (default: the profiles + vanilla + ICL personas) x benchmarks x mitigations."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from value_harms.config.paths import conf_dir

    stage = cfg.vim_stage
    steps = list(stage.steps)
    if int(cfg.trainer.max_steps) > 0:  # a step budget per sub-stage
        per_profile = len(steps) * int(cfg.trainer.max_steps) * int(stage.batch_size) * int(stage.max_length)
    else:
        per_profile = sum(STAGE_TRAIN_EXAMPLES.get(s, 0) for s in steps) * int(stage.epochs) * int(stage.max_length)
    train_tokens = per_profile * n_profiles
    gen_per_model = 0
    overrides = [o for o in _experiment_overrides(cfg)]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        for b in benchmarks:
            bc = compose(config_name="evaluate", overrides=[*overrides, f"benchmark={b}"]).benchmark
            n = BENCHMARK_PROMPTS.get(b, 0)
            if bc.limit:
                n = min(n, int(bc.limit))
            gen_per_model += n * int(bc.num_samples) * int(bc.max_new_tokens)
    GlobalHydra.instance().clear()
    models = n_eval_models if n_eval_models is not None else 2 * n_profiles + 1  # VIM + ICL + vanilla
    gen_tokens = gen_per_model * models * n_mitigations
    return Estimate(train_tokens, gen_tokens, train_tokens / train_tps / 3600, gen_tokens / gen_tps / 3600)


def throughput_records(data) -> list[dict]:
    """Records of a throughput file: perf/bench_engines.py's list as it is, or perf/gpu_check.py's
    gpu_check.json turned into records (its Llama-2-7B shape counts for model llama2_7b; any other
    shape is named `<shape>-shape`, so a CPU smoke run never stands for the paper's model)."""
    if isinstance(data, list):
        return data
    if not isinstance(data, dict) or "parts" not in data:
        return []
    shape = str((data.get("shape") or {}).get("name"))
    common = {"model": "llama2_7b" if shape == "llama2-7b" else f"{shape}-shape", "device": data.get("device_name")}
    common.update(date=str(data.get("date_utc", ""))[:10], script="perf/gpu_check.py")
    out = []
    for name, part in (data.get("parts") or {}).items():
        if not isinstance(part, dict) or part.get("status") != "ok":
            continue
        if name.startswith("train_") and part.get("tokens_per_s"):
            out.append({**common, "engine": "train", "dtype": name[6:], "tokens_per_s": part["tokens_per_s"]})
        elif name.startswith("hf_gen_") and part.get("tokens_per_s"):
            out.append(
                {**common, "engine": "hf", "adapters": part.get("adapters"), "tokens_per_s": part["tokens_per_s"]}
            )
        elif name == "vllm":
            for k, case in (part.get("cases") or {}).items():
                if isinstance(case, dict) and case.get("tokens_per_s"):
                    out.append({**common, "engine": "vllm", "adapters": int(k), "tokens_per_s": case["tokens_per_s"]})
    return out


def measured_gen_tps(path: str | os.PathLike, engine: str, model: str, adapters: int | None = None) -> dict | None:
    """The latest record of `path` (a list written by perf/bench_engines.py or perf/gpu_check.py) for
    `engine` and `model` (the most adapters measured when `adapters` is None), else None."""
    p = Path(os.path.expanduser(str(path)))
    try:
        records = throughput_records(json.loads(p.read_text()))
    except (OSError, ValueError):
        return None
    mine = [
        r
        for r in records
        if isinstance(r, dict)
        and r.get("engine") == engine
        and r.get("model") == model
        and r.get("tokens_per_s")
        and (adapters is None or r.get("adapters") == adapters)
    ]
    if not mine:
        return None
    top = max(int(r.get("adapters") or 0) for r in mine)
    return [r for r in mine if int(r.get("adapters") or 0) == top][-1]


def _experiment_overrides(cfg) -> list[str]:
    exp = cfg.get("experiment_name")
    return [f"experiment={exp}"] if exp and exp != "default" else []


class EstimateCallback:
    """Hydra callback (set by experiment=paper): print the GPU-hours before a multirun launches."""

    def __init__(self, train_tps: float = 5000.0, gen_tps: float = 2000.0) -> None:
        self.train_tps, self.gen_tps = train_tps, gen_tps

    def on_multirun_start(self, config, **kwargs) -> None:
        try:
            e = estimate(config, train_tps=self.train_tps, gen_tps=self.gen_tps)
            print(
                f"[value-harms] estimate for the whole study ({config.experiment_name}): training "
                f"{e.train_hours:,.0f} GPU-h + generation {e.gen_hours:,.0f} GPU-h = {e.total:,.0f} GPU-h "
                f"(assumed {self.train_tps:,.0f} / {self.gen_tps:,.0f} tok/s; see python -m value_harms.estimate)",
                flush=True,
            )
        except Exception as exc:  # an estimate must never block a launch
            print(f"[value-harms] no GPU-hour estimate: {exc}", flush=True)

    def __getattr__(self, name):  # the other Hydra callback hooks: nothing to do
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)


def _throughputs(a, cfg, engine: str) -> tuple[float, str, float, str]:
    """(training tok/s, where it comes from, generation tok/s, where it comes from): given on the
    command line, else measured (throughput file), else assumed."""
    figures = a.throughput or Path(os.path.expanduser(cfg.paths.cache_dir)) / "throughput.json"
    train_tps, train_source = a.train_tps, "given"
    if train_tps is None:
        found = measured_gen_tps(figures, "train", str(cfg.model.name))
        train_tps = float(found["tokens_per_s"]) if found else 5000.0
        train_source = f"measured on {found.get('device')} ({found.get('date')})" if found else "assumed"
    gen_tps, source = a.gen_tps, "given"
    if gen_tps is None:
        found = measured_gen_tps(figures, engine, str(cfg.model.name))
        if found is not None:
            gen_tps = float(found["tokens_per_s"])
            source = (
                f"measured for engine {engine}, {found.get('adapters', 0)} adapter(s), on {found.get('device')} "
                f"({found.get('date')}, {found.get('script')})"
            )
        else:
            gen_tps, source = 2000.0, f"assumed: no figure measured for engine {engine} and model {cfg.model.name}"
    return train_tps, train_source, gen_tps, source


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="GPU-hours of a study, before launch")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=paper")
    ap.add_argument("--profiles", type=int, default=N_PROFILES)
    ap.add_argument("--mitigations", type=int, default=4)
    ap.add_argument(
        "--train-tps",
        type=float,
        default=None,
        help="LoRA training tokens/s per GPU (default: measured by perf/gpu_check.sh, else 5,000 assumed)",
    )
    ap.add_argument(
        "--gen-tps",
        type=float,
        default=None,
        help="generated tokens/s per GPU (default: the figure measured for --engine, else 2,000 assumed)",
    )
    ap.add_argument("--engine", default=None, help="an engine of eval/engines ENGINES (default: generation.engine)")
    ap.add_argument("--throughput", default=None, help="measured figures (default <paths.cache_dir>/throughput.json)")
    a = ap.parse_intermixed_args(argv)  # options before or after the overrides
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from value_harms.config.paths import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=a.overrides)
    GlobalHydra.instance().clear()
    # the registry brings torch: read once the arguments are, so --help stays instant
    from value_harms.eval.engines import ENGINES

    engine = a.engine or str(cfg.generation.engine)
    if engine not in ENGINES:
        where = "argument --engine" if a.engine else "generation.engine"
        ap.error(f"{where}: {engine!r} is not an engine (one of {', '.join(ENGINES)})")
    train_tps, train_source, gen_tps, source = _throughputs(a, cfg, ENGINES[engine].measured_as or engine)
    e = estimate(cfg, n_profiles=a.profiles, n_mitigations=a.mitigations, train_tps=train_tps, gen_tps=gen_tps)
    print(
        f"study: model={cfg.model.name} stage={cfg.vim_stage.name} epochs={cfg.vim_stage.epochs} "
        f"profiles={a.profiles} mitigations={a.mitigations}"
    )
    print(
        f"training:   {e.train_tokens / 1e9:.2f} B tokens at {train_tps:,.0f} tok/s ({train_source}) "
        f"= {e.train_hours:,.0f} GPU-hours"
    )
    print(f"generation: {e.gen_tokens / 1e9:.2f} B tokens at {gen_tps:,.0f} tok/s = {e.gen_hours:,.0f} GPU-hours")
    print(f"            ({gen_tps:,.0f} tok/s {source})")
    print(
        f"total:      {e.total:,.0f} GPU-hours (measure the throughputs on your cards: perf/gpu_check.sh, "
        f"perf/bench_engines.py; or pass --train-tps / --gen-tps)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
