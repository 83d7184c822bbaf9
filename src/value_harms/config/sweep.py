"""Expanding a Hydra multirun's overrides into its jobs, exactly as Hydra's BasicSweeper does.

Shared by the config check at launch (value_harms.config.validate checks every job before any folder
exists) and the sweep status tool (value_harms.tools.status re-expands the jobs a sweep should have).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

import value_harms.config.schema  # noqa: F401 - registers the typed schemas in Hydra's ConfigStore
from value_harms.config.paths import conf_dir

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def config_loader(conf: Path):
    """A Hydra config loader on `conf` (plus hydra's own configs, plugins and the ConfigStore)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.plugins import Plugins

    Plugins.instance()  # registers plugin configs (hydra/launcher/joblib, ...) as Hydra's start-up does
    return ConfigLoaderImpl(config_search_path=create_config_search_path(str(conf)))


def sweep_conf_dir(sweep_cfg) -> Path:
    """The config dir the sweep was composed from (its `main` source), else the project's."""
    for src in OmegaConf.select(sweep_cfg, "hydra.runtime.config_sources", default=None) or []:
        if src.get("provider") == "main" and src.get("schema") == "file" and Path(str(src.get("path"))).is_dir():
            return Path(str(src.get("path")))
    return conf_dir()


def overrides_parser(conf: Path):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create(config_loader=config_loader(conf))


def expand_overrides(arguments: list[str], conf: Path | None = None) -> list[list[str]]:
    """The override list of every job a BasicSweeper launches for `arguments`, in launch order."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parser = overrides_parser(conf or conf_dir())
    batches = BasicSweeper.split_arguments(parser.parse_overrides(list(arguments)), max_batch_size=None)
    return [list(job) for batch in batches for job in batch]


def normalise_overrides(parser, overrides: list[str]) -> frozenset[tuple[str, str]]:
    """An override list as a set of (key, value) in Hydra's canonical spelling (false -> False)."""
    return frozenset(
        (o.get_key_element(), o.get_value_element_as_str()) for o in parser.parse_overrides(list(overrides))
    )
