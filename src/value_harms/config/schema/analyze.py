"""Sections read by analysis: inputs, pooling rules, regression and power settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List


@dataclass
class AnalysisConfig:
    # Result folders, files or glob patterns (searched recursively for results.json / train_result.json).
    inputs: List[str] = field(default_factory=lambda: ["${paths.store_dir}/eval"])
    alignment_inputs: List[str] = field(default_factory=lambda: ["${paths.store_dir}/train"])
    audit_inputs: List[str] = field(default_factory=lambda: ["${paths.output_dir}/runs/evaluate"])
    allow_mixed: bool = False  # allow one metric to mix scorers or benchmark versions
    # Partial results (some scores missing) are analysed only up to this share of missing scores.
    max_missing_frac: float = 0.0
    # Largest difference in per-text fallback share (texts scored by a fallback scorer, e.g. Detoxify
    # behind Perspective) between results compared on one metric; beyond it analysis refuses (or, with
    # allow_mixed, flags) the comparison.
    max_fallback_share_diff: float = 0.05
    regression_baseline: str = "vim"  # which models the value regressions are fitted on (vim | icl | ...)
    standardize: bool = False  # standardised regression coefficients
    higher_order: bool = False  # regress on the 4 higher-order values instead of the 10
    alpha: float = 0.05  # FDR level (Benjamini-Hochberg)
    conf: float = 0.95  # confidence level of intervals
    top_k: int = 5  # findings printed
    # issue 14: a comparison headlines an effect only when its design has at least min_models models
    # (per sampled group; the vanilla model is one fixed reference) and min_prompts prompts; otherwise
    # it is reported as underpowered with its minimum detectable effect.
    min_models: int = 5
    min_prompts: int = 30
    regression_mixed: bool = False  # also fit prompt-level mixed models (random intercept per profile)
    # Where the automatic mitigation (values to disregard per category) is written for mitigation=auto.
    auto_mitigation_file: str = "${paths.output_dir}/analysis/auto_mitigation.json"
