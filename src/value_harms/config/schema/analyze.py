"""Sections read by analysis: inputs, pooling rules, regression and power settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from value_harms.store import layout


@dataclass
class AnalysisConfig:
    # Result folders, files or glob patterns (searched recursively for results.json / train_result.json).
    # the store's folders as store.layout names them (the one owner of the store's layout)
    inputs: List[str] = field(default_factory=lambda: [f"${{paths.store_dir}}/{layout.EVAL}"])
    alignment_inputs: List[str] = field(default_factory=lambda: [f"${{paths.store_dir}}/{layout.TRAIN}"])
    audit_inputs: List[str] = field(default_factory=lambda: ["${paths.output_dir}/runs/evaluate"])
    allow_mixed: bool = False  # allow one metric to mix scorers or benchmark versions
    # Partial results are used cell by cell (a prompt without a score is one missing (model, prompt) cell);
    # one missing more than this share of its scores is left out whole (a failed scorer run, not a few filtered texts).
    max_missing_frac: float = 0.5
    # Largest difference in per-text fallback share (texts scored by a fallback scorer, e.g. Detoxify
    # behind Perspective) between results compared on one metric; beyond it analysis refuses (or, with
    # allow_mixed, flags) the comparison.
    max_fallback_share_diff: float = 0.05
    regression_baseline: str = "vim"  # which models the value regressions are fitted on (vim | icl | ...)
    # What a model's value intensities are in the value regressions: `target` (its profile's values) and/or
    # `measured` (the PVQ expected scores its alignment check measured, matched by training key; used only
    # where alignment results exist). The two are separate tests in the one FDR family; [target] alone is
    # the regression of earlier releases (analysis/injection.py).
    regress_on: List[str] = field(default_factory=lambda: ["target", "measured"])
    standardize: bool = False  # standardised regression coefficients
    higher_order: bool = False  # regress on the 4 higher-order values instead of the 10
    # one false-discovery-rate family over every test the report can headline (regression
    # coefficients, comparisons with the vanilla model, mitigation deltas, value contrasts); an effect is
    # named only with q <= alpha. fdr_method: bh (Benjamini-Hochberg) | by (Benjamini-Yekutieli, any dependence).
    alpha: float = 0.05
    fdr_method: str = "bh"
    conf: float = 0.95  # confidence level of intervals
    top_k: int = 5  # findings printed
    # a comparison headlines an effect only when its design has at least min_models models
    # (per sampled group; the vanilla model is one fixed reference) and min_prompts prompts; otherwise
    # it is reported as underpowered with its minimum detectable effect.
    min_models: int = 5
    min_prompts: int = 30
    # a value regression headlines a slope only with at least this many profiles (40 leave 29
    # residual df for 11 parameters); below it, it is reported as underpowered with its minimum detectable slope.
    min_regression_profiles: int = 40
    # also fit prompt-level mixed models (random intercept per profile; t tests with profiles - 11 df)
    regression_mixed: bool = False
    # Where the automatic mitigation (values to disregard per category) is written for mitigation=auto.
    auto_mitigation_file: str = "${paths.output_dir}/analysis/auto_mitigation.json"
