"""The part of a scorer config that changes a scorer's scores: part of every evaluation key.

By rule, not by list: the identity of scorer `name` is every config section it reads (its `sections` in
`SCORERS`, else its own section `scorer.<name>`), each minus the settings its schema marks transport
(timeouts, retries, rates, batch sizes, devices, the name of a secret's variable: config/schema/evaluate.py),
with files and folders replaced by their content's sha256, and settings added after results were stored
left out at the value those were scored with (`later`), so stored keys hold. A setting nobody marked is part
of the identity: forgetting one can only split a key, never merge two scorers' results. The scorer's entry
may then refine it (`ScorerKind.identity`: the toxicity chain's calibration, by its data's sha256).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any

from omegaconf import OmegaConf

from value_harms.config.schema.evaluate import CONTENT, LATER, TRANSPORT, ScorerConfig
from value_harms.scoring import SCORERS
from value_harms.store.files import to_plain
from value_harms.store.identity import content_sha256

# Never in an identity, whatever a schema says: a field named like a secret (secrets live in the environment;
# a config only names the variable, and that name is transport too).
_SECRET_WORDS = ("api_key", "secret", "password")


def scorer_identity(scorer_cfg: Any, scorer: str | None) -> dict[str, Any]:
    """The identity of scorer `scorer` (a key of SCORERS: the `scorer` of a measure) under `scorer_cfg`.
    None (a measure the job reads itself, as the PVQ check): {} - nothing scores it. A name SCORERS does not
    know: every section of the config (minus transport), never {}."""
    if scorer is None:
        return {}
    schema = _schema(scorer_cfg)
    plain = to_plain(scorer_cfg) or {}
    kind = SCORERS.get(scorer)
    out = {key: _value(plain, key, schema) for key in sections_read(scorer, plain)}
    out = {k: v for k, v in out.items() if v is not _LEFT_OUT}
    return kind.identity(scorer_cfg, out) if kind is not None and kind.identity is not None else out


def sections_read(scorer: str, plain: dict[str, Any]) -> tuple[str, ...]:
    """The config keys scorer `scorer` reads: its declared `sections`, else its own section, else (a name SCORERS
    does not know) every key of the config."""
    kind = SCORERS.get(scorer)
    if kind is not None:
        return tuple(kind.sections) if kind.sections else (scorer,)
    return tuple(plain)


_LEFT_OUT = object()


def settings_identity(section: dict[str, Any], schema: type | None) -> dict[str, Any]:
    """One section's settings that change scores: every key but the transport ones, files by content, later
    settings left out at their earlier value. `schema`: the section's dataclass (None: nothing is transport)."""
    out: dict[str, Any] = {}
    for key, value in section.items():
        v = _setting(key, value, _field_meta(schema, key), _nested(schema, key))
        if v is not _LEFT_OUT:
            out[key] = v
    return out


def _value(plain: dict[str, Any], key: str, schema: type | None) -> Any:
    """A top-level key of the scorer config: a section's settings, or a plain setting (the toxicity backend)."""
    nested = _nested(schema, key)
    value = plain.get(key)
    if value is None and nested is not None:  # an absent section reads as empty (as stored keys had it)
        value = {}
    return _setting(key, value, _field_meta(schema, key), nested)


def _setting(key: str, value: Any, meta: typing.Mapping[str, Any], nested: type | None) -> Any:
    if meta.get(TRANSPORT) or any(w in key.lower() for w in _SECRET_WORDS):
        return _LEFT_OUT
    if LATER in meta and value == meta[LATER]:
        return _LEFT_OUT
    if isinstance(value, dict):
        return settings_identity(value, nested)
    if meta.get(CONTENT) and value and os.path.exists(os.path.expanduser(str(value))):
        return content_sha256(value)
    return value


def _schema(scorer_cfg: Any) -> type | None:
    """The dataclass that types the scorer config: its own (a structured config), else the shipped schema."""
    if OmegaConf.is_config(scorer_cfg):
        t = OmegaConf.get_type(scorer_cfg)
        if dataclasses.is_dataclass(t):
            return t
    return ScorerConfig


def _field_meta(schema: type | None, key: str) -> typing.Mapping[str, Any]:
    if schema is None or not dataclasses.is_dataclass(schema):
        return {}
    found = {f.name: f for f in dataclasses.fields(schema)}.get(key)
    return found.metadata if found is not None else {}


def _nested(schema: type | None, key: str) -> type | None:
    """The dataclass of section `key` of `schema` (None: not a section, or no schema)."""
    if schema is None or not dataclasses.is_dataclass(schema):
        return None
    t = typing.get_type_hints(schema).get(key)
    for candidate in (t, *typing.get_args(t)):  # Optional[Section] too
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None
