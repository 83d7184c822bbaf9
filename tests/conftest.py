"""Shared fixtures: the reference data directory, an isolated cache/output tree, config composition."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.cli import CONF, ROOT


def _data_dir() -> Path:
    return Path(os.environ.get("VALUE_HARMS_DATA_DIR") or ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _data_dir()
    if not (d / "vim" / "valueEval_10.csv").is_file():
        pytest.skip(f"reference data not found at {d} (set VALUE_HARMS_DATA_DIR)")
    return d


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One model cache for the whole session: the tiny model is built once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def compose():
    """compose(config_name, overrides) -> DictConfig, with GlobalHydra cleared around it."""
    from hydra import compose as h_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import value_harms.config.schema  # noqa: F401 - registers the typed schemas in Hydra's ConfigStore

    def _compose(config_name: str = "train", overrides: list[str] | None = None, return_hydra_config=False):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return h_compose(
                config_name=config_name, overrides=list(overrides or []), return_hydra_config=return_hydra_config
            )

    yield _compose
    GlobalHydra.instance().clear()
