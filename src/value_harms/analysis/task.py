"""The `analyze` task: results on disk -> tidy table, statistics, automatic mitigation, report.

Reads result files only (never the W&B API), so a sweep copied from a cluster analyses anywhere.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from value_harms.analysis import (
    auto_mitigation,
    check_comparable,
    compare_baselines,
    find_results,
    inference,
    load_alignment,
    load_results,
    mitigation_effects,
    persona_fidelity,
)
from value_harms.analysis.contrasts import controls_apart, flat_profiles, value_contrasts
from value_harms.analysis.injection import REGRESSORS, harm_regressions, injection_table, measured_values, read_checks
from value_harms.analysis.judge_check import leave_out_undiscriminating
from value_harms.analysis.multiplicity import apply_fdr
from value_harms.analysis.report.document import log_report_to_wandb, write_report
from value_harms.analysis.report.findings import top_findings
from value_harms.analysis.stats import MIN_REGRESSION_PROFILES
from value_harms.analysis.tidy import check_training_keys
from value_harms.config.access import cfg_get
from value_harms.config.validate import check_task
from value_harms.errors import AnalysisError
from value_harms.runtime import runs, tracking
from value_harms.runtime.runs import output_dir, run_group
from value_harms.store import files

log = logging.getLogger(__name__)


def alignment_table(aln: pd.DataFrame) -> pd.DataFrame:
    """One row per trained (or vanilla) model: PVQ NMSE, parse rate and collapse flag."""
    if aln.empty:
        return pd.DataFrame(
            columns=["profile", "model", "stage", "nmse_greedy", "nmse_expected", "parse_rate", "collapsed"]
        )
    ov = aln[aln["category"] == "overall"]
    wide = ov.pivot_table(index=["profile", "model", "stage"], columns="metric", values="value", aggfunc="first")
    wide = wide.reset_index()
    for col in ("nmse_greedy", "nmse_expected", "parse_rate", "collapsed"):
        if col not in wide:
            wide[col] = float("nan")
    wide["collapsed"] = wide["collapsed"].map(lambda x: bool(x) if pd.notna(x) else None)
    return wide[["profile", "model", "stage", "nmse_greedy", "nmse_expected", "parse_rate", "collapsed"]]


def fidelity_table(fid: pd.DataFrame) -> pd.DataFrame:
    """Persona fidelity in the report's shape: expected-score NMSE with and without the value prompt."""
    if fid is None or fid.empty:
        return pd.DataFrame(columns=["profile", "nmse_none", "nmse_value_prompt", "delta"])
    use = fid[fid["reading"] == "expected"] if "reading" in fid else fid
    return use[["profile", "nmse_none", "nmse_value_prompt", "delta"]].reset_index(drop=True)


def auto_mitigation_file(auto: dict[str, list[str]]) -> dict[str, Any]:
    """{"bench/category": values} -> {bench: {category: values, "all": union}, "all": union}."""
    out: dict[str, Any] = {"all": list(auto.get("all", []))}
    for key, values in auto.items():
        if key == "all" or "/" not in key:
            continue
        bench, cat = key.split("/", 1)
        b = out.setdefault(bench, {})
        b["all" if cat == "overall" else cat] = list(values)
    return out


def latest_audit(paths: list[str]) -> dict[str, Any] | None:
    found: list[Path] = []
    for p in paths:
        q = Path(p).expanduser()
        if q.is_file() and q.name == "audit.json":
            found.append(q)
        elif q.is_dir():
            found.extend(q.rglob("audit.json"))
    if not found:
        return None
    newest = max(found, key=lambda f: f.stat().st_mtime)
    try:
        return files.read_json(newest)
    except (OSError, ValueError):
        log.warning("audit file %s is unreadable: left out of the report", newest)
        return None


def provenance(df: pd.DataFrame, result_files: list[Path], audit: dict | None) -> dict[str, Any]:
    by_bench = df.groupby("benchmark") if not df.empty else []
    prov: dict[str, Any] = {
        "results": [str(f) for f in result_files],
        "n_results": len(result_files),
        "scorers": {},
        "stand_in": {},
        "benchmark_versions": {},
        "failures": {},
        "git": runs.git_hash(),
    }
    for bench, g in by_bench:
        prov["scorers"][bench] = sorted(g["scorer"].dropna().unique().tolist())
        prov["stand_in"][bench] = bool(g["stand_in"].fillna(False).any())
        prov["benchmark_versions"][bench] = sorted(g["benchmark_version"].dropna().astype(str).unique().tolist())
        ov = g[g["category"] == "overall"].drop_duplicates("result_id")
        prov["failures"][bench] = int(ov["missing"].fillna(0).sum())
        # per-text fallback shares, judge answers withheld by a content filter, prompt sets
        per = g.drop_duplicates("result_id")
        shares = pd.to_numeric(per.get("fallback_share"), errors="coerce").dropna() if "fallback_share" in per else []
        prov.setdefault("fallback_share", {})[bench] = (
            [float(shares.min()), float(shares.max())] if len(shares) else None
        )
        prov.setdefault("filtered", {})[bench] = (
            int(pd.to_numeric(ov["filtered"], errors="coerce").fillna(0).sum()) if "filtered" in ov else 0
        )
        prov.setdefault("prompt_sets", {})[bench] = (
            sorted(ov["prompt_set"].dropna().astype(str).unique().tolist()) if "prompt_set" in ov else []
        )
    prov["calibration"] = calibration_records(result_files)
    prov["agreement"] = agreement_records(result_files)
    if audit:
        prov["audit"] = {k: audit.get(k) for k in ("texts", "scored", "flagged", "threshold", "missing")}
        prov["audit"]["scorer"] = audit.get("scorer")
    return prov


def calibration_records(result_files: list[Path]) -> dict[str, dict[str, Any]]:
    """{benchmark: {backend: calibration summary}} of the results whose toxicity backends were
    calibrated to Perspective: data sha256, held-out Spearman / AUROC / MAE / agreement."""
    out: dict[str, dict[str, Any]] = {}
    for f in result_files:
        try:
            data = files.read_json(f)
        except (OSError, ValueError):
            continue
        backends = ((data.get("scorer") or {}).get("provenance") or {}).get("backends") or {}
        for name, b in backends.items():
            if isinstance(b, dict) and isinstance(b.get("calibration"), dict):
                out.setdefault(str((data.get("benchmark") or {}).get("name")), {})[name] = b["calibration"]
    return out


def agreement_records(result_files: list[Path]) -> dict[str, list[str]]:
    """{benchmark: [one line per distinct recorded agreement]}: how far each offline toxicity backend that
    scored it agrees with Perspective (`backends.<backend>.agreement.summary`, scoring/agreement.py)."""
    out: dict[str, list[str]] = {}
    for f in result_files:
        try:
            data = files.read_json(f)
        except (OSError, ValueError):
            continue
        lines = out.setdefault(str((data.get("benchmark") or {}).get("name")), [])
        for b in (((data.get("scorer") or {}).get("provenance") or {}).get("backends") or {}).values():
            line = (b.get("agreement") or {}).get("summary") if isinstance(b, dict) else None
            if line and line not in lines:
                lines.append(str(line))
    return {bench: lines for bench, lines in out.items() if lines}


def estimates(
    df: pd.DataFrame,
    a: Any,
    cache_dir: str | None = None,
    pv: pd.DataFrame | None = None,
    measured: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Every estimate the report can headline, from the tidy table `df` and the analysis settings `a`
    (the `analysis` config node, a dict or AnalysisConfig): regressions, comparisons with the vanilla
    model, mitigation effects, value contrasts (each with its family q-value, analysis.multiplicity), the
    optional mixed-model regressions, the family summary and the prompt-level table.
    `cache_dir`: where parsed samples files are kept between analyses (analysis.parsed). `pv`: the
    prompt-level table when the caller has it already (perf/sim_null_studies.py, which calls this same
    function); by default it is read from the results' samples files. `measured`: each trained model's
    measured values (analysis.injection.measured_values), regressed on as analysis.regress_on says."""
    alpha, conf = float(cfg_get(a, "alpha", 0.05)), float(cfg_get(a, "conf", 0.95))
    baseline = str(cfg_get(a, "regression_baseline", "vim"))
    # the fine-tuning control (a flat profile) is its own group, never one of the value-aligned models
    flat = flat_profiles(df)
    dfc = controls_apart(df, flat)
    reg = harm_regressions(
        dfc,
        regress_on=list(cfg_get(a, "regress_on", REGRESSORS)),
        measured=measured,
        baseline=baseline,
        standardize=bool(cfg_get(a, "standardize", False)),
        higher_order=bool(cfg_get(a, "higher_order", False)),
        alpha=alpha,
        min_profiles=int(cfg_get(a, "min_regression_profiles", MIN_REGRESSION_PROFILES)),
    )
    if reg.attrs.get("skipped"):
        log.info("%d regression(s) not fitted; listed in the report", len(reg.attrs["skipped"]))
    # intervals over models and prompts from the per-prompt values in samples.jsonl
    pv = inference.prompt_values(df, cache_dir=cache_dir) if pv is None else pv
    design = {
        "min_models": int(cfg_get(a, "min_models", inference.MIN_MODELS)),
        "min_prompts": int(cfg_get(a, "min_prompts", inference.MIN_PROMPTS)),
        "alpha": alpha,
    }
    pvc = controls_apart(pv, flat)
    cmp = inference.compare_prompt_level(compare_baselines(dfc, conf=conf), pvc, conf=conf, **design)
    mit = inference.mitigation_prompt_level(mitigation_effects(dfc, conf=conf), pvc, conf=conf, **design)
    con = value_contrasts(df, pv, conf=conf, **design)  # what the values add (reads the flat profiles itself)
    frames, family = apply_fdr(
        {"regression": reg, "comparison": cmp, "mitigation": mit, "contrast": con},
        alpha=alpha,
        method=str(cfg_get(a, "fdr_method", "bh")),
    )
    mixed = (
        inference.value_regressions_mixed(dfc, pvc, baseline=baseline, alpha=alpha)
        if bool(cfg_get(a, "regression_mixed", False))
        else None
    )
    est = {"reg": frames["regression"], "cmp": frames["comparison"], "mit": frames["mitigation"]}
    return {**est, "con": frames["contrast"], "mixed": mixed, "family": family, "pv": pv}


def _print_summary(paths: dict[str, Path], findings: list[str], prov: dict[str, Any], auto_file: Path) -> None:
    print(f"report: {paths['report.html']}")
    print("top findings:")
    for f in findings:
        print(f"  - {f}")
    if any(prov["stand_in"].values()):
        print("note: some scores come from a stand-in scorer; the report says which.")
    print(f"automatic mitigation written to {auto_file} (use mitigation=auto)")


def run_analyze(cfg) -> dict[str, Any]:

    # size: the analyze task's steps in order, each one call; the run's status wraps them all
    check_task(cfg)  # bad names and folders: one line, before anything is read
    a = cfg.analysis
    run_dir = output_dir(cfg)
    inputs = [str(x) for x in a.inputs]
    result_files = find_results(inputs)
    df = load_results(inputs, max_missing_frac=float(a.max_missing_frac))
    if df.empty:
        raise FileNotFoundError(f"no results.json found under {inputs}; run evaluate.py first or set analysis.inputs")
    df, judge_lines = leave_out_undiscriminating(df, result_files)  # a judge that does not discriminate
    if df.empty:
        raise AnalysisError(f"every result was left out: {judge_lines[0]}")
    check_training_keys(df, allow_mixed=bool(a.allow_mixed))
    check_comparable(
        df, allow_mixed=bool(a.allow_mixed), max_fallback_share_diff=float(a.get("max_fallback_share_diff", 0.05))
    )
    aln_tidy = load_alignment([str(x) for x in a.alignment_inputs])
    checks = read_checks([str(x) for x in a.alignment_inputs])
    wandb_run = tracking.start_run(
        cfg.logger,
        run_dir=run_dir,
        job_type="analyze",
        name=f"analysis-{run_dir.name}",
        group=run_group(cfg),
        config=files.to_plain(cfg),
        tags=["analysis"],
    )
    with runs.job_status(run_dir, {"inputs": inputs, "n_results": len(result_files)}, wandb_run):
        est = estimates(df, a, cache_dir=str(cfg.paths.cache_dir), measured=measured_values(checks))
        reg, cmp, mit, con, mixed = (est[k] for k in ("reg", "cmp", "mit", "con", "mixed"))
        fid_long = persona_fidelity(pd.concat([df, aln_tidy], ignore_index=True) if not aln_tidy.empty else df)
        auto = auto_mitigation(reg, alpha=float(a.alpha)) if not reg.empty else {"all": []}
        auto_file = Path(str(a.auto_mitigation_file)).expanduser()
        files.atomic_write_json(auto_file, auto_mitigation_file(auto))
        audit = latest_audit([str(x) for x in a.audit_inputs])
        prov = provenance(df, result_files, audit)
        findings = judge_lines + top_findings(reg, cmp, mit, k=int(a.top_k), con=con, alpha=float(a.alpha))
        prov["judge_left_out"] = judge_lines
        aln = alignment_table(aln_tidy)
        fid = fidelity_table(fid_long)
        inj = injection_table(checks, df, conf=float(a.conf))
        out = run_dir
        paths = write_report(
            out,
            reg=reg,
            cmp=cmp,
            mit=mit,
            aln=aln,
            fid=fid,
            provenance=prov,
            findings=findings,
            auto_mitigation=auto,
            con=con,
            family=est["family"],
            inj=inj,
        )
        tables = {
            "tidy": df,
            "regressions": reg,
            "baselines": cmp,
            "mitigation": mit,
            "contrasts": con,
            "alignment": aln,
            "persona_fidelity": fid,
            "injection": inj,
            "regressions_mixed": mixed,
        }
        for name, frame in tables.items():
            if frame is not None and not frame.empty:
                files.atomic_write_text(out / f"{name}.csv", frame.to_csv(index=False))
        figures = {k: v for k, v in paths.items() if str(v).endswith(".png")}
        log_report_to_wandb(wandb_run, figures, tables)
        summary = {
            "report_html": str(paths["report.html"]),
            "report_md": str(paths["report.md"]),
            "findings": findings,
            "family": est["family"],
            "n_results": len(result_files),
            "auto_mitigation_file": str(auto_file),
            "stand_in": prov["stand_in"],
        }
        files.atomic_write_json(out / "analysis.json", summary)
    _print_summary(paths, findings, prov, auto_file)
    return summary


__all__ = [
    "run_analyze",
    "estimates",
    "alignment_table",
    "auto_mitigation_file",
    "provenance",
    "latest_audit",
    "calibration_records",
    "agreement_records",
]
