"""Value profiles: the 10-value importance vectors a model is aligned to.

Owns the `Profile` record, validation of user-supplied vectors, the shipped table of the study
(154 profiles: 14 anchors x (anchor + 10 nearest real ESS respondents)), the Jensen-Shannon rebuild
of the ESS part, closest-name suggestions and the export of `conf/value_profile/*.yaml`.

Sources (see ../shared/docs/PROTOCOL.md, "The 154 profiles"):
- the exact 154 vectors are rows of `unintended_harms/extreme_distributions.csv` in the paper code
  (JaehyeokLee-119/Unintended-Harms-LLM @ 4a20909), named in `target_distribution_names_full.txt`;
- the ESS profiles `close_X ... close_X_10` are the 10 rows of `ess_distribution.csv` with the smallest
  Jensen-Shannon divergence to the anchor X, both vectors normalised to sum 1.
Known oddity kept on purpose: `ess_distribution.csv` is in raw ESS direction (1 = very much like me),
yet the paper feeds those vectors as importance (6 = very important). We reproduce the paper, so the
shipped vectors are used unchanged.

CLI:
    python -m value_harms.profiles rebuild --ess PATH [--shipped-data-dir DIR]
    python -m value_harms.profiles export-conf --data-dir DIR --out conf/value_profile
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

from value_harms.config.paths import conf_dir
from value_harms.core.names import safe_name
from value_harms.core.values import ANCHORS, KEY_TO_VALUE, SCALE_MAX, SCALE_MIN, VALUE_KEYS, VALUE_TO_KEY, VALUES
from value_harms.errors import ProfileError

KINDS: tuple[str, ...] = ("extreme", "ess", "vanilla", "custom")


# Number of real ESS profiles kept per anchor (PROTOCOL.md: close_X, close_X_2 ... close_X_10).
N_CLOSE = 10


VANILLA = "vanilla"


_MISSING = "???"  # what OmegaConf prints for a mandatory value left unset


@dataclass(frozen=True)
class Profile:
    """One value profile. `values` maps full value names (VALUES order) to importance 1..6."""

    name: str
    kind: str
    anchor: str | None
    rank: int
    values: dict[str, float] | None

    @property
    def is_vanilla(self) -> bool:
        return self.values is None

    def vector(self) -> tuple[float, ...]:
        if self.values is None:
            raise ProfileError(f"value profile '{self.name}' is vanilla and has no value vector")
        return tuple(float(self.values[v]) for v in VALUES)

    def flat(self, prefix: str = "value/") -> dict[str, float]:
        """One scalar per value (e.g. {'value/Power': 6.0}), for filtering runs in W&B."""
        if self.values is None:
            return {}
        return {f"{prefix}{v}": float(self.values[v]) for v in VALUES}

    def to_dict(self) -> dict[str, Any]:
        """The config form (keys VALUE_KEYS), as written to conf/value_profile/<name>.yaml."""
        return {
            "name": self.name,
            "kind": self.kind,
            "anchor": self.anchor,
            "rank": self.rank,
            "values": None if self.values is None else {VALUE_TO_KEY[v]: float(self.values[v]) for v in VALUES},
        }


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def validate_vector(values: Mapping, name: str) -> dict[str, float]:
    """Check a 10-value vector and return it keyed by full value names, in VALUES order.

    Keys may be VALUE_KEYS ('self_direction') or full names ('Self-direction'). Every value must be
    a real number in [SCALE_MIN, SCALE_MAX] = [1, 6] (the PVQ importance scale of the study).
    """
    if not isinstance(values, Mapping):
        raise ProfileError(
            f"value profile '{name}': values must be a mapping of the 10 values to numbers in "
            f"[{SCALE_MIN:g}, {SCALE_MAX:g}], got {type(values).__name__}"
        )
    out: dict[str, float] = {}
    for key, raw in values.items():
        k = str(key)
        full = KEY_TO_VALUE.get(k) or (k if k in VALUES else None)
        if full is None:
            guess = closest_names(k, VALUE_KEYS + VALUES, n=1)
            hint = f"; did you mean '{guess[0]}'?" if guess else ""
            raise ProfileError(
                f"value profile '{name}': unknown value '{one_line(k)}'{hint} (expected keys: {', '.join(VALUE_KEYS)})"
            )
        if full in out:
            raise ProfileError(f"value profile '{name}': value '{full}' given twice")
        out[full] = _check_number(raw, full, name)
    missing = [VALUE_TO_KEY[v] for v in VALUES if v not in out]
    if missing:
        raise ProfileError(
            f"value profile '{name}': missing value(s) {', '.join(missing)} "
            f"(expected all 10 values, each a number in [{SCALE_MIN:g}, {SCALE_MAX:g}])"
        )
    return {v: out[v] for v in VALUES}


def _check_number(raw: Any, value: str, name: str) -> float:
    expected = f"expected a number in [{SCALE_MIN:g}, {SCALE_MAX:g}]"
    if raw is None or (isinstance(raw, str) and raw.strip() == _MISSING):
        raise ProfileError(f"value profile '{name}': value '{value}' is not set; {expected}")
    if isinstance(raw, bool) or not isinstance(raw, (Real, np.number)):
        raise ProfileError(
            f"value profile '{name}': value '{value}' is {one_line(repr(raw))[:60]} ({type(raw).__name__}); {expected}"
        )
    x = float(raw)
    if math.isnan(x):
        raise ProfileError(f"value profile '{name}': value '{value}' is NaN; {expected}")
    if not SCALE_MIN <= x <= SCALE_MAX:
        raise ProfileError(f"value profile '{name}': value '{value}' is {x:g}, outside the scale; {expected}")
    return x


_CLOSE_RE = re.compile(r"^close_(?P<anchor>.+?)(?:_(?P<rank>\d+))?$")


def parse_name(name: str) -> tuple[str, str | None, int]:
    """(kind, anchor, rank) implied by a name of the study's table; 'custom' for anything else.

    X -> ('extreme', X, 0); close_X -> ('ess', X, 1); close_X_k -> ('ess', X, k); vanilla ->
    ('vanilla', None, 0).
    """
    if name == VANILLA:
        return "vanilla", None, 0
    if name in ANCHORS:
        return "extreme", name, 0
    m = _CLOSE_RE.match(name)
    if m and m.group("anchor") in ANCHORS:
        rank = int(m.group("rank") or 1)
        if 1 <= rank <= N_CLOSE and (m.group("rank") is None or rank >= 2):
            return "ess", m.group("anchor"), rank
    return "custom", None, 0


def profile_from_cfg(node: Any) -> Profile:
    """Build a Profile from a config node (DictConfig or plain mapping), validating everything.

    Fields: name, kind (extreme|ess|vanilla|custom), anchor (one of ANCHORS or null), rank (int >= 0),
    values (10 numbers, or null only for kind 'vanilla'). Unset ('???') fields give a ProfileError.
    """
    data = _to_plain(node)
    if not isinstance(data, Mapping):
        raise ProfileError(f"value profile config must be a mapping, got {type(data).__name__}")
    name = data.get("name")
    if name is None or name == _MISSING or not isinstance(name, str) or not name.strip():
        raise ProfileError(f"value profile config has no usable 'name' (got {name!r})")
    safe_name(name, "value_profile.name")  # it names store and run folders: no '/', '..', control chars
    unknown = sorted(set(map(str, data)) - {"name", "kind", "anchor", "rank", "values"})
    if unknown:
        raise ProfileError(
            f"value profile '{name}': unknown field(s) {', '.join(unknown)} (expected name, kind, anchor, rank, values)"
        )
    kind = data.get("kind", "custom")
    if kind not in KINDS:
        raise ProfileError(f"value profile '{name}': kind {kind!r} is not one of {', '.join(KINDS)}")
    anchor = data.get("anchor")
    if anchor == _MISSING:
        anchor = None
    if anchor is not None and anchor not in ANCHORS:
        guess = closest_names(str(anchor), ANCHORS, n=1)
        hint = f"; did you mean '{guess[0]}'?" if guess else ""
        raise ProfileError(
            f"value profile '{name}': unknown anchor {anchor!r}{hint} (expected one of {', '.join(ANCHORS)} or null)"
        )
    rank = data.get("rank", 0)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ProfileError(f"value profile '{name}': rank must be an integer >= 0, got {rank!r}")
    values = data.get("values")
    if values is None or values == _MISSING:
        if kind != "vanilla":
            raise ProfileError(
                f"value profile '{name}': values are missing; a {kind} profile needs all 10 "
                f"values in [{SCALE_MIN:g}, {SCALE_MAX:g}] (only kind 'vanilla' may have values: null)"
            )
        return Profile(name=name, kind=kind, anchor=anchor, rank=rank, values=None)
    if kind == "vanilla":
        raise ProfileError(f"value profile '{name}': kind 'vanilla' must have values: null")
    return Profile(name=name, kind=kind, anchor=anchor, rank=rank, values=validate_vector(values, name))


def _to_plain(node: Any) -> Any:
    """DictConfig -> plain containers with unset fields kept as the string '???' (no exception)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return node
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
    return node


def paper_order() -> list[str]:
    """The 154 profile names in the paper's order (target_distribution_names_full.txt)."""
    names: list[str] = []
    for a in ANCHORS:
        names.append(a)
        names.append(f"close_{a}")
        names.extend(f"close_{a}_{k}" for k in range(2, N_CLOSE + 1))
    return names


def closest_names(name: str, choices: Sequence[str], n: int = 5) -> list[str]:
    """Up to n choices most similar to `name` (difflib ratio, case-insensitive), best first."""
    by_lower: dict[str, str] = {}
    for c in choices:
        by_lower.setdefault(str(c).lower(), str(c))
    hits = difflib.get_close_matches(str(name).lower(), list(by_lower), n=n, cutoff=0.5)
    return [by_lower[h] for h in hits]


def _profile_dir(conf: str | os.PathLike | None) -> Path:
    return conf_dir(conf) / "value_profile"


def available_profiles(conf_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the profiles in <conf>/value_profile/*.yaml, sorted."""
    d = _profile_dir(conf_dir)
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def load_profile(name: str, conf_dir: str | os.PathLike | None = None) -> Profile:
    """Load and validate conf/value_profile/<name>.yaml."""
    from omegaconf import OmegaConf

    path = _profile_dir(conf_dir) / f"{name}.yaml"
    if not path.is_file() or "/" in name or "\\" in name:
        names = available_profiles(conf_dir)
        if not names:
            raise ProfileError(f"unknown value profile '{name}': no profiles in {path.parent}")
        near = closest_names(name, names)
        hint = f"closest: {', '.join(near)}" if near else f"{len(names)} available in {path.parent}"
        raise ProfileError(f"unknown value profile '{name}'; {hint}")
    try:
        node = OmegaConf.load(path)
    except Exception as exc:  # noqa: BLE001 - any parser error becomes one line
        raise ProfileError(f"value profile '{name}': cannot read {path}: {one_line(exc)}") from exc
    prof = profile_from_cfg(node)
    if prof.name != name:
        raise ProfileError(f"value profile file {path} names itself '{prof.name}'; expected '{name}'")
    return prof
