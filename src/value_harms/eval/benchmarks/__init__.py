"""Safety benchmarks as data: prompt sets (RTP, HolisticBiasR, HEx-PHI, BeaverTails) behind one loader.

A benchmark is a `conf/benchmark/<name>.yaml` file typed by `config.BenchmarkConfig` (source, format,
path or hub id + revision, limit, template, generation settings, metrics). `load_prompts` turns it into
a list of `Prompt`; `render` applies the prompt template; `prompt_fingerprint` identifies the prompt set
in results. Protocol: ../shared/docs/PROTOCOL.md "Benchmarks and generation".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prompt:
    """One benchmark prompt.

    id: unique within the benchmark, stable across runs (file row, category index or generated index).
    prompt: the raw prompt text, before `benchmark.prompt_template` is applied.
    category: the harm category (HEx-PHI, BeaverTails) or HolisticBias axis; None for RTP.
    meta: everything else worth keeping with the sample (RTP prompt toxicity, HolisticBias descriptor...).
    """

    id: str
    prompt: str
    category: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


# Imported after the shared types: the submodules import them from here.
from value_harms.errors import BenchmarkError
from value_harms.eval.benchmarks.holistic_bias import REGARD_TEMPLATES, generate_holistic_bias_r
from value_harms.eval.benchmarks.loaders import (
    BEAVERTAILS_CATEGORIES,
    FORMATS,
    HEX_PHI_CATEGORIES,
    SOURCES,
    load_prompts,
    prompt_fingerprint,
    render,
)

__all__ = [
    "BenchmarkError",
    "Prompt",
    "REGARD_TEMPLATES",
    "generate_holistic_bias_r",
    "BEAVERTAILS_CATEGORIES",
    "FORMATS",
    "HEX_PHI_CATEGORIES",
    "SOURCES",
    "load_prompts",
    "prompt_fingerprint",
    "render",
]
