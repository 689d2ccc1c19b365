"""Shared fixtures: Hydra configs composed from conf/ (as `pgh-train` would), with run and cache
directories under pytest's tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from pgh.train import CONFIG_DIR


@pytest.fixture
def make_cfg(tmp_path: Path):
    """make_cfg(*overrides) -> the composed config, writing into tmp_path."""

    def _make(*overrides: str) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.cache_dir = str(tmp_path / "cache")
            cfg.paths.log_dir = str(tmp_path / "logs")
        return cfg

    yield _make
    GlobalHydra.instance().clear()


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield
