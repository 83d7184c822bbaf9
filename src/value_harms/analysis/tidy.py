"""Results files -> one tidy table (one row per result, category and metric).

Inputs are the `results.json` files the evaluate task writes (store.records.EvalRecord: the store
copy, and a copy in each run folder that adds `store_dir` / `run_dir`, see eval.publish) and the `train_result.json`
files of the train task (their `alignment` block: the PVQ value-alignment check).

Copies of one stored result are counted once: a run folder's copy names its store folder in
`store_dir`; a store copy lives in that folder. Two copies agree on the facts the record itself holds
(kind, model, variant, stage, profile, benchmark, mitigation and the content key; see
store.records.EvalRecord.identity), never on where the files are, so a store moved to another machine
or renamed still matches its run folders. Paths are never parsed (the layout is store.layout's own).
"""

# size: the one reader of stored records for analysis (evaluation, training, alignment, audit results into
# tidy frames, with the pooling and comparability checks); split, its record contract would have two owners.

from __future__ import annotations

import glob
import json
import logging
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from value_harms.core.values import KEY_TO_VALUE, VALUES
from value_harms.errors import AnalysisError
from value_harms.metrics import scorer_shares
from value_harms.store import records as stored
from value_harms.store.identity import SCHEMA_VERSION

log = logging.getLogger(__name__)

__all__ = [
    "AnalysisError",
    "TIDY_COLUMNS",
    "COUNT_KEYS",
    "find_results",
    "load_results",
    "results_to_frame",
    "find_train_results",
    "load_alignment",
    "alignment_to_frame",
    "check_comparable",
    "check_training_keys",
    "scorer_label",
]


# Entries of a metrics dict that describe a metric (counts, settings) rather than being one.
COUNT_KEYS: frozenset[str] = frozenset(
    {
        "n",
        "missing",
        "n_prompts",
        "missing_prompts",
        "missing_samples",
        "samples",
        "bias_groups",
        "bias_baseline",
        "threshold",
        "conf",
        "n_items",
        "sem",
        # RTP prompts below benchmark.min_scored_samples, the per-text fallback share, judge
        # answers the provider's content filter withheld, the number of categories of the prompt set
        "partial_prompts",
        "min_scored_samples",
        "fallback_share",
        "filtered",
        "n_categories",
    }
)

TIDY_COLUMNS: tuple[str, ...] = (
    "result_id",
    "profile",
    "kind",
    "anchor",
    *VALUES,
    "model",
    "stage",
    "baseline",
    "benchmark",
    "benchmark_version",
    "measure",
    "category",
    "mitigation",
    "disregard",
    "scorer",
    "stand_in",
    "metric",
    "value",
    "n",
    "missing",
    "source",
    "path",
    "fallback_share",
    "filtered",
    "prompt_set",
    "train_key",
)

# --------------------------------------------------------------------------------------------------
# Finding files


def _expand(paths: Iterable[str | Path], filename: str) -> list[Path]:
    """Every `filename` under the given folders, the given files, and what glob patterns match."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: list[Path] = []
    for item in paths:
        p = Path(str(item)).expanduser()
        if p.is_dir():
            found.extend(sorted(p.rglob(filename)))
        elif p.is_file():
            found.append(p)
        else:
            matches = sorted(glob.glob(str(p), recursive=True))
            if not matches:
                log.warning("%s: no such file or folder, and no glob match", item)
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    found.extend(sorted(mp.rglob(filename)))
                elif mp.is_file():
                    found.append(mp)
    out, seen = [], set()
    for f in found:
        r = f.resolve()
        if r not in seen:
            seen.add(r)
            out.append(f)
    return out


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s): skipped", path, exc)
        return None
    if not isinstance(data, dict):
        log.warning("%s holds no JSON object: skipped", path)
        return None
    return data


def _result_key(path: Path, data: Mapping[str, Any]) -> tuple[str, bool]:
    """(key shared by all copies of one stored result, whether this file is the store copy). The key
    comes from the record's own facts; a record without a content key (hand-made) is its own result."""
    sd = data.get("store_dir")
    in_store = sd is None or Path(str(sd)).expanduser().resolve() == path.parent.resolve()
    ident = stored.record_identity(data)
    if ident is None:
        return str(Path(str(sd or path.parent)).expanduser().resolve()), in_store
    return ident, in_store


def _body(data: Mapping[str, Any]) -> dict[str, Any]:
    """A record without the keys that say where a copy lives (two copies of one result agree on it)."""
    return {k: v for k, v in data.items() if k not in ("store_dir", "run_dir", "skipped")}


def _dedup(files: list[Path], *, require: str) -> list[tuple[Path, dict[str, Any], str]]:
    """Read each file once, keep one per stored result (the store copy when present)."""
    chosen: dict[str, tuple[Path, dict[str, Any], bool]] = {}
    order: list[str] = []
    for f in files:
        data = _read(f)
        if data is None:
            continue
        if require not in data:
            log.warning("%s has no %r block: not a result of this kind, skipped", f, require)
            continue
        key, in_store = _result_key(f, data)
        if key in chosen and in_store and chosen[key][2] and _body(chosen[key][1]) != _body(data):
            # another stored result with the same facts but other contents (an edited or foreign
            # copy): a result of its own, never silently merged into the first
            key = f"{key}@{f.parent.resolve()}"
        if key not in chosen:
            chosen[key] = (f, data, in_store)
            order.append(key)
        elif in_store and not chosen[key][2]:
            chosen[key] = (f, data, in_store)
    dropped = len(files) - len(order)
    if dropped > 0:
        log.info("%d result file(s) were copies of another or unreadable; %d kept", dropped, len(order))
    return [(chosen[k][0], chosen[k][1], k) for k in order]


def find_results(paths: Sequence[str | Path] | str | Path) -> list[Path]:
    """`results.json` files under folders (recursive), given files or glob patterns; one file per stored
    result (a run folder's copy and its store copy count once; the store copy is kept)."""
    return [f for f, _, _ in _dedup(_expand(paths, "results.json"), require="metrics")]


def find_train_results(paths: Sequence[str | Path] | str | Path) -> list[Path]:
    """`train_result.json` files (one per stored training result), as find_results."""
    return [f for f, _, _ in _dedup(_expand(paths, "train_result.json"), require="profile")]


# --------------------------------------------------------------------------------------------------
# Tidy frames


def scorer_label(scorer: Mapping[str, Any] | None) -> str:
    """A stable name of the scorer(s) behind a result: sorted keys of `by_scorer` joined by '+', or 'none'."""
    by = (scorer or {}).get("by_scorer") or {}
    names = sorted(str(k) for k, v in by.items() if v)
    return "+".join(names) if names else "none"


def _num(x: Any) -> float | None:
    """A float for numbers and bools; None for anything else (strings, dicts, lists, None)."""
    if isinstance(x, bool):
        return float(x)
    if isinstance(x, (int, float, np.integer, np.floating)):
        return float(x)
    return None


def _intensities(profile: Mapping[str, Any] | None) -> dict[str, float]:
    vals = (profile or {}).get("values") or {}
    out = {v: math.nan for v in VALUES}
    for k, x in vals.items():
        name = KEY_TO_VALUE.get(k, k if k in VALUES else None)
        if name is not None and _num(x) is not None:
            out[name] = float(x)
    return out


def fallback_share(scorer: Mapping[str, Any] | None) -> float:
    """Share of a result's scored texts scored by a fallback backend: the recorded `fallback_share`, else
    (results written before it was recorded) from `by_scorer` and the toxicity chain's first backend;
    0.0 for scorers without a chain (judge, regard); NaN when nothing was scored."""

    scorer = scorer or {}
    if "fallback_share" in scorer:
        v = _num(scorer.get("fallback_share"))
        return math.nan if v is None else v
    prov = scorer.get("provenance") if isinstance(scorer.get("provenance"), Mapping) else {}
    chain = prov.get("chain") or []
    got = scorer_shares(scorer.get("by_scorer") or {}, str(chain[0]) if chain else None)["fallback_share"]
    return math.nan if got is None else float(got)


def prompt_set(data: Mapping[str, Any]) -> str:
    """The categories a result's prompt set holds, with its prompt count: "300 prompts: a,b,..."; an
    overall score is comparable only between results with the same categories (HEx-PHI's hub copy has
    10 of the 11). From the recorded `categories`, else the result's per-category metric keys."""
    bench = data.get("benchmark") or {}
    metrics = data.get("metrics") or {}
    overall = metrics.get("overall") if isinstance(metrics.get("overall"), Mapping) else {}
    cats = overall.get("categories")
    names = (
        sorted(map(str, cats))
        if isinstance(cats, Mapping)
        else sorted(str(k) for k, v in metrics.items() if k != "overall" and isinstance(v, Mapping))
    )
    n = _num(bench.get("n_prompts", overall.get("n_prompts")))
    head = f"{int(n)} prompts" if n is not None else "? prompts"
    return f"{head}: {','.join(names)}" if names else head


def _counts(d: Mapping[str, Any]) -> tuple[float, float]:
    n = d.get("n", d.get("n_prompts"))
    missing = d.get("missing", d.get("missing_prompts"))
    n = _num(n)
    missing = _num(missing)
    return (math.nan if n is None else n), (math.nan if missing is None else missing)


def _is_metric(key: str) -> bool:
    return key not in COUNT_KEYS and not key.endswith("_std")


def _base_row(data: Mapping[str, Any], result_id: str, path: Path) -> dict[str, Any]:
    profile = data.get("profile") or {}
    model = data.get("model")
    model_name = model.get("name") if isinstance(model, Mapping) else model
    mit = data.get("mitigation")
    if isinstance(mit, Mapping):
        mit_name = str(mit.get("name", "none"))
        disregard = "+".join(str(v) for v in (mit.get("disregard_values") or []) if mit.get("value_prompt"))
    else:
        mit_name, disregard = (str(mit) if mit else "none"), ""
    return {
        "result_id": result_id,
        "profile": profile.get("name"),
        "kind": profile.get("kind"),
        "anchor": profile.get("anchor"),
        **_intensities(profile),
        "model": model_name,
        "stage": data.get("stage"),
        "baseline": data.get("baseline"),
        "mitigation": mit_name,
        "disregard": disregard,
        "path": str(path),
    }


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(TIDY_COLUMNS))
    for c in (*VALUES, "value", "n", "missing", "fallback_share", "filtered"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    df["stand_in"] = df["stand_in"].astype(bool)
    return df


def results_to_frame(triples: Iterable[tuple[Mapping[str, Any], str, str | Path]]) -> pd.DataFrame:
    """Tidy rows from (results dict, result_id, path) triples, each read as a store.records.EvalRecord;
    load_results reads the files for it."""
    rows: list[dict[str, Any]] = []
    for data, result_id, path in triples:
        rec = stored.EvalRecord.from_json(data, str(path))
        base = _base_row(data, result_id, Path(str(path)))
        base.update(
            {
                "benchmark": rec.benchmark_name,
                "benchmark_version": str(rec.benchmark.get("version")),
                "measure": rec.measure,
                "scorer": scorer_label(rec.scorer),
                "stand_in": bool(rec.scorer.get("stand_in", False)),
                "source": "evaluate",
                "fallback_share": fallback_share(rec.scorer),
                "prompt_set": prompt_set(data),
                "train_key": rec.train_key,
            }
        )
        for category, metrics in rec.metrics.items():
            if not isinstance(metrics, Mapping):
                continue
            n, missing = _counts(metrics)
            for metric, value in metrics.items():
                if not _is_metric(metric):
                    continue
                if value is None:
                    v = math.nan
                else:
                    v = _num(value)
                    if v is None:  # strings, lists, nested dicts: not a metric value
                        continue
                rows.append(
                    {
                        **base,
                        "category": str(category),
                        "metric": metric,
                        "value": v,
                        "n": n,
                        "missing": missing,
                        "filtered": _num(metrics.get("filtered")),
                    }
                )
    return _frame(rows)


def load_results(paths: Sequence[str | Path] | str | Path, max_missing_frac: float = 0.0) -> pd.DataFrame:
    """The tidy table of every evaluation result under `paths` (folders, files, glob patterns).

    One row per (result, category, metric) with the columns TIDY_COLUMNS: `result_id` (the store
    folder's key, shared by its copies), profile / kind / anchor, the 10 value intensities (columns named
    as values.VALUES; NaN for vanilla), model, stage, baseline, benchmark, benchmark_version, measure,
    category ('overall' or a category), mitigation (its name) and disregard (the values a value prompt
    names, '+'-joined), scorer (scorer_label), stand_in, metric, value (NaN where the metric was None),
    n / missing (the counts behind the metric when its dict has them), source ('evaluate'), path.
    """
    kept = accepted_results(_dedup(_expand(paths, "results.json"), require="metrics"), max_missing_frac)
    return results_to_frame((data, key, f) for f, data, key in kept)


def accepted_results(kept: list[tuple[Path, dict[str, Any], str]], max_missing_frac: float = 0.0):
    """The results analysis may use: of the current store schema, and complete or missing at most
    `max_missing_frac` of their scores (analysis.max_missing_frac). A partial result within that limit
    is used cell-wise: its scored samples enter the prompt-level inference and each prompt
    without a score is one missing (unit, prompt) cell; the limit only guards against results that are
    mostly missing (a scorer that failed). Each kind of rejection is said once, with its count and the
    command that fixes it; the partial results used are said once with their missing share."""
    old, partial, out, used = [], [], [], []
    for f, data, key in kept:
        rec = stored.EvalRecord.from_json(data, str(f))
        if int(rec.schema_version or 1) < SCHEMA_VERSION:
            old.append(f)
            continue
        n, missing = _num(rec.scorer.get("n")) or 0.0, _num(rec.scorer.get("missing")) or 0.0
        if rec.status == "partial" and (n <= 0 or missing / n > float(max_missing_frac) + 1e-12):
            partial.append(f)
            continue
        if rec.status == "partial":
            used.append((f, missing, n))
        out.append((f, data, key))
    if old:
        log.warning(
            "%d result(s) of an older store schema ignored (e.g. %s): rerun the evaluate commands that "
            "made them to rebuild them",
            len(old),
            old[0],
        )
    if partial:
        log.warning(
            "%d partial result(s) with more missing scores than analysis.max_missing_frac=%g ignored "
            "(e.g. %s): rerun the same evaluate command to retry the missing scores",
            len(partial),
            float(max_missing_frac),
            partial[0],
        )
    if used:
        log.info(
            "%d partial result(s) used cell-wise: %d of %d scores missing (e.g. %s); rerun their evaluate "
            "commands to retry the missing scores",
            len(used),
            int(sum(m for _, m, _ in used)),
            int(sum(n for _, _, n in used)),
            used[0][0],
        )
    return out


def check_training_keys(df: pd.DataFrame, allow_mixed: bool = False) -> list[str]:
    """Refuse to pool results of different trainings (training keys: another lr, rank, data...) for
    one (model, stage, profile, baseline, benchmark, mitigation) unless allow_mixed."""
    problems: list[str] = []
    if df.empty or "train_key" not in df:
        return problems
    rows = df.dropna(subset=["train_key"]).drop_duplicates("result_id")
    for (model, stage, profile, baseline, bench, mit), g in rows.groupby(
        ["model", "stage", "profile", "baseline", "benchmark", "mitigation"], sort=True, dropna=False
    ):
        keys = sorted(set(g["train_key"].astype(str)))
        if len(keys) > 1:
            problems.append(
                f"profile {profile} ({model}, stage {stage}, {baseline}) on {bench} / {mit} pools "
                f"{len(keys)} different trainings (training keys {', '.join(keys[:3])}); select one "
                f"with analysis.inputs, or pass analysis.allow_mixed=true to pool them"
            )
    if problems and not allow_mixed:
        raise AnalysisError(problems[0])
    for p in problems:
        log.warning("%s (allowed)", p)
    return problems


def alignment_to_frame(records: Iterable[tuple[Mapping[str, Any], str, str | Path]]) -> pd.DataFrame:
    """Tidy rows of train results' PVQ alignment blocks, in the same columns as results_to_frame:
    benchmark 'pvq', measure 'alignment', mitigation 'none', source 'train'; category 'overall' holds
    nmse_greedy, nmse_expected, parse_rate, collapsed (0/1), greedy_values_covered, mean_digit_mass;
    category <Value> holds greedy, expected and target (the per-value means)."""
    # size: one record kind to rows, field by field
    rows: list[dict[str, Any]] = []
    for data, result_id, path in records:
        al = data.get("alignment")
        if not isinstance(al, Mapping):
            continue
        base = _base_row(data, result_id, Path(str(path)))
        stage = str(data.get("stage") or "none")
        kind = (data.get("profile") or {}).get("kind")
        base.update(
            {
                "stage": stage,
                "baseline": "vanilla"
                if stage == "none" or kind == "vanilla"
                else ("benign" if stage.startswith("benign") else "vim"),
                "benchmark": "pvq",
                "benchmark_version": str(al.get("items_source") or "configured"),
                "measure": "alignment",
                "scorer": "none",
                "stand_in": False,
                "source": "train",
            }
        )
        n_items = _num(al.get("n_items"))
        n = math.nan if n_items is None else n_items
        for metric in (
            "nmse_greedy",
            "nmse_expected",
            "parse_rate",
            "collapsed",
            "greedy_values_covered",
            "mean_digit_mass",
        ):
            if metric not in al:
                continue
            v = _num(al.get(metric))
            rows.append(
                {
                    **base,
                    "category": "overall",
                    "metric": metric,
                    "value": math.nan if v is None else v,
                    "n": n,
                    "missing": math.nan,
                }
            )
        for reading in ("greedy", "expected", "target"):
            per = al.get(reading)
            if not isinstance(per, Mapping):
                continue
            for value_name, x in per.items():
                v = _num(x)
                rows.append(
                    {
                        **base,
                        "category": str(value_name),
                        "metric": reading,
                        "value": math.nan if v is None else v,
                        "n": math.nan,
                        "missing": math.nan,
                    }
                )
    return _frame(rows)


def load_alignment(paths: Sequence[str | Path] | str | Path) -> pd.DataFrame:
    """The tidy table of the PVQ value-alignment checks in `train_result.json` files (see alignment_to_frame).
    Files without an `alignment` block (alignment.enabled=false) contribute nothing."""
    kept = _dedup(_expand(paths, "train_result.json"), require="profile")
    return alignment_to_frame((data, key, f) for f, data, key in kept)


# --------------------------------------------------------------------------------------------------
# Comparability


DEFAULT_MAX_FALLBACK_SHARE_DIFF = 0.05  # conf: analysis.max_fallback_share_diff (docs/DECISIONS.md)


def check_comparable(
    df: pd.DataFrame, allow_mixed: bool = False, max_fallback_share_diff: float = DEFAULT_MAX_FALLBACK_SHARE_DIFF
) -> list[str]:
    """Refuse to compare numbers scored differently or pooled over different prompt sets.

    For each (benchmark, metric): all rows must share one `scorer` string and one `benchmark_version`;
    the results' per-text fallback shares (`fallback_share`: texts a fallback backend scored) may differ
    by at most `max_fallback_share_diff`; and the "overall" rows must pool the same categories
    (`prompt_set`: HEx-PHI's 300-prompt hub copy and the 330-prompt original do not compare overall;
    per category they do). Raises AnalysisError (one line, the first problem) unless allow_mixed; with
    allow_mixed every problem is logged as a warning. Returns the list of problems (empty when the table
    is comparable).
    """
    problems: list[str] = []
    if df.empty:
        return problems
    limit = float(max_fallback_share_diff)
    if not 0.0 <= limit <= 1.0 or math.isnan(limit):
        raise AnalysisError(
            f"analysis.max_fallback_share_diff={max_fallback_share_diff!r}; expected a share "
            f"from 0 to 1 (the default is {DEFAULT_MAX_FALLBACK_SHARE_DIFF})"
        )
    hint = "pass allow_mixed=true (config key analysis.allow_mixed) to proceed anyway"
    for (bench, metric), g in df.groupby(["benchmark", "metric"], sort=True, dropna=False):
        for col, what in (("scorer", "scorers"), ("benchmark_version", "benchmark versions")):
            # "none": a result whose every score is missing carries no number to compare.
            vals = sorted({str(v) for v in g[col].tolist()} - ({"none"} if col == "scorer" else set()))
            if len(vals) > 1:
                counts = g.drop_duplicates("result_id")[col].astype(str).value_counts()
                listing = ", ".join(f"{v} ({int(counts.get(v, 0))} results)" for v in vals)
                problems.append(
                    f"benchmark {bench} metric {metric} mixes {what}: {listing}; these numbers are not "
                    f"comparable; {hint}"
                )
        per_result = g.drop_duplicates("result_id")
        if "fallback_share" in per_result:
            shares = pd.to_numeric(per_result["fallback_share"], errors="coerce").dropna()
            if len(shares) > 1 and float(shares.max() - shares.min()) > limit + 1e-12:
                problems.append(
                    f"benchmark {bench} metric {metric} compares results whose fallback shares differ by "
                    f"{float(shares.max() - shares.min()):.3f} (from {float(shares.min()):.3f} to "
                    f"{float(shares.max()):.3f} of texts scored by a fallback scorer), more than "
                    f"analysis.max_fallback_share_diff={limit:g}; these numbers are not comparable; {hint}"
                )
        overall = g[g["category"].astype(str) == "overall"].drop_duplicates("result_id")
        if "prompt_set" in overall:
            sets = overall["prompt_set"].dropna().astype(str)
            if sets.nunique() > 1:
                counts = sets.value_counts()
                listing = "; ".join(f"{v} ({int(c)} results)" for v, c in sorted(counts.items()))
                problems.append(
                    f"benchmark {bench} metric {metric}: the overall score pools different prompt sets "
                    f"({listing}); analyse each prompt set on its own (analysis.inputs), or {hint}"
                )
    if problems and not allow_mixed:
        raise AnalysisError(problems[0])
    for p in problems:
        log.warning("%s (allowed)", p.split("; pass allow_mixed")[0].split(", or pass allow_mixed")[0])
    return problems
