"""`python -m value_harms.tools.judge_check [overrides] [--measure flag|harmfulness] [--json]`: does the configured
LLM judge discriminate?

    python -m value_harms.tools.judge_check experiment=demo
    python -m value_harms.tools.judge_check scorer=llm_judge scorer.judge.model=gpt-4o-2024-08-06   # JUDGE_API_KEY set

Scores the project's own check set (resources/judge_check.jsonl: harmful-sounding questions, each with a
clear refusal and a clear compliance) with the judge of the composed evaluate config, and prints its AUROC
(refusals vs compliances), flagged rates, missing answers and seconds, and the decision every result of this
judge records (scoring/judge/discrimination.py): a stand-in below `scorer.judge.min_auroc` is left out of
findings. The figures are cached per judge in `<paths.cache_dir>/caches.sqlite`, as in the evaluation jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

import value_harms.config.schema  # noqa: F401 - registers the typed schemas in Hydra's ConfigStore
from value_harms.errors import ConfigError
from value_harms.runtime.cli import check_group_overrides, run_task


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m value_harms.tools.judge_check", description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the evaluate config, e.g. experiment=demo")
    ap.add_argument("--measure", default="flag", choices=("flag", "harmfulness"), help="the judge's rubric")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    a = ap.parse_intermixed_args(argv)  # options before or after the overrides
    msg = check_group_overrides(a.overrides)
    if msg:
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return int(run_task(_check, a) or 0)


def _scorer_cfg(cfg):
    """The scorer section with the judge model resolved as the evaluation job resolves it: `model:<option>`
    names a conf/model file (the embedded SmolLM2: its local folder); a vLLM judge is served first."""
    judge = cfg.scorer.judge
    if judge.backend == "vllm":
        from value_harms.eval.engines import engine_settings  # heavy (torch): only this backend needs it
        from value_harms.eval.engines.judge import serve_judge  # as above

        return serve_judge(engine_settings(cfg), cfg.scorer, Path(os.path.expanduser(cfg.paths.output_dir)))
    scorer = OmegaConf.create(OmegaConf.to_container(cfg.scorer, resolve=True))
    if judge.backend == "transformers" and str(judge.model).startswith("model:"):
        from value_harms.config.paths import conf_dir
        from value_harms.models.loading import resolve_model_dir  # heavy (torch): a local judge needs it anyway

        option = str(judge.model).split(":", 1)[1]
        path = conf_dir() / "model" / f"{option}.yaml"
        if not path.is_file():
            raise ConfigError(f"scorer.judge.model=model:{option} names no file conf/model/{option}.yaml")
        scorer.judge.model = resolve_model_dir(OmegaConf.load(path), os.path.expanduser(cfg.paths.cache_dir))
    return scorer


def _check(a: argparse.Namespace) -> int:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from value_harms.config.paths import conf_dir
    from value_harms.scoring.judge.scorer import build_judge_scorer  # torch-free until a local judge loads

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("evaluate", a.overrides)
    GlobalHydra.instance().clear()
    scorer_cfg = _scorer_cfg(cfg)
    scorer_cfg.judge.check = True  # this command checks any judge, a network one included
    cache = Path(os.path.expanduser(str(cfg.paths.cache_dir))) / "scores.sqlite" if cfg.scorer.cache else None
    judge = build_judge_scorer(a.measure, scorer_cfg, cache)
    try:
        inner = getattr(judge, "inner", judge)  # the check bypasses the per-text cache (its figures are cached)
        found = inner.discrimination()
    finally:
        judge.close()
    if a.json:
        print(json.dumps({"judge": inner.cache_id, "stand_in": bool(cfg.scorer.judge.stand_in), **found}, indent=2))
    else:
        print(format_check(inner.cache_id, bool(cfg.scorer.judge.stand_in), found))
    return 0


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def format_check(judge_id: str, stand_in: bool, found: dict) -> str:
    """The figures and the decision in a few lines."""
    n = found["n_harmful"] + found["n_harmless"]
    lines = [
        f"judge: {judge_id}{' (STAND-IN)' if stand_in else ''}",
        f"check set: {found['n_harmful']} compliances (harmful) + {found['n_harmless']} refusals (harmless), "
        f"sha256 {found['set_sha256'][:16]}",
        f"AUROC {_f(found['auroc'])} (from the judge's {found['score']}); flagged rate: harmful "
        f"{_f(found['flagged_rate_harmful'])}, harmless {_f(found['flagged_rate_harmless'])}; missing "
        f"{found['missing']} of {n}; {found['seconds']:.1f} s{' (cached figures)' if found.get('cached') else ''}",
    ]
    if found.get("error"):
        lines.append(f"not measured: {found['error']}")
    if found["left_out"]:
        lines.append(f"decision: results of this judge are left out of findings ({found['reason']})")
    elif found["gated"]:
        lines.append(f"decision: used (AUROC >= min_auroc {found['min_auroc']:.2f})")
    else:
        verdict = {True: "discriminates", False: "does not discriminate", None: "was not measured"}[
            found["discriminates"]
        ]
        lines.append(
            f"decision: used, not gated (not a stand-in; scorer.judge.gate_all=true gates it); it {verdict} "
            f"at min_auroc {found['min_auroc']:.2f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
