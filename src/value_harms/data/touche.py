"""Touché23-ValueEval arguments labelled with the 10 Schwartz basic values.

Three sources, one output format (see `ARGUMENT_COLUMNS` + values.VALUES):
- `value_eval_10`: VIM's `valueEval_10.csv` (TAB-separated; index, Conclusion, Stance, Premise, 10 values).
- `touche_raw`: the Touché23 main-set files `arguments-<split>.tsv` + level-2 `labels-<split>.tsv`
  (or `labels-level2-<split>.tsv`), mapped to basic values with `LEVEL2_TO_BASIC` (OR of categories).
- `hub`: the same raw files fetched from the dataset hub (`webis/Touche23-ValueEval`).

Protocol: ../shared/docs/PROTOCOL.md "VIM training data". The OR mapping over the raw level-2 labels
reproduces valueEval_10.csv on all 7,050 (Conclusion, Stance, Premise) texts that occur exactly once in
both tables (tests/test_data.py measures it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

from value_harms.core.values import VALUES
from value_harms.errors import DataError

ARGUMENT_COLUMNS: tuple[str, ...] = ("Conclusion", "Stance", "Premise")
STANCES: frozenset[str] = frozenset({"in favor of", "against"})
SPLITS: tuple[str, ...] = ("training", "validation", "test")
SOURCES: tuple[str, ...] = ("value_eval_10", "touche_raw", "hub")
DEFAULT_PATHS: dict[str, str] = {"value_eval_10": "vim/valueEval_10.csv", "touche_raw": "touche23"}
DEFAULT_HUB_ID = "webis/Touche23-ValueEval"

# Schwartz's refined theory (Schwartz et al. 2012): the 19 refined values grouped back into the 10 basic
# ones. Face and Humility sit on the borders between higher-order groups and have no basic value: dropped.
LEVEL2_TO_BASIC: dict[str, tuple[str, ...]] = {
    "Achievement": ("Achievement",),
    "Benevolence": ("Benevolence: caring", "Benevolence: dependability"),
    "Conformity": ("Conformity: rules", "Conformity: interpersonal"),
    "Hedonism": ("Hedonism",),
    "Power": ("Power: dominance", "Power: resources"),
    "Security": ("Security: personal", "Security: societal"),
    "Self-direction": ("Self-direction: thought", "Self-direction: action"),
    "Stimulation": ("Stimulation",),
    "Tradition": ("Tradition",),
    "Universalism": (
        "Universalism: concern",
        "Universalism: nature",
        "Universalism: tolerance",
        "Universalism: objectivity",
    ),
}
DROPPED_LEVEL2: tuple[str, ...] = ("Face", "Humility")
LEVEL2_CATEGORIES: tuple[str, ...] = tuple(c for cs in LEVEL2_TO_BASIC.values() for c in cs)


def _read_tsv(path: Path, **kw) -> pd.DataFrame:
    try:
        # keep_default_na=False: an argument text such as "NA" or "null" stays a string.
        df = pd.read_csv(path, sep="\t", keep_default_na=False, **kw)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable TAB-separated file ({str(e).splitlines()[0]})") from None
    if df.empty:
        raise DataError(f"{path}: file has a header but no rows")
    return df


def _require(df: pd.DataFrame, columns: Iterable[str], path: Path | str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}")


def _binary(df: pd.DataFrame, columns: Iterable[str], path: Path | str) -> pd.DataFrame:
    out = {}
    for c in columns:
        col = pd.to_numeric(df[c], errors="coerce")
        bad = ~col.isin([0, 1])
        if bad.any():
            raise DataError(
                f"{path}: column {c!r} must hold 0/1, found {df[c][bad].iloc[0]!r} at row {df.index[bad][0]!r}"
            )
        out[c] = col.astype(int)
    return pd.DataFrame(out, index=df.index)


def _check_arguments(df: pd.DataFrame, path: Path | str) -> None:
    bad = ~df["Stance"].isin(STANCES)
    if bad.any():
        raise DataError(
            f"{path}: Stance must be 'in favor of' or 'against', found {df['Stance'][bad].iloc[0]!r} "
            f"at row {df.index[bad][0]!r}"
        )


def load_value_eval_10(path: str | Path) -> pd.DataFrame:
    """Read VIM's valueEval_10.csv: Conclusion, Stance, Premise + VALUES (int 0/1), file index kept.

    Value columns are selected by NAME: the reference code's positional `[-11:-1]` shifts every label by
    one value and drops Universalism (PROTOCOL.md, bugs not to reproduce).
    """
    path = Path(path)
    df = _read_tsv(path, index_col=0)
    _require(df, ARGUMENT_COLUMNS + VALUES, path)
    _check_arguments(df, path)
    out = pd.concat([df[list(ARGUMENT_COLUMNS)].astype(str), _binary(df, VALUES, path)], axis=1)
    out.index.name = None
    return out


def level2_to_basic(labels: pd.DataFrame, source: str | Path = "labels") -> pd.DataFrame:
    """Map a frame of the 20 level-2 categories (0/1) to the 10 basic values: OR over each value's
    categories (LEVEL2_TO_BASIC); Face and Humility are dropped."""
    _require(labels, LEVEL2_CATEGORIES, source)
    lv = _binary(labels, LEVEL2_CATEGORIES, source)
    return pd.DataFrame({v: lv[list(cs)].max(axis=1).astype(int) for v, cs in LEVEL2_TO_BASIC.items()})


def _find_split_files(root: Path, split: str) -> tuple[Path, Path]:
    """arguments-<split>.tsv and labels-<split>.tsv | labels-level2-<split>.tsv, anywhere under root."""

    def one(names: tuple[str, ...], what: str) -> Path:
        hits = sorted({p for n in names for p in root.rglob(n)})
        if not hits:
            raise DataError(f"{root}: no {what} file for split {split!r} (looked for {' or '.join(names)})")
        if len(hits) > 1:
            raise DataError(f"{root}: several {what} files for split {split!r}: {', '.join(map(str, hits))}")
        return hits[0]

    args = one((f"arguments-{split}.tsv",), "arguments")
    labels = one((f"labels-{split}.tsv", f"labels-level2-{split}.tsv"), "level-2 labels")
    return args, labels


def load_touche_raw(
    directory: str | Path,
    splits: Iterable[str] = SPLITS,
    drop_unlabelled: bool = True,
) -> pd.DataFrame:
    """Read raw Touché23 level-2 files for `splits`, concatenated in that order, and map to basic values.

    Output: Conclusion, Stance, Premise + VALUES (int 0/1), indexed by 'Argument ID' (name kept as index
    name). `drop_unlabelled` drops arguments with none of the 10 values (only Face/Humility, or nothing):
    VIM's score (min over labelled values) is undefined for them and valueEval_10.csv has none.
    """
    root = Path(directory)
    if not root.is_dir():
        raise DataError(f"{root}: Touché directory does not exist")
    parts = []
    for split in splits:
        apath, lpath = _find_split_files(root, split)
        args = _read_tsv(apath)
        _require(args, ("Argument ID",) + ARGUMENT_COLUMNS, apath)
        labels = _read_tsv(lpath)
        _require(labels, ("Argument ID",), lpath)
        for p, d in ((apath, args), (lpath, labels)):
            dup = d["Argument ID"].duplicated()
            if dup.any():
                raise DataError(f"{p}: duplicate Argument ID {d['Argument ID'][dup].iloc[0]!r}")
        args = args.set_index("Argument ID")
        labels = labels.set_index("Argument ID")
        missing = args.index.difference(labels.index)
        if len(missing):
            raise DataError(f"{lpath}: no labels for {len(missing)} argument(s) of {apath.name}, e.g. {missing[0]!r}")
        _check_arguments(args, apath)
        basic = level2_to_basic(labels.loc[args.index], lpath)
        parts.append(pd.concat([args[list(ARGUMENT_COLUMNS)].astype(str), basic], axis=1))
    if not parts:
        raise DataError(f"{root}: no splits requested")
    out = pd.concat(parts)
    dup = out.index.duplicated()
    if dup.any():
        raise DataError(f"{root}: Argument ID {out.index[dup][0]!r} appears in more than one split")
    if drop_unlabelled:
        out = out[out[list(VALUES)].sum(axis=1) > 0]
    return out


def hub_allow_patterns(splits: Iterable[str] = SPLITS) -> list[str]:
    """File patterns fetched from the hub: only the argument and level-2 label files of `splits`."""
    pats = []
    for s in splits:
        pats += [f"*arguments-{s}.tsv", f"*labels-{s}.tsv", f"*labels-level2-{s}.tsv"]
    return pats


def load_touche_hub(
    repo_id: str = DEFAULT_HUB_ID,
    revision: str | None = None,
    splits: Iterable[str] = SPLITS,
    cache_dir: str | Path | None = None,
    drop_unlabelled: bool = True,
) -> pd.DataFrame:
    """Fetch the raw Touché files from the dataset hub (pin `revision` to a commit for reproducibility)
    and read them with `load_touche_raw`."""
    from huggingface_hub import snapshot_download

    splits = tuple(splits)
    local = snapshot_download(
        repo_id,
        repo_type="dataset",
        revision=revision,
        allow_patterns=hub_allow_patterns(splits),
        cache_dir=cache_dir,
    )
    return load_touche_raw(local, splits=splits, drop_unlabelled=drop_unlabelled)


def load_arguments(
    source: str = "value_eval_10",
    path: str | Path | None = None,
    data_dir: str | Path | None = None,
    hub_id: str = DEFAULT_HUB_ID,
    revision: str | None = None,
    *,
    splits: Iterable[str] = SPLITS,
    path_key: str = "data.path",
    data_dir_key: str = "data.data_dir",
) -> pd.DataFrame:
    """Load the argument table from `source` in {"value_eval_10", "touche_raw", "hub"}.

    `path` (file for value_eval_10, directory for touche_raw; default DEFAULT_PATHS[source]) is resolved
    against `data_dir` when relative. `path_key` / `data_dir_key` name the config keys in error messages.
    """
    if source not in SOURCES:
        raise DataError(f"unknown argument source {source!r}; expected one of {', '.join(SOURCES)}")
    if source == "hub":
        return load_touche_hub(hub_id, revision=revision, splits=splits)
    p = Path(path if path is not None else DEFAULT_PATHS[source]).expanduser()
    if not p.is_absolute():
        if data_dir is None:
            if path is None:
                raise DataError(
                    f"source {source!r} needs a data directory: set {data_dir_key} (or an absolute {path_key})"
                )
        else:
            p = Path(data_dir).expanduser() / p
    if source == "value_eval_10":
        if not p.is_file():
            raise DataError(f"{p}: valueEval_10 file does not exist; set {path_key} or {data_dir_key}")
        try:
            return load_value_eval_10(p)
        except DataError as e:  # say which setting points at the bad file and what it must hold
            raise DataError(
                f"{e}; {path_key} must name a TAB-separated valueEval_10 file (index, "
                f"{', '.join(ARGUMENT_COLUMNS)} + the 10 value columns): fix the file or set "
                f"{path_key} / {data_dir_key}"
            ) from None
    if not p.is_dir():
        raise DataError(f"{p}: Touché directory does not exist; set {path_key} or {data_dir_key}")
    try:
        return load_touche_raw(p, splits=splits)
    except DataError as e:
        raise DataError(f"{e}; fix the Touché files or set {path_key} / {data_dir_key}") from None
