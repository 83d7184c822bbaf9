"""Rebuilds the 140 ESS-nearest profiles from the ESS table and compares them with conf/."""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from value_harms.config.paths import CONF_DIR
from value_harms.core.profiles import N_CLOSE, VANILLA, Profile, one_line, parse_name, validate_vector
from value_harms.core.values import ANCHORS, VALUE_TO_KEY, VALUES, anchor_vector
from value_harms.errors import ProfileError

# Files of the paper code (JaehyeokLee-119/Unintended-Harms-LLM @ 4a20909), relative to a data dir.
SHIPPED_TABLE = Path("unintended_harms") / "extreme_distributions.csv"


SHIPPED_NAMES = Path("unintended_harms") / "target_distribution_names_full.txt"


SOURCE_NOTE = "paper code extreme_distributions.csv @ 4a20909 (JaehyeokLee-119/Unintended-Harms-LLM)"


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
                f"value table {path}: missing column(s) {', '.join(absent)} (header: {', '.join(header)})"
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
                raise ProfileError(f"value table {path}, line {lineno}: {one_line(exc)}") from None
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


def compare_with_shipped(rebuilt: Sequence[Profile], shipped: Sequence[Profile], tol: float = 1e-9) -> CompareReport:
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
        r.name for r in rebuilt if r.anchor == p.anchor and np.all(np.abs(np.asarray(r.vector()) - s.vector()) <= tol)
    ]
    if math.isclose(dp, ds, rel_tol=1e-12, abs_tol=1e-15):
        where = f"rebuilt as {same[0]}" if same else "not among the rebuilt"
        return f"tie: equal JS divergence {dp:.6g} to {p.anchor}; shipped vector {where}"
    return f"JS divergence {dp:.6g} rebuilt vs {ds:.6g} shipped"


def _yaml_text(p: Profile) -> str:
    """YAML of one profile; floats as repr() so they read back bit-identical."""

    def scalar(x: Any) -> str:
        if x is None:
            return "null"
        if isinstance(x, str):
            return (
                x
                if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", x)
                and x not in ("null", "true", "false", "yes", "no", "on", "off")
                else repr(x)
            )
        return str(x)

    lines = [
        f"# value profile '{p.name}'; source: {SOURCE_NOTE}"
        if p.values is not None
        else "# no value alignment (the base model); see docs/ARCHITECTURE.md",
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
        # written beside and renamed as store.files.atomic_write_text does, by hand because core/ sits below
        # store/ in the import rules (this command regenerates git-tracked conf files; one writer at a time)
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(_yaml_text(p), encoding="utf-8")
        os.replace(tmp, path)
        paths.append(path)
    return paths


def _default_data_dir() -> Path:
    env = os.environ.get("VALUE_HARMS_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[4] / "shared" / "data"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m value_harms.profiles", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    rb = sub.add_parser("rebuild", help="rebuild the 140 ESS profiles by JS divergence and compare")
    rb.add_argument("--ess", required=True, help="ess_distribution.csv (header = the 10 value names)")
    rb.add_argument(
        "--shipped-data-dir",
        default=None,
        help="data dir holding unintended_harms/extreme_distributions.csv "
        "(default: $VALUE_HARMS_DATA_DIR or ../shared/data)",
    )
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
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
