"""Checks of command-line overrides before Hydra composes anything: a key that is not in the
typed schema, a value of the wrong type, a `glob(...)` that matches no option. Each problem is one line
with the closest keys or options (`value_harms.runtime.cli.guard_overrides` prints it and exits 2)."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Iterable, Sequence


def _unwrap(tp: Any) -> Any:
    """Optional[X] -> X."""
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else Any
    return tp


def schema_keys(schema: type | None = None, prefix: str = "") -> dict[str, bool]:
    """Every dotted key of the typed job schema -> whether it is an open node (a list or Any value:
    anything below it is accepted)."""
    if schema is None:
        from value_harms.config.schema import JobConfig

        schema = JobConfig
    out: dict[str, bool] = {}
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        tp = _unwrap(hints.get(f.name, Any))
        if dataclasses.is_dataclass(tp):
            out[key] = False
            out.update(schema_keys(tp, key + "."))
        else:
            out[key] = tp is Any or typing.get_origin(tp) in (list, dict, typing.List, typing.Dict)
    return out


def _leaf_types(schema: type | None = None, prefix: str = "") -> dict[str, tuple[type, bool]]:
    """Dotted key -> (int | float | bool | str, optional?) for the scalar fields of the job schema."""
    if schema is None:
        from value_harms.config.schema import JobConfig

        schema = JobConfig
    out: dict[str, tuple[type, bool]] = {}
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        raw = hints.get(f.name, Any)
        tp = _unwrap(raw)
        if dataclasses.is_dataclass(tp):
            out.update(_leaf_types(tp, f"{prefix}{f.name}."))
        elif tp in (int, float, bool, str):
            out[f"{prefix}{f.name}"] = (tp, tp is not raw)
    return out


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "y", "n"}


def _fits(value: Any, tp: type, optional: bool) -> bool:
    if value is None:
        return optional
    if isinstance(value, str) and value.startswith("${"):
        return True  # an interpolation: OmegaConf checks it when it resolves
    if tp is str:
        return isinstance(value, (str, int, float, bool))
    if tp is bool:
        return (
            isinstance(value, bool)
            or (isinstance(value, int) and value in (0, 1))
            or (isinstance(value, str) and value.lower() in _BOOL_WORDS)
        )
    if isinstance(value, str):  # a quoted number: OmegaConf converts it
        try:
            (int if tp is int else float)(value.strip())
            return True
        except ValueError:
            return False
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def type_problem(arg: str) -> str | None:
    """A one-line error when the value of a `key=value` override (each value of a sweep) does not
    have the schema's type for that key, else None."""
    key = arg.partition("=")[0].lstrip("+~")
    want = _leaf_types().get(key)
    if want is None:
        return None
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        ov = OverridesParser.create().parse_override(arg)
        if ov.is_delete():
            return None
        values = list(ov.sweep_iterator()) if ov.is_sweep_override() else [ov.value()]
    except Exception:  # not something this check understands: Hydra reports it
        return None
    for v in values:
        if not _fits(v, *want):
            null = " or null" if want[1] else ""
            shown = "null" if v is None else repr(v)
            return f"{key}={shown}: expected {_TYPE_NAMES[want[0]]}{null} (the type of {key} in the config schema)"
    return None


def _closest_keys(key: str, keys: Iterable[str], n: int = 3) -> list[str]:
    keys = list(keys)
    parent, _, leaf = key.rpartition(".")
    siblings = [k for k in keys if k.rpartition(".")[0] == parent] if parent else []
    hits = [
        f"{parent}.{h}"
        for h in difflib.get_close_matches(leaf, [s.rpartition(".")[2] for s in siblings], n=n, cutoff=0.5)
    ]
    hits += [h for h in difflib.get_close_matches(key, keys, n=n, cutoff=0.6) if h not in hits]
    if not hits:  # the leaf name under another section (lora_r -> train.lora_r)
        hits = [k for k in keys if k.rpartition(".")[2] == leaf][:n]
    return hits[:n]


def key_problem(argv: Sequence[str], groups: Iterable[str], script: str = "train.py") -> str | None:
    """A one-line error for the first `key=value` override whose key is not in the typed schema, or
    whose value does not have the key's type."""
    keys = schema_keys()
    groups = set(groups)
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        raw = arg.partition("=")[0]
        key = raw.lstrip("+~")
        if not key or "@" in key or key.startswith("hydra.") or key.startswith("hydra/") or key == "hydra":
            continue
        if key in groups:
            continue
        if key in keys:
            why = type_problem(arg)
            if why:
                return why
            continue
        parts = key.split(".")
        if any(keys.get(".".join(parts[:i])) for i in range(1, len(parts))):
            continue  # below a list / Any value
        close = _closest_keys(key, keys)
        hint = f"closest: {', '.join(close)}" if close else "no similar key"
        return (
            f"unknown config key '{key}' (in {arg!r}); {hint} (all keys: python {script} --cfg job; "
            f"'+' cannot add keys to the typed schema)"
        )
    return None


def vanilla_values_problem(argv: Sequence[str], default_profile: str = "vanilla") -> str | None:
    """`value_profile.values.X=...` on the vanilla profile (the default), whose `values` is null: Hydra would
    stop with an AssertionError traceback. One line naming the fix instead."""
    choices = [default_profile]
    for arg in argv:
        if arg.lstrip("+~").startswith("value_profile="):  # a sweep lists its options by commas
            choices = [c.strip() for c in arg.partition("=")[2].split(",")]
    if "vanilla" not in choices:
        return None
    for arg in argv:
        if arg.lstrip("+~").startswith("value_profile.values"):
            return (
                f"{arg}: value_profile=vanilla (the default) has no values to change (it is the untrained base "
                f"model); start from a profile, e.g. value_profile=Uni {arg} value_profile.name=Uni_custom "
                f"value_profile.kind=custom"
            )
    return None


def sweep_problem(key: str, value: str, options: list[str]) -> str | None:
    """A one-line error when a sweep over a config group (`glob(...)`, `choice(...)`) launches
    nothing or names an option that does not exist, else None."""
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.core.override_parser.types import ChoiceSweep, Glob

        parsed = OverridesParser.create().parse_override(f"{key}={value}").value()
    except Exception:  # not a sweep this check understands: Hydra reports it
        return None
    if isinstance(parsed, Glob):
        if not parsed.filter(options):
            near = (
                difflib.get_close_matches(str(parsed.include[0]).replace("*", ""), options, n=3, cutoff=0.3)
                if parsed.include
                else []
            )
            hint = f"closest options: {', '.join(near)}" if near else f"options: {', '.join(options[:8])}"
            return f"{key}={value} matches no option, so it would launch 0 jobs; {hint} (all options: ls conf/{key}/)"
    elif isinstance(parsed, ChoiceSweep):
        for opt in parsed.list:
            if isinstance(opt, str) and opt not in options:
                near = difflib.get_close_matches(opt, options, n=3, cutoff=0.5)
                hint = f"closest: {', '.join(near)}" if near else f"options: {', '.join(options[:8])}"
                return f"unknown {key} '{opt}' in {value}; {hint} (all options: ls conf/{key}/)"
    return None
