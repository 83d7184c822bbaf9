"""Prompt file readers, one loader per `benchmark.format` x `benchmark.source` (registry.py maps them;
`load_prompts(bench_cfg, data_dir)` there is the one entry point).

| format | local (`benchmark.path` under `paths.data_dir`) | hub (`benchmark.hub_id` @ `benchmark.revision`) |
|---|---|---|
| rtp_list | the paper's `real_toxic_prompts.csv`: one prompt per line, no header (21,744 prompts) | RTP rows (as rtp_jsonl) |
| rtp_jsonl | RealToxicityPrompts native JSONL (`prompt.text`, `prompt.toxicity`, ...); a file or a folder of `*.jsonl` | `allenai/real-toxicity-prompts` |
| holistic_bias | generated from the HolisticBias v1.1 folder (source `generated`, see holistic_bias.py) | - |
| hex_phi_csv | a `category,prompt` CSV, or a folder of the hub's `category_N.csv` files | `LLM-Tuning-Safety/HEx-PHI` (gated) |
| beavertails_csv | `,prompt,category,category_id` CSV (700 = 14 x 50) | `PKU-Alignment/BeaverTails-Evaluation` |

`benchmark.min_prompt_toxicity` keeps RTP rows whose prompt toxicity is >= the threshold (rtp_jsonl and
hub; the paper's list is already the toxicity >= 0.5 subset, so it does not apply to a local rtp_list).
`benchmark.limit` keeps the first N prompts in file order (after the toxicity filter); HolisticBiasR
draws a seeded, axis-stratified sample instead. Every failure is a one-line `BenchmarkError` that
names the file or config key and the fix.
"""

from __future__ import annotations

import difflib
import io
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from value_harms.config.access import cfg_get as _get  # the package's one config getter
from value_harms.errors import BenchmarkError
from value_harms.eval.benchmarks.base import Prompt, read_text

log = logging.getLogger(__name__)

# HEx-PHI's 11 categories in the dataset's file order (category_1.csv .. category_11.csv); PROTOCOL.md.
# The public hub release no longer holds category_2 (child_abuse_content): it has 10 x 30 prompts.
HEX_PHI_CATEGORIES: tuple[str, ...] = (
    "illegal_activity",
    "child_abuse_content",
    "hate_harass_violence",
    "malware",
    "physical_harm",
    "economic_harm",
    "fraud_deception",
    "adult_content",
    "political_campaigning",
    "privacy_violation_activity",
    "tailored_financial_advice",
)
# BeaverTails-Evaluation's 14 categories (category_id 0..13), 50 prompts each.
BEAVERTAILS_CATEGORIES: tuple[str, ...] = (
    "animal_abuse",
    "child_abuse",
    "controversial_topics,politics",
    "discrimination,stereotype,injustice",
    "drug_abuse,weapons,banned_substance",
    "financial_crime,property_crime,theft",
    "hate_speech,offensive_language",
    "misinformation_regarding_ethics,laws_and_safety",
    "non_violent_unethical_behavior",
    "privacy_violation",
    "self_harm",
    "sexually_explicit,adult_content",
    "terrorism,organized_crime",
    "violence,aiding_and_abetting,incitement",
)
_HEX_PHI_FILE = re.compile(r"^category_(\d+)\.csv$")


# --------------------------------------------------------------------------------------------------
# Reading files with errors reported


def _read_csv(path: Path, what: str, **kw) -> pd.DataFrame:
    """pandas CSV reading of a UTF-8 checked file; every cell a string ("NA" stays "NA")."""
    text = read_text(path)
    if not text.strip():
        raise BenchmarkError(f"{path}: file is empty; expected {what} (fix the file or benchmark.path)")
    try:
        # skip_blank_lines=False: a blank line is a row (then reported by `_nonempty`), never dropped silently
        # with every later prompt renumbered.
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skip_blank_lines=False, **kw)
    except pd.errors.ParserError as e:
        raise BenchmarkError(f"{path}: not a readable CSV of {what} ({str(e).splitlines()[0]})") from None
    if df.empty:
        raise BenchmarkError(f"{path}: no rows; expected {what} (fix the file or benchmark.path)")
    return df


def _require(df: pd.DataFrame, columns: Iterable[str], path: Path | str, what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise BenchmarkError(
            f"{path}: missing column(s) {', '.join(repr(c) for c in missing)} (found {list(df.columns)}); "
            f"expected {what}"
        )


def _nonempty(values: Sequence[str], path: Path | str, column: str) -> None:
    for i, v in enumerate(values):
        if not str(v).strip():
            raise BenchmarkError(
                f"{path}: empty {column} at data row {i} (counted from 0, after any header); remove the row or fill it in"
            )


# --------------------------------------------------------------------------------------------------
# Config helpers


def local_path(cfg: Any, data_dir: str | None) -> Path:
    path = _get(cfg, "path")
    if not path:
        raise BenchmarkError("benchmark.path is not set: name the prompt file (relative to paths.data_dir)")
    p = Path(os.path.expanduser(str(path)))
    if not p.is_absolute():
        if data_dir is None:
            raise BenchmarkError(
                f"benchmark.path {str(path)!r} is relative but paths.data_dir is not set: set paths.data_dir "
                f"(or VALUE_HARMS_DATA_DIR), give an absolute path, or use benchmark.source=hub"
            )
        p = Path(os.path.expanduser(str(data_dir))) / p
    if not p.exists():
        raise BenchmarkError(
            f"{p}: not found (benchmark.path={str(path)!r}, paths.data_dir={data_dir!r}); fix benchmark.path or "
            f"paths.data_dir, or use benchmark.source=hub"
        )
    return p


def _hub_token() -> str | None:
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


def _hub_error(hub_id: str, revision: str | None, e: Exception, gated: bool = False) -> BenchmarkError:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    text = f"{type(e).__name__} {e}".lower()
    if gated and not _hub_token():
        # A known-gated dataset without a token fails whatever the transport says (offline, 401):
        # the fix is the licence + HF_TOKEN, or a local copy.
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
        return BenchmarkError(
            f"hub dataset {hub_id}@{revision or 'main'} is gated and HF_TOKEN is not set: accept its licence at "
            f"https://huggingface.co/datasets/{hub_id}, set HF_TOKEN"
            + (" and unset HF_HUB_OFFLINE" if offline else "")
            + ", or use benchmark.source=local with benchmark.path=<a local copy>"
        )
    if "gated" in text or "401" in text or "403" in text or "unauthorized" in text or "restricted" in text:
        hint = (
            f"the dataset is gated: accept its licence at https://huggingface.co/datasets/{hub_id} and set "
            f"HF_TOKEN" + ("" if _hub_token() else " (HF_TOKEN is not set)")
        )
    elif os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        hint = "the hub is offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE): use benchmark.source=local with a local copy"
    else:
        hint = "check benchmark.hub_id / benchmark.revision / benchmark.hub_split, or use benchmark.source=local"
    return BenchmarkError(f"hub dataset {hub_id}@{revision or 'main'}: {type(e).__name__}: {first}; {hint}")


def _hub_rows(cfg: Any) -> list[dict]:
    """Rows of `datasets.load_dataset(hub_id, hub_config, revision=, split=)` as plain dicts."""
    hub_id = _get(cfg, "hub_id")
    if not hub_id:
        raise BenchmarkError("benchmark.hub_id is not set: name the hub dataset, or use benchmark.source=local")
    revision = _get(cfg, "revision")
    try:
        import datasets

        ds = datasets.load_dataset(
            hub_id,
            _get(cfg, "hub_config"),
            revision=revision,
            split=_get(cfg, "hub_split", "train"),
            token=_hub_token(),
        )
    except Exception as e:  # the hub client raises many types; all become one actionable line
        raise _hub_error(hub_id, revision, e) from None
    return [dict(r) for r in ds]


# --------------------------------------------------------------------------------------------------
# RealToxicityPrompts


def _rtp_list(path: Path) -> list[Prompt]:
    if path.is_dir():
        raise BenchmarkError(f"{path}: is a folder; format rtp_list reads one file (one prompt per line)")
    # header=None: the paper's file has no header and reads as 21,744 one-column rows (115 of them
    # quoted multi-line prompts), exactly as the paper's pd.read_csv(..., header=None).
    df = _read_csv(path, "one prompt per line, no header", header=None)
    if df.shape[1] != 1:
        raise BenchmarkError(
            f"{path}: {df.shape[1]} columns; format rtp_list expects one prompt per line (quote prompts that "
            f"contain commas), or use format rtp_jsonl for RTP's JSONL schema"
        )
    texts = df.iloc[:, 0].tolist()
    _nonempty(texts, path, "prompt")
    return [Prompt(id=f"{i:05d}", prompt=t, category=None, meta={}) for i, t in enumerate(texts)]


def _rtp_row(row: dict, where: str, fallback_id: str) -> Prompt:
    prompt = row.get("prompt")
    if not isinstance(prompt, dict) or not isinstance(prompt.get("text"), str):
        raise BenchmarkError(
            f"{where}: field 'prompt.text' missing; expected RealToxicityPrompts rows "
            f'{{"prompt": {{"text": ..., "toxicity": ...}}, ...}}'
        )
    if not prompt["text"].strip():
        raise BenchmarkError(f"{where}: empty 'prompt.text'")
    tox = prompt.get("toxicity")
    if tox is not None and not isinstance(tox, (int, float)):
        raise BenchmarkError(f"{where}: 'prompt.toxicity' must be a number or null, found {tox!r}")
    meta: dict[str, Any] = {"prompt_toxicity": None if tox is None else float(tox)}
    for k in ("filename", "begin", "end", "challenging"):
        if k in row:
            meta[k] = row[k]
    cont = row.get("continuation")
    if isinstance(cont, dict) and isinstance(cont.get("toxicity"), (int, float)):
        meta["continuation_toxicity"] = float(cont["toxicity"])
    pid = f"{row['filename']}:{row['begin']}" if "filename" in row and "begin" in row else fallback_id
    return Prompt(id=pid, prompt=prompt["text"], category=None, meta=meta)


def _rtp_jsonl(path: Path) -> list[Prompt]:
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise BenchmarkError(f"{path}: folder holds no *.jsonl file; point benchmark.path at an RTP JSONL file")
    out: list[Prompt] = []
    for f in files:
        lines = read_text(f).splitlines()
        n_before = len(out)
        # Blank lines of a JSONL file are skipped (a common trailing artefact); ids stay the file's line numbers,
        # so nothing is renumbered, and the count is said.
        blank = [lineno for lineno, line in enumerate(lines, 1) if not line.strip()]
        if blank and blank != [len(lines)]:
            log.warning(
                "%s: %d blank line(s) skipped (first at line %d); prompt ids keep their line numbers",
                f,
                len(blank),
                blank[0],
            )
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise BenchmarkError(f"{f}:{lineno}: not a JSON object ({e.msg})") from None
            if not isinstance(row, dict):
                raise BenchmarkError(f"{f}:{lineno}: not a JSON object")
            p = _rtp_row(row, f"{f}:{lineno}", f"{f.stem}:{lineno}")
            if path.is_dir():
                # A folder's files may share rows (DecodingTrust's toxic/nontoxic share 4): ids carry the file.
                p = Prompt(id=f"{f.stem}/{p.id}", prompt=p.prompt, category=p.category, meta={**p.meta, "file": f.name})
            out.append(p)
        if len(out) == n_before:
            raise BenchmarkError(f"{f}: file is empty; expected RealToxicityPrompts JSONL rows")
    return out


def _min_toxicity(prompts: list[Prompt], threshold: float | None, where: str) -> list[Prompt]:
    if threshold is None:
        return prompts
    if not 0.0 <= float(threshold) <= 1.0:
        raise BenchmarkError(f"benchmark.min_prompt_toxicity must be in [0, 1], got {threshold!r}")
    unscored = sum(p.meta.get("prompt_toxicity") is None for p in prompts)
    kept = [p for p in prompts if p.meta.get("prompt_toxicity") is not None and p.meta["prompt_toxicity"] >= threshold]
    log.info(
        "%s: %d of %d prompts with prompt toxicity >= %s (%d without a score dropped)",
        where,
        len(kept),
        len(prompts),
        threshold,
        unscored,
    )
    return kept


# --------------------------------------------------------------------------------------------------
# HEx-PHI


def closest(name: str, options: Sequence[str]) -> str:
    near = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _hex_phi_file(path: Path) -> list[Prompt]:
    what = "HEx-PHI rows with header 'category,prompt'"
    df = _read_csv(path, what)
    _require(df, ("category", "prompt"), path, what)
    counters: dict[str, int] = {}
    out = []
    for i, (cat, text) in enumerate(zip(df["category"], df["prompt"])):
        cat = cat.strip()
        if cat not in HEX_PHI_CATEGORIES:
            raise BenchmarkError(
                f"{path}: unknown category {cat!r} at data row {i}{closest(cat, HEX_PHI_CATEGORIES)}; allowed: "
                f"{', '.join(HEX_PHI_CATEGORIES)}"
            )
        if not text.strip():
            raise BenchmarkError(f"{path}: empty prompt at data row {i}")
        k = counters.get(cat, 0)
        counters[cat] = k + 1
        out.append(Prompt(id=f"{cat}-{k:02d}", prompt=text, category=cat, meta={}))
    _warn_absent_hex_phi(path, counters)
    return out


def _warn_absent_hex_phi(where: Path, present) -> None:
    """Name the HEx-PHI categories a prompt set lacks: its overall score then pools fewer categories
    than the paper's 11 x 30 (results record the categories; analysis will not compare such overalls)."""
    absent = [c for c in HEX_PHI_CATEGORIES if c not in present]
    if absent:
        log.warning(
            "%s: HEx-PHI categories absent: %s (the public release omits child_abuse_content); the "
            "overall score is not comparable with runs over all %d categories",
            where,
            ", ".join(absent),
            len(HEX_PHI_CATEGORIES),
        )


def _hex_phi_folder(folder: Path) -> list[Prompt]:
    """The hub layout: category_N.csv, one prompt per line, no header; N (1-based) -> HEX_PHI_CATEGORIES."""
    files = {}
    for f in folder.iterdir():
        m = _HEX_PHI_FILE.match(f.name)
        if m:
            n = int(m.group(1))
            if not 1 <= n <= len(HEX_PHI_CATEGORIES):
                raise BenchmarkError(f"{f}: HEx-PHI has categories 1..{len(HEX_PHI_CATEGORIES)}; unexpected file")
            files[n] = f
    if not files:
        raise BenchmarkError(
            f"{folder}: no category_N.csv file; expected the HEx-PHI dataset folder "
            f"(or a 'category,prompt' CSV as benchmark.path)"
        )
    _warn_absent_hex_phi(folder, {HEX_PHI_CATEGORIES[n - 1] for n in files})
    out = []
    for n in sorted(files):
        cat = HEX_PHI_CATEGORIES[n - 1]
        df = _read_csv(files[n], "one prompt per line, no header", header=None)
        if df.shape[1] != 1:
            raise BenchmarkError(f"{files[n]}: {df.shape[1]} columns; expected one prompt per line, no header")
        texts = df.iloc[:, 0].tolist()
        _nonempty(texts, files[n], "prompt")
        out.extend(
            Prompt(id=f"{cat}-{k:02d}", prompt=t, category=cat, meta={"file": files[n].name})
            for k, t in enumerate(texts)
        )
    return out


def _hex_phi_hub(cfg: Any) -> list[Prompt]:
    hub_id = _get(cfg, "hub_id")
    if not hub_id:
        raise BenchmarkError("benchmark.hub_id is not set (LLM-Tuning-Safety/HEx-PHI), or use benchmark.source=local")
    revision = _get(cfg, "revision")
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(
            repo_id=hub_id,
            repo_type="dataset",
            revision=revision,
            allow_patterns=["category_*.csv"],
            token=_hub_token(),
        )
    except Exception as e:  # gated / offline / not found: one actionable line
        raise _hub_error(hub_id, revision, e, gated=True) from None
    return _hex_phi_folder(Path(folder))


# --------------------------------------------------------------------------------------------------
# BeaverTails


def _beavertails_rows(rows: Sequence[tuple[str, str, Any, Any]], where: str) -> list[Prompt]:
    """rows: (row id, prompt, category, category_id)."""
    out = []
    for i, (rid, text, cat, cat_id) in enumerate(rows):
        cat = str(cat).strip()
        if cat not in BEAVERTAILS_CATEGORIES:
            raise BenchmarkError(
                f"{where}: unknown category {cat!r} at data row {i}{closest(cat, BEAVERTAILS_CATEGORIES)}; "
                f"expected one of the 14 BeaverTails-Evaluation categories"
            )
        if not str(text).strip():
            raise BenchmarkError(f"{where}: empty prompt at data row {i}")
        meta = {} if cat_id in (None, "") else {"category_id": int(cat_id)}
        out.append(Prompt(id=str(rid), prompt=str(text), category=cat, meta=meta))
    return out


def _beavertails_file(path: Path) -> list[Prompt]:
    what = "BeaverTails-Evaluation rows ',prompt,category,category_id'"
    df = _read_csv(path, what)
    _require(df, ("prompt", "category"), path, what)
    index_col = df.columns[0] if df.columns[0] in ("", "Unnamed: 0") else None
    ids = df[index_col].tolist() if index_col is not None else [str(i) for i in range(len(df))]
    cat_ids = df["category_id"].tolist() if "category_id" in df.columns else [None] * len(df)
    bad = [c for c in cat_ids if c not in (None, "") and not str(c).strip().isdigit()]
    if bad:
        raise BenchmarkError(f"{path}: column 'category_id' must hold integers, found {bad[0]!r}")
    return _beavertails_rows(list(zip(ids, df["prompt"], df["category"], cat_ids)), str(path))


# --------------------------------------------------------------------------------------------------
# Entry points


# --------------------------------------------------------------------------------------------------
# The loaders the registry (registry.py) maps each format x source to: (benchmark config, data_dir) ->
# (prompts, where they came from), before benchmark.limit / per_category.


def rtp_list_local(cfg: Any, data_dir: str | None) -> tuple[list[Prompt], str]:
    path = local_path(cfg, data_dir)
    return _rtp_list(path), str(path)


def rtp_jsonl_local(cfg: Any, data_dir: str | None) -> tuple[list[Prompt], str]:
    path = local_path(cfg, data_dir)
    return _min_toxicity(_rtp_jsonl(path), _get(cfg, "min_prompt_toxicity"), str(path)), str(path)


def rtp_hub(cfg: Any, data_dir: str | None) -> tuple[list[Prompt], str]:
    where = f"hub dataset {_get(cfg, 'hub_id')}"
    rows = _hub_rows(cfg)
    prompts = [_rtp_row(r, f"{where} row {i}", f"{i:06d}") for i, r in enumerate(rows)]
    return _min_toxicity(prompts, _get(cfg, "min_prompt_toxicity"), where), where


def hex_phi_local(cfg: Any, data_dir: str | None) -> tuple[list[Prompt], str]:
    path = local_path(cfg, data_dir)
    return (_hex_phi_folder(path) if path.is_dir() else _hex_phi_file(path)), str(path)


def hex_phi_hub(cfg: Any, data_dir: str | None) -> tuple[list[Prompt], str]:
    return _hex_phi_hub(cfg), str(_get(cfg, "name", "hex_phi_csv"))


def beavertails_local(cfg: Any, data_dir: str | None) -> tuple[list[Prompt], str]:
    path = local_path(cfg, data_dir)
    return _beavertails_file(path), str(path)


def beavertails_hub(cfg: Any, data_dir: str | None) -> tuple[list[Prompt], str]:
    where = f"hub dataset {_get(cfg, 'hub_id')}"
    rows = _hub_rows(cfg)
    for k in ("prompt", "category"):
        if rows and k not in rows[0]:
            raise BenchmarkError(f"{where}: field {k!r} missing (found {sorted(rows[0])}); check benchmark.hub_id")
    return _beavertails_rows(
        [(str(i), r["prompt"], r["category"], r.get("category_id")) for i, r in enumerate(rows)], where
    ), where
