"""Experiment loggers (CSV, W&B, TensorBoard) built from the `logger` config group."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from matplotlib.figure import Figure
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def instantiate_loggers(logger_cfg: DictConfig | None) -> list[Logger]:
    """Each entry of the group with a `_target_` becomes one Lightning logger."""
    if not logger_cfg:
        return []
    return [
        instantiate(entry) for entry in logger_cfg.values() if isinstance(entry, DictConfig) and "_target_" in entry
    ]


def print_and_log_to_files(logger: logging.Logger, message: str) -> None:
    """Print `message` (a run's closing line) and write it, as an INFO record of `logger`, to the log
    files on the root logger, i.e. Hydra's `<run dir>/train.log`, but not to its console handler,
    which would print it a second time."""
    print(message, flush=True)
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def log_figure(loggers: list[Logger], name: str, fig: Figure, png_path: Path) -> None:
    """Send a figure (already saved as png_path) to loggers that show images."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=name, images=[str(png_path)])
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(name, fig)


def log_image(loggers: list[Logger], name: str, image: torch.Tensor, png_path: Path, step: int) -> None:
    """Send an image (float [C, H, W] in [0, 1], already saved as png_path) to loggers that show images."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=name, images=[str(png_path)], step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(name, image, global_step=step)


def finish(loggers: list[Logger], metrics: dict[str, Any]) -> None:
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for logger in loggers:
        logger.log_metrics(numeric)
        logger.save()
        logger.finalize("success")
        if isinstance(logger, WandbLogger):
            # Lightning leaves the W&B run open, and the next WandbLogger in this process (the next job
            # of a multirun on the basic launcher) would log into it
            logger.experiment.finish()
