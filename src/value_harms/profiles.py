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

import argparse
import csv
import difflib
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

from value_harms.values import (
    ANCHORS,
    KEY_TO_VALUE,
    SCALE_MAX,
    SCALE_MIN,
    VALUE_KEYS,
    VALUES,
    VALUE_TO_KEY,
    anchor_vector,
)

__all__ = [
    "CONF_DIR",
    "CompareReport",
    "KINDS",
    "N_CLOSE",
    "Profile",
    "ProfileError",
    "available_profiles",
    "closest_names",
    "compare_with_shipped",
    "conf_dir",
    "export_conf",
    "js_divergence",
    "load_profile",
    "load_shipped_table",
    "main",
    "nearest_ess",
    "paper_order",
    "parse_name",
    "profile_from_cfg",
    "read_ess_table",
    "rebuild_ess_profiles",
    "validate_vector",
]

KINDS: tuple[str, ...] = ("extreme", "ess", "vanilla", "custom")
# Number of real ESS profiles kept per anchor (PROTOCOL.md: close_X, close_X_2 ... close_X_10).
N_CLOSE = 10
# Files of the paper code (JaehyeokLee-119/Unintended-Harms-LLM @ 4a20909), relative to a data dir.
SHIPPED_TABLE = Path("unintended_harms") / "extreme_distributions.csv"
SHIPPED_NAMES = Path("unintended_harms") / "target_distribution_names_full.txt"
SOURCE_NOTE = (
    "paper code extreme_distributions.csv @ 4a20909 "
    "(JaehyeokLee-119/Unintended-Harms-LLM)"
)
VANILLA = "vanilla"
_MISSING = "???"  # what OmegaConf prints for a mandatory value left unset

CONF_DIR: Path = Path(__file__).resolve().parents[2] / "conf"


class ProfileError(ValueError):
    """A value profile that is unknown, malformed or out of range (message is one line)."""


def conf_dir(override: str | os.PathLike | None = None) -> Path:
    """The config dir: the argument, else $VALUE_HARMS_CONF_DIR, else the repo's `conf/`."""
    if override is not None:
        return Path(override)
    env = os.environ.get("VALUE_HARMS_CONF_DIR")
    return Path(env) if env else CONF_DIR


# --------------------------------------------------------------------------------------------
# The record


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
            "values": None
            if self.values is None
            else {VALUE_TO_KEY[v]: float(self.values[v]) for v in VALUES},
        }


# --------------------------------------------------------------------------------------------
# Validation


def _one_line(text: str) -> str:
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
                f"value profile '{name}': unknown value '{_one_line(k)}'{hint} "
                f"(expected keys: {', '.join(VALUE_KEYS)})"
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
            f"value profile '{name}': value '{value}' is {_one_line(repr(raw))[:60]} "
            f"({type(raw).__name__}); {expected}"
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
    from value_harms.validate import check_name

    check_name(name, "value_profile.name")  # it names store and run folders: no '/', '..', control chars
    unknown = sorted(set(map(str, data)) - {"name", "kind", "anchor", "rank", "values"})
    if unknown:
        raise ProfileError(
            f"value profile '{name}': unknown field(s) {', '.join(unknown)} "
            f"(expected name, kind, anchor, rank, values)"
        )
    kind = data.get("kind", "custom")
    if kind not in KINDS:
        raise ProfileError(
            f"value profile '{name}': kind {kind!r} is not one of {', '.join(KINDS)}"
        )
    anchor = data.get("anchor")
    if anchor == _MISSING:
        anchor = None
    if anchor is not None and anchor not in ANCHORS:
        guess = closest_names(str(anchor), ANCHORS, n=1)
        hint = f"; did you mean '{guess[0]}'?" if guess else ""
        raise ProfileError(
            f"value profile '{name}': unknown anchor {anchor!r}{hint} "
            f"(expected one of {', '.join(ANCHORS)} or null)"
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
    return Profile(name=name, kind=kind, anchor=anchor, rank=rank,
                   values=validate_vector(values, name))


def _to_plain(node: Any) -> Any:
    """DictConfig -> plain containers with unset fields kept as the string '???' (no exception)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return node
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
    return node


# --------------------------------------------------------------------------------------------
# Names and the config store


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
        raise ProfileError(f"value profile '{name}': cannot read {path}: {_one_line(exc)}") from exc
    prof = profile_from_cfg(node)
    if prof.name != name:
        raise ProfileError(
            f"value profile file {path} names itself '{prof.name}'; expected '{name}'"
        )
    return prof


# --------------------------------------------------------------------------------------------
# The shipped table


def _read_rows(path: Path, delimiter: str, name_col: str | None) -> tuple[list[str], np.ndarray]:
    """Rows of a value table, value columns selected by header name. Returns (names, N x 10)."""
    if not path.is_file():
        raise ProfileError(f"value table not found: {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ProfileError(f"value table {path} is empty") from None
        need = ([name_col] if name_col else []) + list(VALUES)
        absent = [c for c in need if c not in header]
        if absent:
            raise ProfileError(
                f"value table {path}: missing column(s) {', '.join(absent)} "
                f"(header: {', '.join(header)})"
            )
        idx = [header.index(v) for v in VALUES]
        ni = header.index(name_col) if name_col else None
        names: list[str] = []
        rows: list[list[float]] = []
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            try:
                rows.append([float(row[i]) for i in idx])
            except (ValueError, IndexError) as exc:
                raise ProfileError(f"value table {path}, line {lineno}: {_one_line(exc)}") from None
            names.append(row[ni].strip() if ni is not None else str(lineno))
    return names, np.asarray(rows, dtype=float).reshape(-1, len(VALUES))


def load_shipped_table(data_dir: str | os.PathLike) -> list[Profile]:
    """The 154 profiles of the study as shipped (names file order), kind/anchor/rank from the name."""
    data_dir = Path(data_dir)
    names_path = data_dir / SHIPPED_NAMES
    if not names_path.is_file():
        raise ProfileError(f"profile names file not found: {names_path}")
    wanted = [ln.strip() for ln in names_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    row_names, mat = _read_rows(data_dir / SHIPPED_TABLE, "\t", "Country")
    by_name: dict[str, np.ndarray] = {}
    for n, r in zip(row_names, mat):
        if n in by_name:
            raise ProfileError(f"{data_dir / SHIPPED_TABLE}: profile '{n}' appears twice")
        by_name[n] = r
    out: list[Profile] = []
    for n in wanted:
        if n not in by_name:
            raise ProfileError(f"{data_dir / SHIPPED_TABLE}: no row for profile '{n}'")
        kind, anchor, rank = parse_name(n)
        vec = validate_vector(dict(zip(VALUES, map(float, by_name[n]))), n)
        out.append(Profile(name=n, kind=kind, anchor=anchor, rank=rank, values=vec))
    return out


# --------------------------------------------------------------------------------------------
# Jensen-Shannon nearest neighbours


def js_divergence(p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray) -> np.ndarray | float:
    """Jensen-Shannon divergence in nats (natural log) after normalising each vector to sum 1.

    Broadcasts: `p` may be an (N, 10) matrix and `q` one vector. Equals the square of
    scipy.spatial.distance.jensenshannon(p, q) with its default base e, up to rounding. The base only
    rescales the divergence, so the ranking of neighbours does not depend on it.

    Every sum is taken over sorted terms, so the result is invariant (bit for bit) to permuting the
    coordinates of p and q together. Profiles that tie mathematically - e.g. two ESS rows that put
    the same off-anchor 1.5 on different values - therefore tie exactly in floating point too, and
    `nearest_ess` can break the tie by table order. A plain sum (and scipy) leaves them a few ulp
    apart in an order set by rounding noise.
    """

    def _sum(x: np.ndarray) -> np.ndarray:
        return np.sort(x, axis=-1).sum(axis=-1)

    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    p = p / _sum(p)[..., None]
    q = q / _sum(q)[..., None]
    m = 0.5 * (p + q)

    def _kl_terms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, a * np.log(a / b), 0.0)

    p, q, m = np.broadcast_arrays(p, q, m)
    d = 0.5 * _sum(_kl_terms(p, m) + _kl_terms(q, m))
    return float(d) if np.ndim(d) == 0 else d


def nearest_ess(ess: np.ndarray, anchor_vec: Sequence[float], k: int = N_CLOSE) -> np.ndarray:
    """Indices of the k rows of `ess` closest to `anchor_vec` in JS divergence, nearest first.

    Stable sort: rows with equal divergence keep their table order.
    """
    d = js_divergence(np.asarray(ess, dtype=float), anchor_vec)
    return np.argsort(d, kind="stable")[:k]


def read_ess_table(ess_csv_path: str | os.PathLike) -> np.ndarray:
    """An `ess_distribution.csv`-format table (comma-separated, header = value names) as N x 10."""
    _, mat = _read_rows(Path(ess_csv_path), ",", None)
    if len(mat) == 0:
        raise ProfileError(f"value table {ess_csv_path} has no rows")
    return mat


def rebuild_ess_profiles(ess_csv_path: str | os.PathLike) -> list[Profile]:
    """The 140 ESS profiles (close_X .. close_X_10 per anchor, paper order), rebuilt by JS distance."""
    ess = read_ess_table(ess_csv_path)
    out: list[Profile] = []
    for a in ANCHORS:
        for rank, i in enumerate(nearest_ess(ess, anchor_vector(a), N_CLOSE), start=1):
            n = f"close_{a}" if rank == 1 else f"close_{a}_{rank}"
            vec = validate_vector(dict(zip(VALUES, map(float, ess[i]))), n)
            out.append(Profile(name=n, kind="ess", anchor=a, rank=rank, values=vec))
    return out


@dataclass(frozen=True)
class CompareReport:
    total: int
    matched: int
    mismatched: tuple[str, ...]  # rebuilt names whose vector differs from the shipped one
    missing: tuple[str, ...]  # rebuilt names the shipped table lacks
    notes: dict[str, str]  # name -> why it differs

    def summary(self) -> str:
        return f"rebuilt {self.total} ESS profiles; {self.matched}/{self.total} match the shipped vectors"


def compare_with_shipped(
    rebuilt: Sequence[Profile], shipped: Sequence[Profile], tol: float = 1e-9
) -> CompareReport:
    """Compare rebuilt profiles with the shipped ones by name (vector equality to `tol`).

    A mismatch whose shipped vector is another rebuilt profile of the same anchor at an equal JS
    divergence is explained as a tie (the order among exactly equal distances is arbitrary).
    """
    ship = {p.name: p for p in shipped}
    matched = 0
    mismatched: list[str] = []
    missing: list[str] = []
    notes: dict[str, str] = {}
    for p in rebuilt:
        s = ship.get(p.name)
        if s is None or s.values is None:
            missing.append(p.name)
            continue
        a, b = np.asarray(p.vector()), np.asarray(s.vector())
        if np.all(np.abs(a - b) <= tol):
            matched += 1
            continue
        mismatched.append(p.name)
        notes[p.name] = _explain(p, s, rebuilt, tol)
    return CompareReport(len(rebuilt), matched, tuple(mismatched), tuple(missing), notes)


def _explain(p: Profile, s: Profile, rebuilt: Sequence[Profile], tol: float) -> str:
    if p.anchor is None:
        return "vector differs"
    target = anchor_vector(p.anchor)
    dp, ds = js_divergence(p.vector(), target), js_divergence(s.vector(), target)
    same = [
        r.name for r in rebuilt
        if r.anchor == p.anchor and np.all(np.abs(np.asarray(r.vector()) - s.vector()) <= tol)
    ]
    if math.isclose(dp, ds, rel_tol=1e-12, abs_tol=1e-15):
        where = f"rebuilt as {same[0]}" if same else "not among the rebuilt"
        return f"tie: equal JS divergence {dp:.6g} to {p.anchor}; shipped vector {where}"
    return f"JS divergence {dp:.6g} rebuilt vs {ds:.6g} shipped"


# --------------------------------------------------------------------------------------------
# Config export


def _yaml_text(p: Profile) -> str:
    """YAML of one profile; floats as repr() so they read back bit-identical."""

    def scalar(x: Any) -> str:
        if x is None:
            return "null"
        if isinstance(x, str):
            return x if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", x) and x not in (
                "null", "true", "false", "yes", "no", "on", "off") else repr(x)
        return str(x)

    lines = [
        f"# value profile '{p.name}'; source: {SOURCE_NOTE}" if p.values is not None
        else "# no value alignment (the base model); see docs/INTERFACES.md",
        f"name: {scalar(p.name)}",
        f"kind: {p.kind}",
        f"anchor: {scalar(p.anchor)}",
        f"rank: {p.rank}",
    ]
    if p.values is None:
        lines.append("values: null")
    else:
        lines.append("values:")
        lines.extend(f"  {VALUE_TO_KEY[v]}: {float(p.values[v])!r}" for v in VALUES)
    return "\n".join(lines) + "\n"


def export_conf(data_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Write one YAML per shipped profile plus vanilla.yaml into out_dir; returns the paths."""
    profiles = load_shipped_table(data_dir)
    profiles.append(Profile(name=VANILLA, kind="vanilla", anchor=None, rank=0, values=None))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for p in profiles:
        path = out / f"{p.name}.yaml"
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(_yaml_text(p), encoding="utf-8")
        os.replace(tmp, path)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# CLI


def _default_data_dir() -> Path:
    env = os.environ.get("VALUE_HARMS_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m value_harms.profiles", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    rb = sub.add_parser("rebuild", help="rebuild the 140 ESS profiles by JS divergence and compare")
    rb.add_argument("--ess", required=True, help="ess_distribution.csv (header = the 10 value names)")
    rb.add_argument("--shipped-data-dir", default=None,
                    help="data dir holding unintended_harms/extreme_distributions.csv "
                         "(default: $VALUE_HARMS_DATA_DIR or ../shared/data)")
    ex = sub.add_parser("export-conf", help="write conf/value_profile/*.yaml from the shipped table")
    ex.add_argument("--data-dir", required=True)
    ex.add_argument("--out", default=str(CONF_DIR / "value_profile"))
    args = ap.parse_args(argv)
    try:
        if args.cmd == "rebuild":
            rebuilt = rebuild_ess_profiles(args.ess)
            shipped = load_shipped_table(args.shipped_data_dir or _default_data_dir())
            rep = compare_with_shipped(rebuilt, shipped)
            print(rep.summary())
            for n in rep.mismatched:
                print(f"  mismatch {n}: {rep.notes[n]}")
            for n in rep.missing:
                print(f"  not in shipped table: {n}")
        else:
            paths = export_conf(args.data_dir, args.out)
            print(f"wrote {len(paths)} value profiles to {args.out}")
    except (ProfileError, OSError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
