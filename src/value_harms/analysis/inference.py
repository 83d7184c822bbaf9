"""Inference at the right unit: intervals over models AND prompts, power, design minimums.

The study samples two things: models (value profiles of one base model) and prompts (a sample of a
benchmark); each prompt's value (e.g. the max toxicity over its samples) also carries generation
noise. A comparison that treats one of them as fixed is overconfident. Here each comparison is made on
the prompt-level values read from each result's `samples.jsonl`:

    Y[u, p] = value of unit (model / profile) u on prompt p, averaged over the results of that unit
              (generation seeds of one profile are one unit, never separate observations)

Two-way (models x prompts) estimator, paired on the prompts both sides share:
    estimate = mean over prompts of d_p,  d_p = mean_u G[u, p] - mean_u R[u, p]   (R absent: one-sample)
    variance = s2(d_p) / P                                          (prompts, incl. generation noise)
             + sum over sides with U >= 2 of  s2(unit means) / U - s2(residual) / (U P)
    (the last term removes the residual variance counted in both the prompt and the unit part:
    the two-way "pigeonhole" moment estimator). Degrees of freedom: Welch-Satterthwaite over the prompt
    part (P - 1) and each unit part (U - 1); a t interval and p-value. A single vanilla model is a fixed
    reference (there is one vanilla model, not a sample of them): it contributes prompt noise only.

`python -m value_harms.power` and `power_table` turn a pilot's variance components into the minimum
detectable effect of a planned design (profiles x prompts x samples) and the prompts a target needs.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from value_harms.analysis import parsed
from value_harms.analysis.design import POWER, design_se, mde, prompts_needed, two_way, variance_components
from value_harms.core.values import VALUES

log = logging.getLogger(__name__)

__all__ = [
    "METHOD",
    "MIN_MODELS",
    "MIN_PROMPTS",
    "prompt_values",
    "two_way",
    "variance_components",
    "design_se",
    "mde",
    "prompts_needed",
    "compare_prompt_level",
    "mitigation_prompt_level",
    "power_table",
    "pooled_components",
]

METHOD = (
    "two-way (models x prompts) moment estimator, paired on shared prompts; Welch-Satterthwaite t "
    "interval; seeds of one profile averaged; vanilla is a fixed reference"
)
# The smallest design whose comparisons may headline a finding (analysis.min_models / min_prompts).
MIN_MODELS = 5
MIN_PROMPTS = 30

UNIT = ["model", "stage", "baseline", "profile"]
# The prompt-level table (prompt_values): one row per (result, metric, prompt) cell that has a value.
PV_COLUMNS = (
    "result_id",
    *UNIT,
    "mitigation",
    "disregard",
    "benchmark",
    "metric",
    "prompt",
    "value",
    "samples",
    "sample_var",
)


# --------------------------------------------------------------------------------------------------
# Prompt-level values from samples.jsonl


def prompt_values(df: pd.DataFrame, cache_dir: str | Path | None = None) -> pd.DataFrame:
    """Per-prompt values of every result in the tidy table `df` (tidy.load_results), read from the
    `samples.jsonl` next to each result's results.json. Columns: result_id, model, stage, baseline,
    profile, mitigation, disregard, benchmark, metric, prompt, value, samples, sample_var (the sampling
    variance of a value that is a mean over samples: metrics.prompt_values.sampling_variance; NaN for a
    maximum). Results without a readable samples file are left out (logged once with a count).
    `cache_dir` (paths.cache_dir): keep each result's parsed values there, keyed by its samples file's
    checksum, so the next analysis of an unchanged store reads no samples (None: no cache)."""
    cols = [*PV_COLUMNS]
    if df is None or df.empty:
        return pd.DataFrame(columns=cols)
    per = df[df["category"] == "overall"].drop_duplicates("result_id")
    # parsed with pyarrow and cached by each samples file's checksum (analysis.parsed)
    return parsed.prompt_level(per, cols, cache_dir=cache_dir)


# --------------------------------------------------------------------------------------------------
# The two-way estimator (vectorised over leading axes: one call runs a whole simulation)


# --------------------------------------------------------------------------------------------------
# Variance components and power


# --------------------------------------------------------------------------------------------------
# Comparisons on prompt-level data


def _matrix(pv: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(values, sampling variances) as units (profile) x prompts, NaN where a unit lacks a prompt. Seeds /
    repeated results of a unit are averaged, so a cell's sampling variance is their mean over their count."""
    sv = pv["sample_var"] if "sample_var" in pv else pd.Series(math.nan, index=pv.index)
    agg = (
        pv.assign(_sv=sv.astype(float))
        .groupby(["profile", "prompt"], sort=True)
        .agg(value=("value", "mean"), sv=("_sv", "mean"), n=("value", "size"))
    )
    return agg["value"].unstack("prompt"), (agg["sv"] / agg["n"]).unstack("prompt")


def _paired(g: pd.DataFrame, r: pd.DataFrame | None) -> dict[str, Any]:
    """Both sides as unit x prompt matrices over the union of their prompts (NaN: a missing cell; the
    estimator uses a prompt wherever each side has at least one cell): G, R, their sampling variances
    SG, SR, and `seen` = the prompts either side has."""
    vg, sg = _matrix(g)
    if r is None:
        return {"G": vg.to_numpy(float), "R": None, "SG": sg.to_numpy(float), "SR": None, "seen": vg.shape[1]}
    vr, sr = _matrix(r)
    cols = vg.columns.union(vr.columns)
    return {
        "G": vg.reindex(columns=cols).to_numpy(float),
        "R": vr.reindex(columns=cols).to_numpy(float),
        "SG": sg.reindex(columns=cols).to_numpy(float),
        "SR": sr.reindex(columns=cols).to_numpy(float),
        "seen": len(cols),
    }


# Columns every comparison row gets (NaN / False where there are no prompt-level data): the design, the
# cells behind it (nothing is dropped for one unit's missing cell), and `constant` (no cell
# varies: no SE, no MDE, nothing can be estimated).
DESIGN_DEFAULTS: dict[str, Any] = {
    "n_models": math.nan,
    "n_prompts": math.nan,
    "n_prompts_used": math.nan,
    "n_prompts_seen": math.nan,
    "n_cells": math.nan,
    "cells_missing": math.nan,
    "n_samples": math.nan,
    "se": math.nan,
    "df": math.nan,
    "mde": math.nan,
    "powered": False,
    "constant": False,
}


def _design_cols(units: int, res: dict, seen: int, samples: float, powered: bool, m: float, conf: float) -> dict:
    """The design columns of one comparison from two_way's result `res` on `units` units (both sides)."""
    used, cells = int(res["n_prompts"]), int(res["n_cells"])
    se = float(res["se"])
    return {
        "n_prompts": used,
        "n_prompts_used": used,
        "n_prompts_seen": int(seen),
        "n_cells": cells,
        "cells_missing": int(units * used - cells),
        "n_samples": samples,
        "se": se,
        "df": float(res["df"]),
        "mde": m if se > 0 else math.nan,
        "powered": bool(powered) and se > 0,
        "constant": bool(se == 0),
        "method": METHOD,
        "conf": conf,
    }


def _add_defaults(frame: pd.DataFrame, method: str, min_models: int, min_prompts: int) -> pd.DataFrame:
    out = frame.copy()
    for c, v in DESIGN_DEFAULTS.items():
        out[c] = v
    out["method"] = method
    out["powered"], out["constant"] = out["powered"].astype(bool), out["constant"].astype(bool)
    out["min_models"], out["min_prompts"] = int(min_models), int(min_prompts)
    return out


def _units(M: np.ndarray) -> int:
    return int(np.isfinite(M).any(-1).sum())


def pooled_components(pv: pd.DataFrame, reference: str = "vanilla") -> dict[tuple[str, str], dict[str, float]]:
    """Variance components by level (design.variance_components) per (benchmark, metric), averaged over
    the groups with >= 2 units (mitigation none)."""
    out: dict[tuple[str, str], list[dict[str, float]]] = {}
    sub = pv[pv["mitigation"] == "none"]
    for (_model, bench, metric), g in sub.groupby(["model", "benchmark", "metric"], sort=True, dropna=False):
        ref = g[g["baseline"] == reference]
        for (_b, _stage), gg in g[g["baseline"] != reference].groupby(["baseline", "stage"], dropna=False):
            m = _paired(gg, ref if len(ref) else None)
            vc = variance_components(m["G"], m["R"], m["SG"], m["SR"])
            if np.isfinite(vc["model"]):
                out.setdefault((bench, metric), []).append(vc)
    return {k: {c: float(np.mean([v[c] for v in vs])) for c in vs[0]} for k, vs in out.items()}


def _compare_one(g: pd.DataFrame, ref: pd.DataFrame, conf: float, alpha: float, pooled: dict | None) -> dict | None:
    """The two-way comparison of group g against the reference on every available cell; None when fewer
    than two prompts have cells on both sides."""
    m = _paired(g, ref)
    G, R = m["G"], m["R"]
    res = two_way(G, R, conf)
    if not int(res["n_prompts"]) >= 2:
        return None
    U = _units(G)
    vc = variance_components(G, R, m["SG"], m["SR"]) if U >= 2 else (pooled or {"model": math.nan})
    ref_units = _units(R)
    m_ = mde(vc, U, int(res["n_prompts"]), ref_models=ref_units, alpha=alpha)
    return {"res": res, "mde": m_, "units": U, "ref_units": ref_units, "seen": m["seen"]}


def compare_prompt_level(
    cmp: pd.DataFrame,
    pv: pd.DataFrame,
    reference: str = "vanilla",
    conf: float = 0.95,
    min_models: int = MIN_MODELS,
    min_prompts: int = MIN_PROMPTS,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """stats.compare_baselines' frame with its intervals and p-values replaced by the two-way ones
    where prompt-level data exist: ci_low / ci_high of the group mean, diff_low / diff_high of the
    difference to the reference, p_value of that difference; plus the design (n_models, n_prompts =
    n_prompts_used: prompts with cells on both sides, n_prompts_seen, n_cells, cells_missing of the used
    prompts, n_samples), se, df, mde (at 80% power; NaN when constant), powered (the design meets
    min_models for a sampled group and min_prompts), constant and method. Every available (unit, prompt)
    cell is used. Rows without prompt-level data keep their model-level test and are marked not powered."""
    out = _add_defaults(cmp, "model-level t (no prompt-level data)", min_models, min_prompts)
    out["diff_low"], out["diff_high"] = math.nan, math.nan
    if out.empty or pv is None or pv.empty:
        return out
    pooled = pooled_components(pv, reference)
    for i, row in out.iterrows():
        sel = pv[
            (pv["model"] == row["model"])
            & (pv["benchmark"] == row["benchmark"])
            & (pv["metric"] == row["metric"])
            & (pv["mitigation"] == row.get("mitigation", "none"))
        ]
        g = sel[(sel["baseline"] == row["baseline"]) & (sel["stage"] == row["stage"])]
        if g.empty:
            continue
        ref = sel[sel["baseline"] == reference]
        samples = float(g["samples"].median())
        alone = _paired(g, None)
        one = two_way(alone["G"], None, conf)
        if int(one["n_prompts"]) >= 2:
            out.at[i, "ci_low"], out.at[i, "ci_high"] = float(one["ci_low"]), float(one["ci_high"])
        if row["baseline"] == reference or ref.empty:
            cols = _design_cols(_units(alone["G"]), one, alone["seen"], samples, False, math.nan, conf)
            for k in ("n_prompts", "n_prompts_used", "n_prompts_seen", "n_cells", "cells_missing", "n_samples"):
                out.at[i, k] = cols[k]
            out.at[i, "n_models"], out.at[i, "method"] = _units(alone["G"]), METHOD
            out.at[i, "constant"] = cols["constant"] and int(one["n_prompts"]) >= 2
            continue
        c = _compare_one(g, ref, conf, alpha, pooled.get((row["benchmark"], row["metric"])))
        if c is None:
            continue
        res = c["res"]
        powered = c["units"] >= min_models and int(res["n_prompts"]) >= min_prompts
        out.at[i, "diff_vs_ref"] = float(res["estimate"])
        out.at[i, "diff_low"], out.at[i, "diff_high"] = float(res["ci_low"]), float(res["ci_high"])
        out.at[i, "p_value"] = float(res["p"]) if np.isfinite(res["p"]) else None
        out.at[i, "test"] = "two-way t (models x prompts)"
        out.at[i, "n_models"] = c["units"]
        units = c["units"] + c["ref_units"]
        for k, v in _design_cols(units, res, c["seen"], samples, powered, c["mde"], conf).items():
            out.at[i, k] = v
    return out


def _deltas(t: pd.DataFrame, r: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-unit, per-prompt deltas (mitigated - unmitigated) over the units both have and the union of
    their prompts (NaN where either cell is missing), their sampling variances, and the prompts seen."""
    (vt, st), (vr, sr) = _matrix(t), _matrix(r)
    units = [u for u in vt.index if u in vr.index]
    cols = vt.columns.union(vr.columns)
    D = vt.reindex(index=units, columns=cols) - vr.reindex(index=units, columns=cols)
    S = st.reindex(index=units, columns=cols) + sr.reindex(index=units, columns=cols)
    return D.to_numpy(float), S.to_numpy(float), len(cols)


def mitigation_prompt_level(
    mit: pd.DataFrame,
    pv: pd.DataFrame,
    reference: str = "none",
    conf: float = 0.95,
    min_models: int = MIN_MODELS,
    min_prompts: int = MIN_PROMPTS,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """stats.mitigation_effects' frame with two-way intervals of the mean delta (mitigated - unmitigated,
    paired by unit AND prompt, on every (unit, prompt) cell both conditions have) where prompt-level data
    exist; design columns as compare_prompt_level. A vanilla group is one fixed model: only min_prompts
    applies to it."""
    out = _add_defaults(mit, "model-level paired t (no prompt-level data)", min_models, min_prompts)
    if out.empty or pv is None or pv.empty:
        return out
    for i, row in out.iterrows():
        sel = pv[
            (pv["model"] == row["model"])
            & (pv["benchmark"] == row["benchmark"])
            & (pv["metric"] == row["metric"])
            & (pv["baseline"] == row["baseline"])
            & (pv["stage"] == row["stage"])
        ]
        t = sel[(sel["mitigation"] == row["mitigation"]) & (sel["disregard"] == row.get("disregard", ""))]
        r = sel[sel["mitigation"] == reference]
        if t.empty or r.empty:
            continue
        D, S, seen = _deltas(t, r)
        res = two_way(D, None, conf) if D.shape[0] else None
        if res is None or int(res["n_prompts"]) < 2:
            continue
        U = _units(D)
        if U >= 2:
            vc = variance_components(D, None, S)
        else:
            d = D[np.isfinite(D)]
            vc = {"model": 0.0, "prompt": float(d.var(ddof=1)), "interaction": 0.0, "sample": 0.0}
        m = mde(vc, U, int(res["n_prompts"]), ref_models=0, alpha=alpha)
        fixed = str(row["baseline"]) == "vanilla"
        powered = (fixed or U >= min_models) and int(res["n_prompts"]) >= min_prompts
        out.at[i, "mean_delta" if "mean_delta" in out else "delta_mean"] = float(res["estimate"])
        out.at[i, "ci_low"], out.at[i, "ci_high"] = float(res["ci_low"]), float(res["ci_high"])
        out.at[i, "p_value"] = float(res["p"]) if np.isfinite(res["p"]) else None
        out.at[i, "test"] = "two-way paired t (models x prompts)"
        out.at[i, "n_models"] = U
        for k, v in _design_cols(U, res, seen, float(t["samples"].median()), powered, m, conf).items():
            out.at[i, k] = v
    return out


# --------------------------------------------------------------------------------------------------
# Power of a planned design


# --------------------------------------------------------------------------------------------------
# Mixed-model variant of the value regressions (analysis.regression_mixed)


def value_regressions_mixed(
    df: pd.DataFrame, pv: pd.DataFrame, *, baseline: str = "vim", alpha: float = 0.05
) -> pd.DataFrame:
    """Prompt-level value -> harm regressions: per (model, stage, benchmark, metric), a linear mixed model
    (statsmodels MixedLM, REML) of the per-prompt value on the 10 intensities with a random intercept
    per profile; prompt effects are removed first by centring each prompt's values (prompts are crossed
    with profiles, so their fixed effects are orthogonal to the profile-level intensities). t tests with
    profiles - 11 degrees of freedom (the between-profile df of the intensities),
    Benjamini-Hochberg over all non-intercept terms. Columns as stats.REGRESSION_COLUMNS' core."""
    # size: one statistical procedure end to end (fit per group, then BH over the family)
    import warnings

    import statsmodels.api as sm
    from statsmodels.stats.multitest import multipletests

    cols = [
        "model",
        "stage",
        "benchmark",
        "category",
        "metric",
        "term",
        "coef",
        "se",
        "p",
        "p_adj",
        "significant",
        "ci_low",
        "ci_high",
        "n",
        "n_prompts",
        "method",
    ]
    sub = pv[(pv["baseline"] == baseline) & (pv["mitigation"] == "none")]
    if sub.empty:
        return pd.DataFrame(columns=cols)
    inten = df.drop_duplicates("profile").set_index("profile")[list(VALUES)]
    rows = []
    for (model, stage, bench, metric), g in sub.groupby(["model", "stage", "benchmark", "metric"], sort=True):
        g = g.groupby(["profile", "prompt"], as_index=False)["value"].mean()
        g = g[g["profile"].isin(inten.index)]
        n = g["profile"].nunique()
        if n < len(VALUES) + 2:
            continue
        y = (g["value"] - g.groupby("prompt")["value"].transform("mean")).to_numpy(dtype=float)
        X = sm.add_constant(inten.loc[g["profile"]].to_numpy(dtype=float), has_constant="add")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                res = sm.MixedLM(y, X, groups=g["profile"].to_numpy()).fit(reml=True)
            except (np.linalg.LinAlgError, ValueError) as exc:
                log.warning("mixed model for %s/%s not fitted: %s", bench, metric, exc)
                continue
        # the intensities vary between profiles only, so a coefficient has n - 11 degrees of
        # freedom, not the normal reference of res.pvalues (false hits 32% at 14 profiles under the null)
        dof = n - (len(VALUES) + 1)
        tq = sps.t.ppf(1 - alpha / 2, dof)
        ci = np.column_stack([res.fe_params - tq * res.bse_fe, res.fe_params + tq * res.bse_fe])
        pvals = 2 * sps.t.sf(np.abs(np.asarray(res.fe_params) / np.asarray(res.bse_fe)), dof)
        for j, term in enumerate(["Intercept", *VALUES]):
            rows.append(
                {
                    "model": model,
                    "stage": stage,
                    "benchmark": bench,
                    "category": "overall",
                    "metric": metric,
                    "term": term,
                    "coef": float(res.fe_params[j]),
                    "se": float(res.bse_fe[j]),
                    "p": float(pvals[j]),
                    "p_adj": math.nan,
                    "significant": False,
                    "ci_low": float(ci[j, 0]),
                    "ci_high": float(ci[j, 1]),
                    "n": n,
                    "n_prompts": int(g["prompt"].nunique()),
                    "method": f"MixedLM, random intercept per profile, prompt-centred; t({dof}) tests",
                }
            )
    out = pd.DataFrame(rows, columns=cols)
    fam = (out["term"] != "Intercept") & np.isfinite(out["p"].to_numpy(dtype=float)) if len(out) else None
    if fam is not None and fam.any():
        _, p_adj, _, _ = multipletests(out.loc[fam, "p"].to_numpy(dtype=float), alpha=alpha, method="fdr_bh")
        out.loc[fam, "p_adj"] = p_adj
        out.loc[fam, "significant"] = p_adj < alpha
    return out


def power_table(
    pv: pd.DataFrame,
    *,
    models: int,
    prompts: int,
    samples: int | None = None,
    target: float | None = None,
    reference: str = "vanilla",
    alpha: float = 0.05,
    power: float = POWER,
) -> pd.DataFrame:
    """Per (benchmark, metric): the pilot's variance components by level (pooled_components: model,
    prompt x condition, model x prompt, sampling at the pilot's samples), the MDE of a planned comparison
    of `models` profiles against the vanilla model on `prompts` prompts with `samples` samples each (only
    the sampling part shrinks with samples; `samples_rescaled` says whether the metric's sampling variance
    is known, i.e. it is a mean over samples), and (with `target`) the prompts needed to detect it."""
    rows = []
    for (bench, metric), vc in pooled_components(pv, reference).items():
        pilot_samples = int(pv[(pv["benchmark"] == bench) & (pv["metric"] == metric)]["samples"].median())
        planned = samples or pilot_samples
        se, df = design_se(vc, models, prompts, planned, pilot_samples, 1)
        row = {
            "benchmark": bench,
            "metric": metric,
            "var_model": vc["model"],
            "var_prompt": vc["prompt"],
            "var_interaction": vc["interaction"],
            "var_sample": vc["sample"],
            "pilot_samples": pilot_samples,
            "models": models,
            "prompts": prompts,
            "samples": planned,
            "samples_rescaled": bool(vc["sample"] > 0 or vc["ref_sample"] > 0),
            "se": se,
            "df": df,
            "mde": mde(vc, models, prompts, planned, pilot_samples, 1, alpha, power),
        }
        row["constant"] = not se > 0
        if target is not None:
            row["target"] = target
            row["prompts_needed"] = prompts_needed(vc, target, models, planned, pilot_samples, 1, alpha, power)
        rows.append(row)
    return pd.DataFrame(rows)
