"""Command-line helpers shared by the entry points (`train.py`, `evaluate.py`, `analyze.py`).

Hydra answers an unknown group option with the full list of options (155 value profiles) and a key
typo with several lines suggesting `+key=` (which the typed schema then rejects); users deserve one
line with the closest names instead, so entry points check their overrides first: group options,
sweeps over groups (`glob(...)` matching nothing launches no job) and keys (value_harms.config.validate).
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path

from value_harms.config.overrides import key_problem, sweep_problem, vanilla_values_problem
from value_harms.config.paths import conf_dir as _conf_dir
from value_harms.errors import ValueHarmsError

_SWEEP_FN = re.compile(r"^\s*(glob|choice|range|interval|tag|sort|shuffle)\(")


def closest_options(name: str, options: list[str], n: int = 5) -> list[str]:
    """Up to n options most similar to `name` (difflib ratio, the better of as-typed and case-insensitive), best
    first; equal ratios in natural order (close_Pow_2, close_Pow_4, ..., not difflib's reverse close_Pow_9, _8)."""

    def ratio(o: str) -> float:
        return max(
            difflib.SequenceMatcher(None, name, o).ratio(),
            difflib.SequenceMatcher(None, name.lower(), o.lower()).ratio(),
        )

    def natural(o: str) -> list:
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", o)]

    scored = sorted((-r, natural(o), o) for o in options if (r := ratio(o)) >= 0.5)
    return [o for _, _, o in scored[:n]]


def group_options(group: str, conf: Path | None = None, nested: bool = False) -> list[str]:
    """Option names of a config group (YAML files in conf/<group>/). `nested` adds the options in its
    sub-folders as `sub/name` (e.g. value_profile=control/flat), which Hydra's glob(...) does not list."""
    folder = (conf or _conf_dir()) / group
    files = folder.rglob("*.yaml") if nested else folder.glob("*.yaml")
    return sorted(p.relative_to(folder).with_suffix("").as_posix() for p in files)


def check_group_overrides(argv: list[str], conf: Path | None = None) -> str | None:
    """A one-line error for the first `group=option` override naming no option, else None."""
    conf = conf or _conf_dir()
    groups = {p.name for p in conf.iterdir() if p.is_dir()} if conf.is_dir() else set()
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, _, value = arg.partition("=")
        key = key.lstrip("+~")
        if key.startswith("hydra/"):
            continue
        if key in groups and _SWEEP_FN.match(value):
            msg = sweep_problem(key, value, group_options(key, conf))
            if msg:
                return msg
            continue
        if key not in groups or not value or value == "null":
            continue
        options = group_options(key, conf, nested=True)
        for opt in (v.strip() for v in value.split(",")):
            if opt and opt not in options:
                close = closest_options(opt, options)
                hint = f"closest: {', '.join(close)}" if close else f"options: {', '.join(options[:12])}"
                return f"unknown {key} '{opt}'; {hint} (all options: ls conf/{key}/)"
    return vanilla_values_problem(argv) or key_problem(
        argv, groups, script=Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "train.py"
    )


_MULTIRUN = {"-m", "--multirun"}
_CFG = {"-c", "--cfg"}
_OTHER_MODES = {"-r": "--run", "--run": "--run", "-i": "--info", "--info": "--info"}
_VALUED = {"-c", "--cfg", "-p", "--package", "-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir"}


def _split_flags(argv: list[str]) -> tuple[dict[str, str | None], list[str]]:
    """Hydra's flags ({flag: value or None}) and the overrides of a command line."""
    flags: dict[str, str | None] = {}
    overrides: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg.startswith("-"):
            name, eq, value = arg.partition("=")
            flags[name] = value if eq else (next(it, None) if name in _VALUED else None)
        else:
            overrides.append(arg)
    return flags, overrides


def multirun_cfg(argv: list[str], script: str) -> str | None:
    """Hydra refuses `-m` beside `--cfg` / `--info` / `--run` with a traceback. `-m --cfg job|all` prints the
    config of every job of the sweep (what a user means by it); the other pairs get one line. None when the
    command line is not such a pair; else the text to print on stdout."""
    flags, overrides = _split_flags(argv)
    if not _MULTIRUN & flags.keys():
        return None
    other = sorted({_OTHER_MODES[f] for f in flags if f in _OTHER_MODES})
    if other:
        raise ValueHarmsError(
            f"-m cannot be combined with {', '.join(other)} (Hydra runs one mode at a time); drop one"
        )
    cfg_flag = next((f for f in flags if f in _CFG), None)
    if cfg_flag is None:
        return None
    what = flags[cfg_flag]
    if what not in ("job", "all"):
        raise ValueHarmsError(f"{cfg_flag} {what}: with -m, expected --cfg job or --cfg all (one config per job)")
    from hydra import compose, initialize_config_dir  # noqa: PLC0415 - only this rare path needs Hydra's API
    from omegaconf import OmegaConf  # noqa: PLC0415 - as above

    from value_harms.config.sweep import expand_overrides  # noqa: PLC0415 - as above

    jobs = expand_overrides(overrides)
    out = []
    with initialize_config_dir(config_dir=str(_conf_dir()), version_base="1.3"):
        for i, job in enumerate(jobs):
            cfg = compose(config_name=Path(script).stem, overrides=job, return_hydra_config=what == "all")
            out.append(
                f"# job {i} of {len(jobs)}: {' '.join(job)}\n{OmegaConf.to_yaml(cfg, resolve='--resolve' in flags)}"
            )
    return "\n".join(out)


def guard_overrides(argv: list[str] | None = None) -> None:
    """Exit with status 2 and a one-line message when an override names an unknown option; print every job's
    config for `-m --cfg job` (then exit 0) rather than let Hydra raise."""
    argv = list(sys.argv[1:] if argv is None else argv)
    msg = check_group_overrides(argv)
    if msg:
        print(f"error: {msg}", file=sys.stderr)
        raise SystemExit(2)
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "train.py"
    try:
        text = multirun_cfg(argv, script)
    except ValueHarmsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if text is not None:
        print(text)
        raise SystemExit(0)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that describe bad input: reported in one line, without a traceback.

    Every such error of the package derives from `ValueHarmsError` (value_harms.errors); the two OS errors
    for a path that is missing or not writable name the path themselves."""
    return (ValueHarmsError, FileNotFoundError)


def run_task(task, cfg) -> object:
    """Run a task; bad input ends the process with status 2 and one line naming the problem."""
    try:
        return task(cfg)
    except PermissionError as exc:  # a folder that cannot be written (read-only disk, another user's dir)
        where = exc.filename or "a file"
        print(
            f"error: cannot write {where}: {exc.strerror or exc}; set paths.output_dir / paths.store_dir "
            f"to a writable folder",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    except user_errors() as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        raise SystemExit(2) from None
