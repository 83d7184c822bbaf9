"""The benchmark registry: `benchmark.format` x `benchmark.source` -> the loader that reads the prompts.

`FORMATS` maps each format to a `Format`: its loaders by source (loaders.py, holistic_bias.py, pvq.py)
and whether the loader draws `benchmark.limit` itself. `load_prompts(bench_cfg, data_dir)` is the one
entry point: it checks format and source against the registry (one-line BenchmarkError naming the bad
value and the known ones), calls the loader, checks the ids, then keeps `per_category` / `limit`.

Adding a benchmark = its reader module in eval/benchmarks/ + one entry in `FORMATS` + a
conf/benchmark/<name>.yaml naming the format, source and measure (eval.measures.MEASURES).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import value_harms.eval.benchmarks.loaders as L
from value_harms.config.access import cfg_get as _get
from value_harms.errors import BenchmarkError
from value_harms.eval.benchmarks.base import Prompt
from value_harms.eval.benchmarks.holistic_bias import generate_holistic_bias_r
from value_harms.eval.benchmarks.pvq import pvq_items_local

log = logging.getLogger(__name__)

Loader = Callable[[Any, "str | None"], tuple[list[Prompt], str]]  # (bench_cfg, data_dir) -> (prompts, where)


def _holistic_bias_generated(cfg: Any, data_dir: str | None) -> tuple[list[Prompt], str]:
    """HolisticBiasR, generated from the v1.1 files; `benchmark.limit` is a seeded draw stratified by axis."""
    prompts = generate_holistic_bias_r(
        L.local_path(cfg, data_dir), limit=_get(cfg, "limit"), seed=int(_get(cfg, "seed", 42))
    )
    return prompts, str(_get(cfg, "name", "holistic_bias"))


@dataclass(frozen=True)
class Format:
    """One prompt format: `loaders` by source; `draws_limit`: the loader applies benchmark.limit itself
    (then per_category / limit are not applied again)."""

    loaders: Mapping[str, Loader]
    draws_limit: bool = False


FORMATS: dict[str, Format] = {
    "rtp_list": Format({"local": L.rtp_list_local, "hub": L.rtp_hub}),
    "rtp_jsonl": Format({"local": L.rtp_jsonl_local, "hub": L.rtp_hub}),
    "holistic_bias": Format({"generated": _holistic_bias_generated}, draws_limit=True),
    "hex_phi_csv": Format({"local": L.hex_phi_local, "hub": L.hex_phi_hub}),
    "beavertails_csv": Format({"local": L.beavertails_local, "hub": L.beavertails_hub}),
    # benchmark=pvq: the PVQ items (id = item, category = value); evaluate.py runs the alignment check on them
    "pvq_items": Format({"local": pvq_items_local}),
}
SOURCES: tuple[str, ...] = ("local", "hub", "generated")


def check_format(bench_cfg: Any) -> Format:
    """`benchmark.format` and `benchmark.source` against the registry (one-line BenchmarkError)."""
    fmt, source = _get(bench_cfg, "format"), _get(bench_cfg, "source", "local")
    if fmt not in FORMATS:
        raise BenchmarkError(
            f"benchmark.format {fmt!r} is unknown{L.closest(str(fmt), list(FORMATS))}; "
            f"choose one of {', '.join(FORMATS)}"
        )
    if source not in FORMATS[fmt].loaders:
        raise BenchmarkError(
            f"benchmark.source {source!r} does not work with format {fmt}; "
            f"choose one of {', '.join(FORMATS[fmt].loaders)}"
        )
    return FORMATS[fmt]


def _validate(prompts: list[Prompt], where: str) -> None:
    if not prompts:
        raise BenchmarkError(f"{where}: no prompts left; check the file and benchmark.min_prompt_toxicity")
    seen: set[str] = set()
    for p in prompts:
        if p.id in seen:
            raise BenchmarkError(f"{where}: prompt id {p.id!r} appears twice; the prompt set must have unique ids")
        seen.add(p.id)


def load_prompts(bench_cfg: Any, data_dir: str | None) -> list[Prompt]:
    """The benchmark's prompts (raw text, before `benchmark.prompt_template`), validated.

    bench_cfg: a `benchmark` config node (BenchmarkConfig / DictConfig / dict); data_dir: `paths.data_dir`
    (relative `benchmark.path` values are resolved under it).
    """
    entry = check_format(bench_cfg)
    limit = _get(bench_cfg, "limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise BenchmarkError(f"benchmark.limit must be a positive integer or null, got {limit!r}")
    name = _get(bench_cfg, "name", _get(bench_cfg, "format"))
    prompts, where = entry.loaders[_get(bench_cfg, "source", "local")](bench_cfg, data_dir)
    _validate(prompts, where)
    if entry.draws_limit:
        return prompts
    total = len(prompts)
    per_category = _get(bench_cfg, "per_category")
    if per_category is not None:
        # A small subset that still covers every category: the first N of each, in file order.
        taken: dict[str | None, int] = {}
        kept = []
        for p in prompts:
            if taken.get(p.category, 0) < int(per_category):
                taken[p.category] = taken.get(p.category, 0) + 1
                kept.append(p)
        prompts = kept
    if limit is not None:
        prompts = prompts[:limit]
    log.info("benchmark %s: %d prompts (of %d) from %s", name, len(prompts), total, where)
    return prompts


def render(prompt: Prompt, template: str) -> str:
    """The model input: `template.format(prompt=prompt.prompt)` (`benchmark.prompt_template`)."""
    try:
        return template.format(prompt=prompt.prompt)
    except (KeyError, IndexError, ValueError) as e:
        raise BenchmarkError(
            f"benchmark.prompt_template {template!r} cannot be filled ({type(e).__name__}: {e}); it may use only "
            f"{{prompt}} (write literal braces as {{{{ and }}}})"
        ) from None
