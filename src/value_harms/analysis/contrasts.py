"""The contrasts that isolate values: what value alignment adds beyond fine-tuning as such, and
beyond stating the same values in the prompt.

Every comparison in stats.compare_baselines is against one fixed vanilla model: it mixes value alignment
with fine-tuning as such and with that one model's quirks. Two contrasts separate them, per model name,
VIM stage, benchmark and metric (category overall, no mitigation):

- VIM vs a fine-tuning control. A control is recognised by this rule (documented in DECISIONS):
  (a) every result of variant `benign` (benign instruction fine-tuning), one control per benign stage;
  (b) a `vim` result whose profile's ten value intensities are all equal: the VIM recipe on a profile
      with no value preference ("flat profile"), a control for the VIM results of its own stage. Flat
      profiles leave the VIM side of these contrasts.
  Estimator: the two-way (models x prompts) estimator of inference.compare_prompt_level with the control
  as the reference; several control models are a sample of them (their between-model variance counts),
  one control model is a fixed reference ("vs this control model").
- VIM vs ICL persona: the same profiles without training. Units are paired by profile: the per-profile,
  per-prompt difference VIM - ICL is analysed with the paired two-way estimator of mitigation deltas
  (inference.mitigation_prompt_level); a profile's own effect, shared by its two variants, cancels.
  Profiles present on one side only are left out (n_models counts the pairs).

The value regression within VIM models (stats.value_regressions) is the third such contrast.
Without prompt-level data (no samples.jsonl) both fall back to the model-level tests of stats.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from value_harms.analysis import inference
from value_harms.analysis.stats import CONTROL, compare_baselines, mitigation_effects
from value_harms.core.values import VALUES

__all__ = ["CONTRAST_COLUMNS", "CONTROL", "flat_profiles", "controls_apart", "value_contrasts"]

CONTRAST_COLUMNS = [
    "model",
    "benchmark",
    "metric",
    "category",
    "contrast",
    "group",
    "control",
    "estimand",
    "mean_group",
    "mean_control",
    "estimate",
    "ci_low",
    "ci_high",
    "se",
    "df",
    "p_value",
    "test",
    "n_models",
    "n_control",
    "n_prompts",
    "n_samples",
    "mde",
    "powered",
    "constant",
    "method",
    "min_models",
    "min_prompts",
]


def flat_profiles(df: pd.DataFrame) -> set[str]:
    """Profiles whose ten value intensities are all equal (and known): no value preference."""
    if df is None or df.empty or not set(VALUES) <= set(df.columns):
        return set()
    prof = df.dropna(subset=["profile"]).drop_duplicates("profile").set_index("profile")[list(VALUES)]
    vals = prof.to_numpy(dtype=float)
    flat = np.isfinite(vals).all(axis=1) & (np.ptp(np.nan_to_num(vals), axis=1) == 0)
    return {str(p) for p, f in zip(prof.index, flat) if f}


def controls_apart(frame: pd.DataFrame | None, flat: set[str]) -> pd.DataFrame | None:
    """`frame` with every `vim` row of a flat profile relabelled variant CONTROL: the fine-tuning control is
    not a value-aligned model, so it leaves the VIM group of the comparisons with the vanilla model, the
    mitigation effects and the value regressions, and appears as its own group beside them (control vs
    vanilla: what fine-tuning as such does). The contrasts read the unrelabelled frame (rule (b) above)."""
    if frame is None or not len(frame) or not flat or "baseline" not in frame or "profile" not in frame:
        return frame
    is_ctrl = (frame["baseline"] == "vim") & frame["profile"].astype(str).isin(flat)
    if not is_ctrl.any():
        return frame
    out = frame.copy()
    out.loc[is_ctrl, "baseline"] = CONTROL
    return out


def _relabel(frame: pd.DataFrame, **cols: Any) -> pd.DataFrame:
    return frame.assign(**cols) if len(frame) else frame


def _constant(row: pd.Series) -> bool:
    flag = row.get("constant")
    if isinstance(flag, (bool, np.bool_)) and flag:
        return True
    se, m = row.get("se"), row.get("mde")
    return any(isinstance(x, (int, float)) and np.isfinite(x) and x == 0 for x in (se, m))


def _vs_control(df, pv, stage, ctrl_df, ctrl_pv, label, conf, design) -> list[dict[str, Any]]:
    """VIM (stage, non-flat profiles) against one control, through compare_baselines + compare_prompt_level."""
    flat = flat_profiles(df)
    g = df[(df["baseline"] == "vim") & (df["stage"] == stage) & ~df["profile"].isin(flat)]
    if g.empty or ctrl_df.empty:
        return []
    both = pd.concat([g, _relabel(ctrl_df, baseline=CONTROL, stage=CONTROL)], ignore_index=True)
    cmp = compare_baselines(both, reference=CONTROL, conf=conf)
    cmp = cmp[cmp["baseline"] == "vim"]
    if cmp.empty:
        return []
    gpv = pv[(pv["baseline"] == "vim") & (pv["stage"] == stage) & ~pv["profile"].isin(flat)] if len(pv) else pv
    ppv = pd.concat([gpv, _relabel(ctrl_pv, baseline=CONTROL, stage=CONTROL)], ignore_index=True) if len(pv) else pv
    cmp = inference.compare_prompt_level(cmp, ppv, reference=CONTROL, conf=conf, **design)
    n_ctrl = int(ctrl_df["profile"].nunique())
    one = "this control model" if n_ctrl == 1 else f"{n_ctrl} control models"
    rows = []
    for _, r in cmp.iterrows():
        rows.append(
            {
                **{k: r.get(k) for k in ("model", "benchmark", "metric", "category", "se", "df", "p_value", "test")},
                **{k: r.get(k) for k in ("n_models", "n_prompts", "n_samples", "mde", "powered", "method")},
                **{k: r.get(k) for k in ("min_models", "min_prompts")},
                "contrast": "vim_vs_control",
                "group": f"vim/{stage}",
                "control": label,
                "estimand": f"value-aligned ({stage}) minus {one} ({label}): what the values add to fine-tuning",
                "mean_group": r.get("mean"),
                "mean_control": r.get("mean") - r.get("diff_vs_ref"),
                "estimate": r.get("diff_vs_ref"),
                "ci_low": r.get("diff_low"),
                "ci_high": r.get("diff_high"),
                "n_control": n_ctrl,
                "constant": _constant(r),
            }
        )
    return rows


def _vs_icl(df, pv, stage, conf, design) -> list[dict[str, Any]]:
    """VIM (stage) minus ICL persona of the same profile, paired by profile and prompt."""
    vim = df[(df["baseline"] == "vim") & (df["stage"] == stage)]
    icl = df[(df["baseline"] == "icl") & df["profile"].isin(set(vim["profile"]))]
    if vim.empty or icl.empty:
        return []
    pair = dict(baseline="vim_vs_icl", stage=stage, disregard="")
    both = pd.concat([_relabel(vim, mitigation="vim", **pair), _relabel(icl, mitigation="icl", **pair)])
    mit = mitigation_effects(both, conf=conf, reference="icl")
    if mit.empty:
        return []
    ppv = pv
    if len(pv):
        pv_vim = pv[(pv["baseline"] == "vim") & (pv["stage"] == stage) & (pv["mitigation"] == "none")]
        pv_icl = pv[(pv["baseline"] == "icl") & (pv["mitigation"] == "none")]
        ppv = pd.concat([_relabel(pv_vim, mitigation="vim", **pair), _relabel(pv_icl, mitigation="icl", **pair)])
    mit = inference.mitigation_prompt_level(mit, ppv, reference="icl", conf=conf, **design)
    rows = []
    for _, r in mit.iterrows():
        rows.append(
            {
                **{k: r.get(k) for k in ("model", "benchmark", "metric", "category", "se", "df", "p_value", "test")},
                **{k: r.get(k) for k in ("n_prompts", "n_samples", "mde", "powered", "method")},
                **{k: r.get(k) for k in ("min_models", "min_prompts")},
                "contrast": "vim_vs_icl",
                "group": f"vim/{stage}",
                "control": "icl",
                "estimand": (
                    f"value-aligned ({stage}) minus the same profiles as in-context personas, paired by profile: "
                    f"what training adds to stating the values"
                ),
                "mean_group": r.get("mean_mitigated"),
                "mean_control": r.get("mean_reference"),
                "estimate": r.get("mean_delta"),
                "ci_low": r.get("ci_low"),
                "ci_high": r.get("ci_high"),
                "n_models": r.get("n_models") if not pd.isna(r.get("n_models")) else r.get("n"),
                "n_control": r.get("n"),
                "constant": _constant(r),
            }
        )
    return rows


def value_contrasts(
    df: pd.DataFrame,
    pv: pd.DataFrame | None,
    *,
    conf: float = 0.95,
    min_models: int = inference.MIN_MODELS,
    min_prompts: int = inference.MIN_PROMPTS,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """VIM vs fine-tuning controls and VIM vs ICL persona (module doc), one row per (model, benchmark,
    metric, VIM stage, control) with CONTRAST_COLUMNS: estimate (group - control), its interval, p_value,
    the design (n_models, n_control, n_prompts, n_samples), mde, powered, constant, method and the
    estimand in words. Empty when the study has no VIM results or no control / ICL results."""
    if df is None or df.empty or not (df["baseline"] == "vim").any():
        return pd.DataFrame(columns=CONTRAST_COLUMNS)
    base = df[(df["category"] == "overall") & (df["mitigation"] == "none")]
    pv = pv if pv is not None else pd.DataFrame()
    if len(pv):
        pv = pv[pv["mitigation"] == "none"]
    design = {"min_models": min_models, "min_prompts": min_prompts, "alpha": alpha}
    flat = flat_profiles(base)
    rows: list[dict[str, Any]] = []
    for stage in sorted(base[base["baseline"] == "vim"]["stage"].dropna().astype(str).unique()):
        benign = base[base["baseline"] == "benign"]
        for bstage in sorted(benign["stage"].dropna().astype(str).unique()):
            c = benign[benign["stage"] == bstage]
            cpv = pv[(pv["baseline"] == "benign") & (pv["stage"] == bstage)] if len(pv) else pv
            rows += _vs_control(base, pv, stage, c, cpv, f"benign/{bstage}", conf, design)
        fl = base[(base["baseline"] == "vim") & (base["stage"] == stage) & base["profile"].isin(flat)]
        if len(fl):
            fpv = pv[(pv["baseline"] == "vim") & (pv["stage"] == stage) & pv["profile"].isin(flat)] if len(pv) else pv
            rows += _vs_control(base, pv, stage, fl, fpv, f"vim/{stage} flat profile", conf, design)
        rows += _vs_icl(base, pv, stage, conf, design)
    out = pd.DataFrame(rows, columns=CONTRAST_COLUMNS)
    out["powered"] = out["powered"].fillna(False).astype(bool)
    out["constant"] = out["constant"].fillna(False).astype(bool)
    out["p_value"] = pd.to_numeric(out["p_value"], errors="coerce")
    if len(out):
        out.loc[out["constant"], "p_value"] = math.nan  # a constant metric has no test
    return out.reset_index(drop=True)
