"""Analyse a sweep's results and write the report: `python analyze.py analysis.inputs='[outputs/store/eval]'`.

A thin entry point: every knob is in conf/, every step in the value_harms package.
"""

import hydra
from omegaconf import DictConfig

import value_harms.config.schema  # noqa: F401 - registers the typed schemas (job_schema) in Hydra's ConfigStore
from value_harms.runtime.cli import guard_overrides, run_task


@hydra.main(version_base="1.3", config_path="conf", config_name="analyze")
def main(cfg: DictConfig) -> None:
    from value_harms.analysis.task import run_analyze

    run_task(run_analyze, cfg)


if __name__ == "__main__":
    guard_overrides()
    main()
