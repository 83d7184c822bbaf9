"""Checks of a composed config, run before any model, data or output folder is touched.

Three places call them:

- the entry points, before Hydra starts (`value_harms.runtime.cli.guard_overrides`): a key that is not in
  the typed schema, a value of the wrong type, a group option that does not exist and a `glob(...)`
  that matches no option each end the process with one line (value_harms.config.overrides);
- a Hydra callback (`ValidateCallback`, conf/hydra/default.yaml), after composition and before
  Hydra creates the run or sweep folder: the composed config (`config_problems`), every job of a
  multirun with its own overrides applied, and whether the output / store folders can be written;
- the top of every task (`check_task`: run_train, run_evaluate, run_analyze), so that in-process
  callers (tests, notebooks, the demo) get the same checks.

A name whose registry sits above config/ (`generation.engine`: eval/engines `ENGINES`) is checked by its
owner at the top of its task, through check_task's `extra`, not by the callback.

Every problem is one line naming the key, its value and what to set instead. Nothing here imports
torch or transformers: the checks cost milliseconds.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from omegaconf import DictConfig, OmegaConf

from value_harms.config.paths import conf_dir
from value_harms.config.sweep import BASIC_SWEEPER as _BASIC_SWEEPER
from value_harms.config.sweep import expand_overrides
from value_harms.core.names import safe_name
from value_harms.core.profiles import profile_from_cfg
from value_harms.errors import ConfigError, UnsafeNameError, ValueHarmsError

__all__ = [
    "ConfigError",
    "NAME_KEYS",
    "name_problem",
    "check_name",
    "config_problems",
    "check_config",
    "writable_problem",
    "check_task",
    "check_prompt_lengths",
    "ValidateCallback",
]

# Names that become folder or file names (store folders, run folders, W&B names).
NAME_KEYS = (
    "value_profile.name",
    "run_label",
    "experiment_name",
    "model.name",
    "vim_stage.name",
    "benchmark.name",
    "mitigation.name",
    "scorer.name",
)


# --------------------------------------------------------------------------------------------------
# names


def name_problem(name: Any, key: str = "name") -> str | None:
    """Why `name` (the value of config key `key`) cannot be one file or folder name, else None. The
    rule is the store's own (value_harms.core.names.safe_name): checked here at composition so
    that no job starts, and there again where the folder is made."""

    try:
        safe_name(name, key)
    except UnsafeNameError as exc:
        return str(exc)
    return None


def check_name(name: Any, key: str) -> None:
    """Raise the store's one-line UnsafeNameError when `name` is not one safe folder name."""

    safe_name(name, key)


# --------------------------------------------------------------------------------------------------
# numbers


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x)


def _int_at_least(lo: int) -> Callable[[Any], bool]:
    return lambda x: isinstance(x, int) and not isinstance(x, bool) and x >= lo


def _positive(x: Any) -> bool:
    v = _num(x)
    return v is not None and math.isfinite(v) and v > 0


def _non_negative(x: Any) -> bool:
    v = _num(x)
    return v is not None and math.isfinite(v) and v >= 0


def _optional(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda x: x is None or test(x)


# key -> (test, what is expected, a valid example). A key whose section is absent (benchmark: null
# for train.py) is not checked.
_RULES: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "vim_stage.epochs": (_int_at_least(1), "an integer >= 1 (0 trains nothing)", "5"),
    "vim_stage.batch_size": (_int_at_least(1), "an integer >= 1", "8"),
    "vim_stage.accumulate_grad_batches": (_int_at_least(1), "an integer >= 1", "1"),
    "vim_stage.lr": (_positive, "a learning rate > 0", "2e-5"),
    "vim_stage.weight_decay": (_non_negative, "a number >= 0", "0.0"),
    "vim_stage.warmup_steps": (_int_at_least(0), "an integer >= 0", "0"),
    "vim_stage.max_length": (_int_at_least(1), "a number of tokens >= 1", "128"),
    "vim_stage.answer_weight": (_positive, "a loss weight > 0", "1.0"),
    "vim_stage.qa_balance_power": (lambda x: _non_negative(x) and float(x) <= 1, "a number in [0, 1]", "1.0"),
    "vim_stage.qa_balance": (lambda x: x in ("none", "score"), "one of none, score", "none"),
    "trainer.max_steps": (
        lambda x: x == -1 or _int_at_least(1)(x),
        "-1 (no limit) or an integer >= 1 (0 trains nothing)",
        "-1",
    ),
    "train.lora_r": (_int_at_least(1), "a LoRA rank >= 1", "8"),
    "train.lora_alpha": (_positive, "a number > 0", "32"),
    "train.lora_dropout": (lambda x: _non_negative(x) and float(x) < 1, "a probability in [0, 1)", "0.1"),
    "train.checkpoint_every_n_steps": (_int_at_least(1), "an integer >= 1", "50"),
    "alignment.batch_size": (_int_at_least(1), "an integer >= 1", "8"),
    "alignment.max_new_tokens": (_int_at_least(1), "an integer >= 1", "20"),
    "generation.batch_size": (_int_at_least(1), "an integer >= 1", "8"),
    "generation.vllm.concurrency": (_int_at_least(1), "an integer >= 1", "16"),
    "generation.vllm.batch_size": (_int_at_least(1), "an integer >= 1", "64"),
    "generation.vllm.max_model_len": (_optional(_int_at_least(1)), "a number of tokens >= 1 or null", "2048"),
    "generation.vllm.max_loras": (_optional(_int_at_least(1)), "a positive integer or null", "null"),
    "generation.vllm.max_lora_rank": (_optional(_int_at_least(1)), "a positive integer or null", "null"),
    "generation.vllm.dtype": (
        lambda x: x is None or x in ("float32", "bfloat16", "float16"),
        "null (model.dtype) or one of float32, bfloat16, float16",
        "float32",
    ),
    "generation.vllm.startup_timeout_s": (_positive, "seconds > 0", "900"),
    "generation.vllm.timeout_s": (_positive, "seconds > 0", "600"),
    "generation.vllm.max_retries": (_int_at_least(0), "an integer >= 0", "4"),
    "benchmark.max_new_tokens": (_int_at_least(1), "an integer >= 1", "64"),
    "benchmark.num_samples": (_int_at_least(1), "an integer >= 1", "1"),
    "benchmark.limit": (_optional(_int_at_least(1)), "a positive integer or null", "null"),
    "benchmark.per_category": (_optional(_int_at_least(1)), "a positive integer or null", "null"),
    "benchmark.temperature": (_non_negative, "a temperature >= 0", "0.1"),
    "benchmark.top_p": (lambda x: _positive(x) and float(x) <= 1, "a probability in (0, 1]", "0.75"),
    "scorer.perspective.qps": (_positive, "requests per second > 0", "1.0"),
    "scorer.perspective.timeout_s": (_positive, "seconds > 0", "30"),
    "scorer.perspective.max_retries": (_int_at_least(0), "an integer >= 0", "6"),
    "scorer.detoxify.batch_size": (_int_at_least(1), "an integer >= 1", "16"),
    "scorer.judge.temperature": (_non_negative, "a temperature >= 0", "0.0"),
    "scorer.judge.max_tokens": (_int_at_least(1), "an integer >= 1", "256"),
    "scorer.judge.batch_size": (_int_at_least(1), "an integer >= 1", "8"),
    "scorer.judge.qps": (_positive, "requests per second > 0", "2.0"),
    "scorer.judge.timeout_s": (_positive, "seconds > 0", "60"),
    "scorer.judge.max_retries": (_int_at_least(0), "an integer >= 0", "6"),
    "scorer.regard.batch_size": (_int_at_least(1), "an integer >= 1", "16"),
    "scorer.regard.max_length": (_int_at_least(1), "an integer >= 1", "512"),
}

_ABSENT = object()


def _select(cfg: Any, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
    except Exception:  # an interpolation that does not resolve: composition reports it
        return _ABSENT


def config_problems(cfg: DictConfig) -> list[str]:
    """Every problem of a composed config, one line each, in a stable order (empty: fine)."""
    out: list[str] = []
    for key in NAME_KEYS:
        value = _select(cfg, key)
        if value is _ABSENT or value is None or value == "???":
            continue
        why = name_problem(value, key)
        if why:
            out.append(why)
    for key, (test, expected, example) in _RULES.items():
        value = _select(cfg, key)
        if value is _ABSENT or value == "???":
            continue
        if not test(value):
            out.append(f"{key}={value!r}: expected {expected}; set e.g. {key}={example}")
    temp, sample = _select(cfg, "benchmark.temperature"), _select(cfg, "benchmark.do_sample")
    if sample is True and _non_negative(temp) and float(temp) == 0:
        out.append(
            "benchmark.temperature=0 with benchmark.do_sample=true: sampling needs a temperature > 0; "
            "for greedy decoding set benchmark.do_sample=false"
        )
    profile = _select(cfg, "value_profile")
    named = any(p.startswith("value_profile.") for p in out)  # its name is reported already: once is enough
    if profile is not _ABSENT and profile is not None and not named:
        try:  # the vector's scale and names, before Hydra creates the run folder
            profile_from_cfg(profile)
        except ValueHarmsError as exc:
            out.append(str(exc).strip().splitlines()[0])
    if _select(cfg, "scorer.judge.backend") == "vllm" and _select(cfg, "scorer.judge.constrained") is True:
        out.append(
            "scorer.judge.constrained=true with scorer.judge.backend=vllm: constrained answers are chosen by "
            "log-probability in-process; set scorer.judge.constrained=false or scorer.judge.backend=transformers"
        )
    return out


def check_config(cfg: DictConfig, extra: Iterable[str] = ()) -> None:
    """Raise ConfigError with the first problem of `cfg` (see config_problems), then of `extra`."""
    problems = config_problems(cfg) + list(extra)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)


# --------------------------------------------------------------------------------------------------
# folders


def writable_problem(path: str | os.PathLike, key: str) -> str | None:
    """Why files cannot be created under `path` (the value of `key`), or None. The nearest existing
    folder is tried with a real, immediately removed temporary folder: permission bits alone do not
    tell (root ignores them; read-only and special file systems refuse anyway)."""
    p = Path(os.path.expanduser(str(path))).absolute()
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"{key}={str(path)!r}: {probe} is a file, not a folder; set {key} to a writable folder"
    try:
        tmp = tempfile.mkdtemp(prefix=".vh-write-test-", dir=probe)
        os.rmdir(tmp)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        return f"{key}={str(path)!r} is not writable ({probe}: {why}); set {key} to a writable folder"
    return None


def _folder_problems(cfg: DictConfig) -> list[str]:
    keys = ["paths.output_dir"]
    if _select(cfg, "task_name") in ("train", "evaluate"):
        keys.append("paths.store_dir")
    out = []
    for key in keys:
        value = _select(cfg, key)
        if isinstance(value, str) and value:
            why = writable_problem(value, key)
            if why:
                out.append(why)
    return out


def check_task(cfg: DictConfig, extra: Iterable[str] = ()) -> None:
    """The checks run at the top of every task, before any model or data is loaded. `extra`: problems a
    higher layer found with its own registry (config/ imports no eval/: the evaluate task passes its
    engine checks, eval/engines `engine_problems`, so the engine names have one owner)."""
    check_config(cfg, extra)
    problems = _folder_problems(cfg)
    if problems:
        raise ConfigError(problems[0])


# --------------------------------------------------------------------------------------------------
# prompts


def check_prompt_lengths(
    lengths: Sequence[int], texts: Sequence[str], max_new_tokens: int, context: int | None, where: str = "benchmark"
) -> None:
    """Refuse a prompt whose tokens + max_new_tokens do not fit in the model's context.

    The prompt is not cut: a cut prompt is another prompt than the one the config names, and a
    model run past its context either fails or allocates memory quadratic in the length (a 1 MB
    prompt asked for ~464 GB). `lengths[i]` is the token count of `texts[i]`."""
    n = int(max_new_tokens)
    if n < 1:
        raise ConfigError(f"{where}.max_new_tokens={n}; set a positive number of new tokens (the paper: 64)")
    if not isinstance(context, int) or not lengths:
        return
    if n > context:
        longest = max(lengths)
        raise ConfigError(
            f"{where}.max_new_tokens={n} exceeds the model's context of {context} tokens; set "
            f"{where}.max_new_tokens <= {max(1, context - longest)} (the longest prompt has {longest} "
            f"tokens)"
        )
    too_long = [i for i, k in enumerate(lengths) if k + n > context]
    if too_long:
        i = max(too_long, key=lambda j: lengths[j])
        head = texts[i][:40].replace("\n", " ")
        raise ConfigError(
            f"{len(too_long)} prompt(s) do not fit in the model's context of {context} tokens with "
            f"{where}.max_new_tokens={n}; the longest (#{i}, {len(texts[i]):,} characters, {lengths[i]:,} tokens, "
            f"starting {head!r}) needs {lengths[i] + n:,}; shorten or remove it, or lower {where}.max_new_tokens "
            f"(prompts are never cut)"
        )


# --------------------------------------------------------------------------------------------------
# Hydra callback: after composition, before the run / sweep folder exists


def _fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _job_configs(config: DictConfig) -> Iterable[tuple[int, int, list[str], DictConfig]]:
    """(index, number of jobs, swept overrides, config) for the jobs of a basic-sweeper multirun
    that differ from the composed base config in a swept plain value, one job per distinct set of
    such values (a 154-profile x 2-lr sweep checks 2 configs). Swept group options are not applied:
    they only bring the repository's own files, whose names the group guard has checked."""

    if OmegaConf.select(config, "hydra.sweeper._target_", default=_BASIC_SWEEPER) != _BASIC_SWEEPER:
        return
    args = [str(a) for a in OmegaConf.select(config, "hydra.overrides.task", default=[]) or []]
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    args = [f"{k}={v}" for k, v in params.items()] + args
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    groups = set(_groups())
    swept = {ov.key_or_group for ov in parser.parse_overrides(args) if ov.is_sweep_override()} - groups
    swept = {k for k in swept if not k.startswith("hydra")}
    if not swept:
        return
    base = OmegaConf.masked_copy(config, [k for k in config.keys() if k != "hydra"])
    jobs = expand_overrides(args)
    seen: set[tuple[str, ...]] = set()
    for i, job in enumerate(jobs):
        plain = [ov for ov in parser.parse_overrides(job) if ov.key_or_group in swept and not ov.is_delete()]
        sig = tuple(ov.input_line for ov in plain)
        if not plain or sig in seen:
            continue
        seen.add(sig)
        cfg = base.copy()
        for ov in plain:
            try:
                OmegaConf.update(cfg, ov.key_or_group, ov.value(), merge=True, force_add=False)
            except Exception:  # a type error: composition of the job reports it
                continue
        yield i, len(jobs), [a for a in job if a.partition("=")[0].lstrip("+~") in swept], cfg


def _groups() -> list[str]:

    conf = conf_dir()
    return [p.name for p in conf.iterdir() if p.is_dir()] if conf.is_dir() else []


class ValidateCallback:
    """Hydra callback: check the composed config (and each job of a multirun) before Hydra creates
    any folder; a problem ends the process with one `error:` line and exit status 2.

    `checks`: dotted names of functions `cfg -> list[str]` that a task's primary config adds (e.g.
    `value_harms.eval.engines.engine_problems` in conf/evaluate.yaml): registries above config/ check their
    own names here, resolved by name, so config/ never imports them."""

    def __init__(self, checks: Sequence[str] = ()) -> None:
        self.checks = [str(c) for c in checks or ()]

    def _problems(self, cfg: DictConfig) -> list[str]:
        from hydra.utils import get_method  # noqa: PLC0415 - only Hydra's own callback start needs it

        out = config_problems(cfg)
        for name in self.checks:
            out += list(get_method(name)(cfg))
        return out

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        problems = self._problems(config) + _folder_problems(config)
        if problems:
            _fail(problems[0])

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        problems = self._problems(config) + _folder_problems(config)
        if problems:
            _fail(problems[0])
        try:
            jobs = list(_job_configs(config))
        except Exception:  # a sweep this re-expansion cannot follow: each job still checks itself
            jobs = []
        for i, n, job, cfg in jobs:
            problems = self._problems(cfg)
            if problems:
                _fail(f"job {i} of {n} ({' '.join(job)}): {problems[0]}")

    def __getattr__(self, name: str):  # the other Hydra callback hooks: nothing to do
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)
