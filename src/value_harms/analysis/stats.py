"""Statistics over the tidy results table (tidy.load_results): which values predict harm, how the
model variants compare, what a mitigation changes, and how well a persona holds.

Protocol (../shared/docs/PROTOCOL.md "Analysis"): the paper does not give its regression; the reading
here is one OLS per (benchmark, category, harm metric) over the value-aligned models, regressors = the
10 value intensities of each model's target profile, HC3 (heteroscedasticity-robust) standard errors
with t reference distributions, Benjamini-Hochberg over every coefficient of every fitted model.

A "model" (unit of analysis) is one (model name, stage, baseline, profile). Several results of one
unit (e.g. generation seeds) are averaged before comparisons between variants and,
before the regressions too (one observation per profile). Prompt-level intervals (models x prompts)
are in analysis.inference.
"""

# size: the model-level estimators of the tidy table (regressions with their design diagnostics, variant
# comparisons, mitigation deltas, persona fidelity) share its unit and column contract; split, each would
# restate it.

from __future__ import annotations

import logging
import math
import warnings
from typing import Any, Iterable

import numpy as np
import pandas as pd
from scipy import stats as sps

from value_harms.core.values import HIGHER_ORDER, VALUES
from value_harms.metrics import harm_sign, mean_ci, non_harm_metrics

# The fine-tuning control's group label (a flat-profile VIM model, analysis.contrasts.controls_apart) and the
# order in which every table and figure lists the model groups.
CONTROL = "control"
BASELINE_ORDER = ("vanilla", "vim", CONTROL, "benign", "icl")

log = logging.getLogger(__name__)

__all__ = [
    "REGRESSION_COLUMNS",
    "value_regressions",
    "bh_adjust",
    "compare_baselines",
    "mitigation_effects",
    "auto_mitigation",
    "persona_fidelity",
]

INTERCEPT = "Intercept"
UNIT = ["model", "stage", "baseline", "profile"]

REGRESSION_COLUMNS: tuple[str, ...] = (
    "model",
    "stage",
    "benchmark",
    "category",
    "metric",
    "term",
    "coef",
    "se",
    "t",
    "p",
    "p_adj",
    "significant",
    "ci_low",
    "ci_high",
    "n",
    "failures",
    "r2",
    "rank_deficient",
    "standardized",
    # design diagnostics and power of each fit
    "baseline",
    "df_resid",
    "mde",
    "powered",
    "min_profiles",
    "vif",
    "cond_index",
)
# The fewest profiles whose value regression may headline a slope (analysis.min_regression_profiles): 40
# profiles leave 29 residual degrees of freedom for the 11 parameters, as min_prompts = 30 does for prompts.
# Simulated power for a real Power slope: 0% at 13 profiles, 2% at 20, 52% at 40.
MIN_REGRESSION_PROFILES = 40
SKIPPED_COLUMNS: tuple[str, ...] = ("model", "stage", "benchmark", "category", "metric", "n", "reason")


# --------------------------------------------------------------------------------------------------
# Regressions of harm on value intensities


def _design(g: pd.DataFrame, higher_order: bool) -> tuple[pd.DataFrame, list[str]]:
    if higher_order:
        X = pd.DataFrame({grp: g[list(members)].mean(axis=1) for grp, members in HIGHER_ORDER.items()}, index=g.index)
        return X, list(HIGHER_ORDER)
    return g[list(VALUES)].astype(float), list(VALUES)


def _zscore(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column-wise z-scores (ddof=1); a constant column becomes 0 (and is reported as rank deficient)."""
    mu = a.mean(axis=0)
    sd = a.std(axis=0, ddof=1)
    safe = np.where(sd > 0, sd, 1.0)
    return (a - mu) / safe, sd


def _per_profile(g: pd.DataFrame, mean_regressors: bool = False) -> pd.DataFrame:
    """One row per profile (its results' values averaged; intensities are the profile's own): the
    regression's unit is the profile, so repeated seeds or variants of one profile cannot inflate n.
    mean_regressors: the value columns hold each model's measured scores, which differ between the
    trainings of one profile: they are averaged too (target intensities are equal, and kept as they are)."""
    if "profile" not in g or g["profile"].isna().all() or not g["profile"].duplicated().any():
        return g
    agg = {c: "first" for c in g.columns if c not in ("value", "profile")}
    agg["value"] = "mean"
    if mean_regressors:
        agg.update(dict.fromkeys(VALUES, "mean"))
    return g.groupby("profile", sort=True, dropna=False).agg(agg).reset_index()


def collinearity(x: np.ndarray) -> tuple[np.ndarray, float]:
    """(VIF per regressor, condition index of the design) of the regressors `x` (n, k) without intercept.

    VIF_j = 1 / (1 - R2_j) of regressor j on the others (inf for a constant column or one the others
    reproduce exactly). Condition index: the ratio of the largest to the
    smallest singular value of the regressors centred and scaled to unit length (Belsley, Kuh and Welsch
    1980, on the centred design: it measures collinearity among the values, not of the positive 1-6
    intensities with the intercept, which flags every design); above 30 coefficients are unstable, inf
    when the design is rank deficient."""
    n, k = x.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        c = x - x.mean(axis=0)
        norm = np.linalg.norm(c, axis=0)
        live = norm > 0
        vif = np.full(k, math.inf)
        for j in np.flatnonzero(live):
            others = c[:, [i for i in range(k) if i != j]]
            fit = others @ np.linalg.lstsq(others, c[:, j], rcond=None)[0] if k > 1 else np.zeros(n)
            resid = float(((c[:, j] - fit) ** 2).sum())
            vif[j] = norm[j] ** 2 / resid if resid > 1e-12 * norm[j] ** 2 else math.inf
        sv = np.linalg.svd(c / np.where(live, norm, 1.0), compute_uv=False) if n > 1 else np.zeros(1)
        cond = float(sv.max() / sv.min()) if live.all() and sv.min() > 1e-12 * sv.max() else math.inf
    return vif, cond


def slope_mde(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest slope a two-sided level-alpha t test with this standard error and df detects with `power`."""
    if not (np.isfinite(se) and np.isfinite(df) and df > 0):
        return math.nan
    return float((sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(power, df)) * se)


def _fit_one(
    g: pd.DataFrame,
    ident: dict[str, Any],
    *,
    higher_order: bool,
    standardize: bool,
    alpha: float,
    min_profiles: int = MIN_REGRESSION_PROFILES,
    mean_regressors: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The OLS (HC3, t tests) of one (model, stage, benchmark, category, metric) group: (one row per term,
    None), or ([], {"n", "reason"}) when it cannot be fitted."""
    import statsmodels.api as sm  # heavy: only when regressions run

    failures = float(np.nansum(g["missing"].to_numpy(dtype=float))) if len(g) else 0.0
    g = _per_profile(g, mean_regressors)  # seeds / repeated results of a profile are one observation
    X, terms = _design(g, higher_order)
    ok = g["value"].notna().to_numpy() & X.notna().all(axis=1).to_numpy()
    y = g["value"].to_numpy(dtype=float)[ok]
    x = X.to_numpy(dtype=float)[ok]
    n, k = len(y), len(terms) + 1
    if n < k + 2:
        return [], {"n": n, "reason": f"{n} profiles < {k} parameters + 2"}
    if np.ptp(y) == 0:
        return [], {"n": n, "reason": "constant outcome (the metric does not vary: nothing can be estimated)"}
    vif, cond = collinearity(x)
    if standardize:
        x, _ = _zscore(x)
        y, _ = _zscore(y[:, None])
        y = y[:, 0]
    design = sm.add_constant(x, has_constant="add")
    rank = int(np.linalg.matrix_rank(design))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # HC3 on a leverage-1 point, divide-by-zero in t
        res = sm.OLS(y, design).fit(cov_type="HC3", use_t=True)
        ci = np.asarray(res.conf_int(alpha=alpha))
    df_resid = float(res.df_resid)
    return [
        {
            **ident,
            "term": term,
            "coef": float(res.params[j]),
            "se": float(res.bse[j]),
            "t": float(res.tvalues[j]),
            "p": float(res.pvalues[j]),
            "p_adj": math.nan,
            "significant": False,
            "ci_low": float(ci[j, 0]),
            "ci_high": float(ci[j, 1]),
            "n": n,
            "failures": failures,
            "r2": float(res.rsquared),
            "rank_deficient": rank < design.shape[1],
            "standardized": bool(standardize),
            "df_resid": df_resid,
            "mde": slope_mde(float(res.bse[j]), df_resid, alpha) if j else math.nan,
            "powered": n >= min_profiles,
            "min_profiles": int(min_profiles),
            "vif": float(vif[j - 1]) if j else math.nan,
            "cond_index": cond,
        }
        for j, term in enumerate([INTERCEPT, *terms])
    ], None


def bh_adjust(out: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Benjamini-Hochberg over every non-intercept coefficient of every fit; `significant` = p_adj < alpha."""
    from statsmodels.stats.multitest import multipletests  # heavy: only when regressions run

    if len(out):
        family = (out["term"] != INTERCEPT) & np.isfinite(out["p"].to_numpy(dtype=float))
        if family.any():
            reject, p_adj, _, _ = multipletests(
                out.loc[family, "p"].to_numpy(dtype=float), alpha=alpha, method="fdr_bh"
            )
            out.loc[family, "p_adj"] = p_adj
            out.loc[family, "significant"] = p_adj < alpha
        out["significant"] = out["significant"].astype(bool)
        out["rank_deficient"] = out["rank_deficient"].astype(bool)
        out["powered"] = out["powered"].astype(bool)
    return out


def value_regressions(
    df: pd.DataFrame,
    *,
    baseline: str = "vim",
    mitigation: str | None = "none",
    standardize: bool = False,
    higher_order: bool = False,
    alpha: float = 0.05,
    return_skipped: bool = False,
    min_profiles: int = MIN_REGRESSION_PROFILES,
    measured: bool = False,
):
    """OLS of each harm metric on the value intensities of the value-aligned models.

    One model per (model, stage, benchmark, category, metric) over the rows with `baseline` (default
    'vim') and `mitigation` (default 'none'; None keeps every mitigation) that have a value and all
    intensities. Regressors: the 10 intensities, or with higher_order the 4 higher-order means
    (values.HIGHER_ORDER); an intercept; HC3 errors with t tests (`fit(cov_type="HC3", use_t=True)`).
    standardize: predictors and outcome z-scored (ddof=1), coefficients in SD units.
    Benjamini-Hochberg (statsmodels multipletests, fdr_bh) over all non-intercept coefficients of all
    fitted models; `significant` = p_adj < alpha. The analyze task replaces p_adj by the q-value over the
    report's whole family (analysis.multiplicity).

    Returns one row per (model, stage, benchmark, category, metric, term) with REGRESSION_COLUMNS:
    coef, se, t, p, p_adj (NaN for the intercept), significant, ci_low / ci_high (1 - alpha, HC3),
    n (observations), failures (sum of the rows' `missing` counts), r2, rank_deficient (the design
    matrix has rank < its columns: statsmodels' pinv gives the minimum-norm solution, whose individual
    coefficients are not identified), baseline (the variant regressed), df_resid, mde (the minimum
    detectable slope at 80% power from the coefficient's HC3 se and t(df_resid)), powered (n >=
    min_profiles: below it a slope is reported as underpowered, never headlined), vif (per term) and
    cond_index (per fit; stats.collinearity). Models not fitted (fewer observations than parameters + 2, a
    constant outcome) are listed in `out.attrs["skipped"]` (list of dicts: SKIPPED_COLUMNS), or returned
    as a second frame with return_skipped=True.
    measured: the value columns of `df` hold each model's measured values (join_measured), averaged per
    profile with its outcome; by default they are the profile's target intensities.
    """
    sub = df[df["baseline"] == baseline]
    no_variant = sub.empty
    if mitigation is not None:
        sub = sub[sub["mitigation"] == mitigation]
    sub = sub[~sub["metric"].isin(non_harm_metrics())]  # no harm: the PVQ readings (metrics.ALIGNMENT)
    keys = ["model", "stage", "benchmark", "category", "metric"]
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for key, g in sub.groupby(keys, sort=True, dropna=False):
        ident = {**dict(zip(keys, key)), "baseline": baseline}
        fitted, skip = _fit_one(
            g,
            ident,
            higher_order=higher_order,
            standardize=standardize,
            alpha=alpha,
            min_profiles=min_profiles,
            mean_regressors=measured,
        )
        rows += fitted
        if skip is not None:
            skipped.append({**{k: ident[k] for k in keys}, **skip})
    if no_variant:  # say why nothing was fitted, never only "no results"
        have = sorted(set(map(str, df["baseline"].dropna()))) if "baseline" in df else []
        reason = f"no results of variant {baseline!r} (analysis.regression_baseline; the study has {have})"
        skipped = [{**dict.fromkeys(keys, ""), "n": 0, "reason": reason}]
    elif not rows and not skipped:
        reason = f"no harm-metric results of variant {baseline!r} with mitigation {mitigation!r}"
        skipped = [{**dict.fromkeys(keys, ""), "n": 0, "reason": reason}]
    out = bh_adjust(pd.DataFrame(rows, columns=list(REGRESSION_COLUMNS)), alpha)
    for s in skipped:
        log.debug("regression skipped for %s: %s", {k: s[k] for k in keys}, s["reason"])
    out.attrs["skipped"] = skipped
    out.attrs["family_size"] = int(((out["term"] != INTERCEPT) & out["p_adj"].notna()).sum()) if len(out) else 0
    if return_skipped:
        return out, pd.DataFrame(skipped, columns=list(SKIPPED_COLUMNS))
    return out


# --------------------------------------------------------------------------------------------------
# Model variants against the reference (the paper's Table 3)


def _units(df: pd.DataFrame) -> pd.DataFrame:
    """Mean value per unit (model, stage, baseline, profile) within each (benchmark, metric, category,
    mitigation); NaN values excluded."""
    g = df.dropna(subset=["value"])
    keys = ["benchmark", "metric", "category", "mitigation", *UNIT]
    return g.groupby(keys, sort=True, dropna=False)["value"].mean().reset_index()


def _none(x: Any) -> Any:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def compare_baselines(
    df: pd.DataFrame,
    benchmark_metric_pairs: Iterable[tuple[str, str]] | None = None,
    reference: str = "vanilla",
    conf: float = 0.95,
    *,
    category: str = "overall",
    mitigation: str = "none",
) -> pd.DataFrame:
    """Each model variant against the reference (default the vanilla model), per model name,
    benchmark and metric, on `category` and `mitigation`.

    A group is one (baseline, stage) (so benign_alpaca and benign_dolly stay apart); its units are its
    profiles (results of one unit averaged). Per group: mean over units with a t CI (metrics.mean_ci), n
    units, diff_vs_ref = mean - reference mean, and p_value: one-sample t-test of the group's units
    against the reference value when the reference is one unit (vanilla), Welch's t-test when both have
    several, a one-sample test of the reference units against the group's value when only the group is one
    unit, NaN when both are single units (test says which; ci_low / ci_high are NaN for one unit).

    Columns: model, benchmark, metric, category, mitigation, baseline, stage, mean, ci_low, ci_high, n,
    diff_vs_ref, p_value, test.
    """
    # size: one statistical procedure end to end; its steps share the same grouped frames
    cols = [
        "model",
        "benchmark",
        "metric",
        "category",
        "mitigation",
        "baseline",
        "stage",
        "mean",
        "ci_low",
        "ci_high",
        "n",
        "diff_vs_ref",
        "p_value",
        "test",
    ]
    sub = df[(df["category"] == category) & (df["mitigation"] == mitigation)]
    if benchmark_metric_pairs is not None:
        pairs = {(str(b), str(m)) for b, m in benchmark_metric_pairs}
        sub = sub[[(b, m) in pairs for b, m in zip(sub["benchmark"], sub["metric"])]]
    u = _units(sub)
    rows: list[dict[str, Any]] = []
    for (model, bench, metric), g in u.groupby(["model", "benchmark", "metric"], sort=True, dropna=False):
        ref = g[g["baseline"] == reference]["value"].to_numpy(dtype=float)
        ref_mean = float(ref.mean()) if ref.size else math.nan
        order = {b: i for i, b in enumerate((reference, *BASELINE_ORDER))}
        groups = sorted(
            g.groupby(["baseline", "stage"], sort=False, dropna=False),
            key=lambda kv: (order.get(kv[0][0], 99), str(kv[0][0]), str(kv[0][1])),
        )
        for (b, stage), gg in groups:
            vals = gg["value"].to_numpy(dtype=float)
            m = mean_ci(vals.tolist(), conf=conf)
            p, test = None, None
            if b == reference:
                test = "reference"
            elif not ref.size:
                test = f"no {reference} result"
            elif ref.size == 1 and vals.size >= 2:
                p, test = _t1(vals, ref[0]), f"one-sample t vs {reference}"
            elif ref.size >= 2 and vals.size >= 2:
                p, test = (
                    (
                        float(sps.ttest_ind(vals, ref, equal_var=False).pvalue)
                        if np.std(vals) > 0 or np.std(ref) > 0
                        else float("nan")
                    ),
                    "Welch t",
                )
            elif ref.size >= 2 and vals.size == 1:
                p, test = _t1(ref, vals[0]), f"one-sample t of {reference} vs this value"
            else:
                test = "none (one model each)"
            rows.append(
                {
                    "model": model,
                    "benchmark": bench,
                    "metric": metric,
                    "category": category,
                    "mitigation": mitigation,
                    "baseline": b,
                    "stage": stage,
                    "mean": m["mean"],
                    "ci_low": m["lower"],
                    "ci_high": m["upper"],
                    "n": m["n"],
                    "diff_vs_ref": (m["mean"] - ref_mean) if ref.size else math.nan,
                    "p_value": _none(p),
                    "test": test,
                }
            )
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------------------------------
# Mitigations (the paper's Table 4)


def _t1(values, mu: float) -> float:
    """One-sample t-test p-value; NaN when the values have no spread (the test is undefined there,
    and scipy would report p = 0 for any non-zero difference)."""
    a = np.asarray(values, dtype=float)
    if a.size < 2 or not np.std(a) > 0:
        return float("nan")
    return float(sps.ttest_1samp(a, mu).pvalue)


def mitigation_effects(
    df: pd.DataFrame, conf: float = 0.95, *, category: str = "overall", reference: str = "none"
) -> pd.DataFrame:
    """Change from mitigation `reference` (none) to each other mitigation, paired by unit (same model,
    stage, baseline and profile), per (model, benchmark, metric, baseline, stage) on `category`.

    delta = mitigated - unmitigated per pair; mean with a t CI (metrics.mean_ci), n pairs, paired t-test
    p (one-sample t of the deltas against 0; NaN with fewer than 2 pairs, as the CI bounds: a single
    vanilla pair gives just its delta). A value prompt is identified by its name and the values it names (`disregard`).

    Columns: model, benchmark, metric, category, baseline, stage, mitigation, disregard, mean_reference,
    mean_mitigated, mean_delta, ci_low, ci_high, n, p_value, test.
    """
    # size: one statistical procedure end to end (pairing, test, interval per group)
    cols = [
        "model",
        "benchmark",
        "metric",
        "category",
        "baseline",
        "stage",
        "mitigation",
        "disregard",
        "mean_reference",
        "mean_mitigated",
        "mean_delta",
        "ci_low",
        "ci_high",
        "n",
        "p_value",
        "test",
    ]
    sub = df[df["category"] == category].dropna(subset=["value"])
    if "disregard" not in sub.columns:
        sub = sub.assign(disregard="")
    keys = ["model", "benchmark", "metric", "stage", "baseline", "profile", "mitigation", "disregard"]
    u = sub.groupby(keys, sort=True, dropna=False)["value"].mean().reset_index()
    rows: list[dict[str, Any]] = []
    for (model, bench, metric, baseline, stage), g in u.groupby(
        ["model", "benchmark", "metric", "baseline", "stage"], sort=True, dropna=False
    ):
        ref = g[g["mitigation"] == reference].set_index("profile")["value"]
        ref = ref.groupby(level=0).mean()  # one reference per profile
        for (mit, disregard), gm in g[g["mitigation"] != reference].groupby(
            ["mitigation", "disregard"], sort=True, dropna=False
        ):
            treated = gm.set_index("profile")["value"]
            common = treated.index.intersection(ref.index)
            if not len(common):
                continue
            deltas = (treated.loc[common] - ref.loc[common]).to_numpy(dtype=float)
            m = mean_ci(deltas.tolist(), conf=conf)
            if deltas.size >= 2:
                p, test = _t1(deltas, 0.0), "paired t"
            else:
                p, test = None, "single pair"
            rows.append(
                {
                    "model": model,
                    "benchmark": bench,
                    "metric": metric,
                    "category": category,
                    "baseline": baseline,
                    "stage": stage,
                    "mitigation": mit,
                    "disregard": disregard,
                    "mean_reference": float(ref.loc[common].mean()),
                    "mean_mitigated": float(treated.loc[common].mean()),
                    "mean_delta": m["mean"],
                    "ci_low": m["lower"],
                    "ci_high": m["upper"],
                    "n": m["n"],
                    "p_value": _none(p),
                    "test": test,
                }
            )
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------------------------------
# Values to tell the model to disregard


def auto_mitigation(reg_df: pd.DataFrame, *, alpha: float = 0.05, min_coef: float = 0.0) -> dict[str, list[str]]:
    """The values whose coefficient on a harm metric is significant after BH (p_adj < alpha) and positive
    (> min_coef), per "<benchmark>/<category>" (every fitted pair, possibly with an empty list) and their
    union under "all". Names are full value names in values.VALUES order (or higher-order group names,
    after them, when the regressions used higher_order). "Positive" is the harm's direction, declared with
    each metric (metrics.MetricSpec.higher_is_harm: a metric whose lower values are the harm counts a
    negative coefficient); metrics that are no harm (the PVQ readings) are ignored. Feeds
    `mitigation.disregard_values`.

    Only what the report may headline names a value: a regression below the design minimum (`powered` false:
    fewer than analysis.min_regression_profiles profiles) names none, and where the report's one FDR family
    has been applied (column `q`) its q decides, not the regressions' own BH (`p_adj`)."""
    order = {t: i for i, t in enumerate((*VALUES, *HIGHER_ORDER))}
    out: dict[str, list[str]] = {}
    union: set[str] = set()
    if reg_df is None or reg_df.empty:
        return {"all": []}
    signed = reg_df.assign(_sign=reg_df["metric"].map(harm_sign).astype(float))  # +1 / -1 / 0: no harm
    sub = signed[signed["term"].isin(order) & (signed["_sign"] != 0)]
    powered = sub["powered"].astype(bool) if "powered" in sub else pd.Series(True, index=sub.index)
    significant = sub["q"] <= alpha if "q" in sub else sub["p_adj"] < alpha
    sub = sub.assign(_named=powered & significant)
    for (bench, cat), g in sub.groupby(["benchmark", "category"], sort=True, dropna=False):
        hit = g[g["_named"] & (g["coef"] * g["_sign"] > min_coef)]
        names = sorted(set(hit["term"]), key=order.__getitem__)
        out[f"{bench}/{cat}"] = names
        union.update(names)
    out["all"] = sorted(union, key=order.__getitem__)
    return out


# --------------------------------------------------------------------------------------------------
# Does the persona hold under a value prompt?


def persona_fidelity(
    df_alignment: pd.DataFrame, *, treated: str = "value_prompt", reference: str = "none"
) -> pd.DataFrame:
    """PVQ NMSE per profile without and with a value prompt.

    Input: a tidy frame with PVQ rows (benchmark 'pvq', category 'overall', metrics nmse_greedy /
    nmse_expected): evaluation results of the `pvq` benchmark (load_results) and/or the train-time checks
    (load_alignment, always mitigation none). For a unit with both, the evaluation rows are used (same
    conditions as the value-prompt side). Results of one unit are averaged.

    Columns: profile, model, baseline, stage, reading ('greedy' | 'expected'), nmse_none,
    nmse_value_prompt (NaN when the profile has no value-prompt result), delta (value_prompt - none).
    """
    cols = ["profile", "model", "baseline", "stage", "reading", "nmse_none", "nmse_value_prompt", "delta"]
    if df_alignment is None or df_alignment.empty:
        return pd.DataFrame(columns=cols)
    sub = df_alignment[
        (df_alignment["benchmark"] == "pvq")
        & (df_alignment["category"] == "overall")
        & df_alignment["metric"].isin(["nmse_greedy", "nmse_expected"])
    ].dropna(subset=["value"])
    if "mitigation" not in sub.columns:
        sub = sub.assign(mitigation=reference)
    if "source" not in sub.columns:
        sub = sub.assign(source="evaluate")
    sub = sub[sub["mitigation"].isin([reference, treated])]
    if sub.empty:
        return pd.DataFrame(columns=cols)
    # Prefer evaluation rows over train-time rows for the same unit, metric and mitigation.
    key = [*UNIT, "metric", "mitigation"]
    has_eval = sub.groupby(key, dropna=False)["source"].transform(lambda s: (s == "evaluate").any())
    sub = sub[(sub["source"] == "evaluate") | ~has_eval.astype(bool)]
    u = sub.groupby(key, sort=True, dropna=False)["value"].mean().reset_index()
    wide = u.pivot_table(index=[*UNIT, "metric"], columns="mitigation", values="value", aggfunc="mean", dropna=False)
    wide = wide.reindex(columns=[reference, treated]).reset_index()
    out = pd.DataFrame(
        {
            "profile": wide["profile"],
            "model": wide["model"],
            "baseline": wide["baseline"],
            "stage": wide["stage"],
            "reading": wide["metric"].str.replace("nmse_", "", regex=False),
            "nmse_none": wide[reference].astype(float),
            "nmse_value_prompt": wide[treated].astype(float),
        }
    )
    out["delta"] = out["nmse_value_prompt"] - out["nmse_none"]
    out = out.dropna(subset=["nmse_none", "nmse_value_prompt"], how="all")
    return out[cols].reset_index(drop=True)
