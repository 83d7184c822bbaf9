"""Train value-aligned LoRA adapters with VIM: `python train.py -m value_profile=Pow,Uni`.

A thin entry point: every knob is in conf/, every step in the value_harms package.
"""

import hydra
from omegaconf import DictConfig

import value_harms.config.schema  # noqa: F401 - registers the typed schemas (job_schema) in Hydra's ConfigStore
from value_harms.runtime.cli import guard_overrides, run_task


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from value_harms.train.task import run_train

    run_task(run_train, cfg)


if __name__ == "__main__":
    guard_overrides()
    main()
