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

from value_harms.config.overrides import key_problem, sweep_problem
from value_harms.config.paths import conf_dir as _conf_dir
from value_harms.errors import ValueHarmsError

_SWEEP_FN = re.compile(r"^\s*(glob|choice|range|interval|tag|sort|shuffle)\(")


def group_options(group: str, conf: Path | None = None) -> list[str]:
    """Option names of a config group (YAML files in conf/<group>/)."""
    folder = (conf or _conf_dir()) / group
    return sorted(p.stem for p in folder.glob("*.yaml"))


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
        options = group_options(key, conf)
        for opt in (v.strip() for v in value.split(",")):
            if opt and opt not in options:
                close = difflib.get_close_matches(opt, options, n=5, cutoff=0.5)
                close += [
                    o
                    for o in difflib.get_close_matches(opt.lower(), [o.lower() for o in options], n=5, cutoff=0.5)
                    for o in [options[[x.lower() for x in options].index(o)]]
                    if o not in close
                ]
                hint = f"closest: {', '.join(close[:5])}" if close else f"options: {', '.join(options[:12])}"
                return f"unknown {key} '{opt}'; {hint} (all options: ls conf/{key}/)"
    return key_problem(argv, groups, script=Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "train.py")


def guard_overrides(argv: list[str] | None = None) -> None:
    """Exit with status 2 and a one-line message when an override names an unknown option."""
    msg = check_group_overrides(list(sys.argv[1:] if argv is None else argv))
    if msg:
        print(f"error: {msg}", file=sys.stderr)
        raise SystemExit(2)


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
