"""Safety benchmarks as data: prompt sets (RTP, HolisticBiasR, HEx-PHI, BeaverTails, the PVQ items) behind
one loader.

A benchmark is a `conf/benchmark/<name>.yaml` file typed by `config.BenchmarkConfig` (source, format,
path or hub id + revision, limit, template, generation settings, measure and metrics). `load_prompts`
turns it into a list of `Prompt` through the registry (registry.FORMATS: format x source -> loader);
`render` applies the prompt template; the prompt set's hashes are store.identity's (`prompt_set_sha256`).
Modules: base (Prompt, file reading), loaders (RTP / HEx-PHI / BeaverTails readers), holistic_bias
(the generated HolisticBiasR set), pvq (the PVQ items), registry. Protocol: ../shared/docs/PROTOCOL.md
"Benchmarks and generation".
"""

from __future__ import annotations

from value_harms.errors import BenchmarkError
from value_harms.eval.benchmarks.base import Prompt
from value_harms.eval.benchmarks.holistic_bias import REGARD_TEMPLATES, generate_holistic_bias_r
from value_harms.eval.benchmarks.loaders import BEAVERTAILS_CATEGORIES, HEX_PHI_CATEGORIES
from value_harms.eval.benchmarks.registry import (
    FORMATS,
    SOURCES,
    Format,
    check_format,
    load_prompts,
    render,
)

__all__ = [
    "BenchmarkError",
    "Prompt",
    "REGARD_TEMPLATES",
    "generate_holistic_bias_r",
    "BEAVERTAILS_CATEGORIES",
    "FORMATS",
    "Format",
    "HEX_PHI_CATEGORIES",
    "SOURCES",
    "check_format",
    "load_prompts",
    "render",
]
