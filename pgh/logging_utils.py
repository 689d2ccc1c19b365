"""Experiment loggers (CSV, W&B, TensorBoard) built from the `logger` config group."""

from __future__ import annotations

import csv
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from matplotlib.figure import Figure
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def instantiate_loggers(
    logger_cfg: DictConfig | None, resume: bool = False, run_name: str | None = None
) -> list[Logger]:
    """Each entry of the group with a `_target_` becomes one Lightning logger. With `resume` (a run
    continued from its checkpoint) they continue the run's earlier logs: `ResumableCSVLogger` appends
    to its metrics.csv, and a W&B logger without an `id` of its own resumes the run's last W&B run.
    A W&B logger without a `name` of its own is named `run_name`."""
    loggers = []
    for entry in (logger_cfg or {}).values():
        if not (isinstance(entry, DictConfig) and "_target_" in entry):
            continue
        extra: dict[str, Any] = {}
        target = get_class(entry._target_)
        if issubclass(target, WandbLogger) and entry.get("name") is None and run_name is not None:
            extra["name"] = run_name
        if resume and issubclass(target, ResumableCSVLogger):
            extra["append"] = True
        elif resume and issubclass(target, WandbLogger) and entry.get("id") is None:
            run_id = last_wandb_run_id(Path(entry.get("save_dir") or "."))
            if run_id is not None:
                extra.update(id=run_id, resume="allow")
        loggers.append(instantiate(entry, **extra))
    return loggers


def last_wandb_run_id(save_dir: Path) -> str | None:
    """The id of the last W&B run under save_dir: `wandb/latest-run` links to its folder, which holds
    `run-<id>.wandb` (the folder's name ends in the id, or, for a second attempt started in the same
    second, in `<id>-1`)."""
    records = sorted((save_dir / "wandb" / "latest-run").glob("run-*.wandb"))
    return records[0].stem.removeprefix("run-") if records else None


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but keeping the rows already in metrics.csv (Lightning's deletes the
    file); a column the earlier rows lack rewrites the file once with the merged header."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger; with `append=True` (pgh-train sets it when a run resumes) metrics.csv
    keeps the earlier attempts' rows, so it holds the run's whole history (rows after the checkpoint
    that an interrupted attempt logged appear twice, with the same step, as in TensorBoard)."""

    def __init__(self, *args: Any, append: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.append = append

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self.append:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return super().experiment


def print_and_log_to_files(logger: logging.Logger, message: str) -> None:
    """Print `message` (a run's closing line) and write it, as an INFO record of `logger`, to the log
    files on the root logger, i.e. Hydra's `<run dir>/train.log`, but not to its console handler,
    which would print it a second time."""
    print(message, flush=True)
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def log_figure(loggers: list[Logger], name: str, fig: Figure, png_path: Path, step: int) -> None:
    """Send a figure (already saved as png_path) to loggers that show images, at `step`."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=name, images=[str(png_path)], step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(name, fig, global_step=step)


def log_image(loggers: list[Logger], name: str, image: torch.Tensor, png_path: Path, step: int) -> None:
    """Send an image (float [C, H, W] in [0, 1], already saved as png_path) to loggers that show images."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=name, images=[str(png_path)], step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(name, image, global_step=step)


def close_failed_wandb_run() -> None:
    """Mark a W&B run this process left open as failed and close it: Lightning's WandbLogger takes over
    any open run, so after a failed job the next job of a multirun (basic launcher) would log into it."""
    wandb = sys.modules.get("wandb")  # not imported: no run was ever opened
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1)


def finish(loggers: list[Logger], metrics: dict[str, Any], step: int = 0) -> None:
    """The run's final metrics (none: nothing to log) to every logger at `step` (a deep run's last
    step: the CSV logger put them at step 0), then close the loggers."""
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for logger in loggers:
        if numeric:
            logger.log_metrics(numeric, step=step)
        logger.save()
        logger.finalize("success")
        if isinstance(logger, WandbLogger):
            # Lightning leaves the W&B run open, and the next WandbLogger in this process (the next job
            # of a multirun on the basic launcher) would log into it
            logger.experiment.finish()


class DropLightningAdvert(logging.Filter):
    """Drops Lightning's tip to install its cloud logger, printed at every fit."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_lightning_notices() -> None:
    """Silence what Lightning prints at every deep run that asks nothing of the user."""
    # the manual-optimisation checkpoint holds the state after the batch's steps, which is what an exact
    # resume needs (tests/test_pgh.py resumes mid-round); Lightning's long warning about it is noise
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    # a resume in mid-epoch is supported: the same round, codes, weights and optimiser state, on a fresh
    # shuffle of the epoch's remaining batches (README: Checkpoints); "unreliable results" says more
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
    # small training sets: the losses are also logged once an epoch (`<name>_epoch`), which is what it asks for
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging")
    # Lightning's own pytree helper against torch >= 2.10's: a deprecation inside Lightning, not ours to fix
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        rank_zero = logging.getLogger(name)
        if not any(isinstance(f, DropLightningAdvert) for f in rank_zero.filters):
            rank_zero.addFilter(DropLightningAdvert())
