"""Experiment loggers (CSV, W&B, TensorBoard) built from the `logger` config group."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
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
        logger = instantiate(entry, **extra)
        if isinstance(logger, WandbLogger) and logger._wandb_init.get("anonymous", "") is None:
            # Lightning passes anonymous=None, on which W&B >= 0.22 warns at every run that the setting
            # has no effect
            del logger._wandb_init["anonymous"]
        loggers.append(logger)
    return loggers


WANDB_NO_KEY = (
    "logger=wandb but W&B has no API key here: log in with `wandb login`, or run offline with "
    "WANDB_MODE=offline (`wandb sync` uploads later), or use logger=csv"
)


def check_wandb(logger_cfg: DictConfig | None) -> None:
    """A W&B logger's settings, before any work: a key neither Lightning's WandbLogger nor wandb.init
    takes (`+logger.wandb.nmae=…` failed in wandb.init's TypeError once the run started), and
    credentials when it would log online: W&B asks for a key only when it starts its run, and in a
    terminal waits there for an answer."""
    wandb_entries = {
        name: entry
        for name, entry in (logger_cfg or {}).items()
        if isinstance(entry, DictConfig) and "_target_" in entry and issubclass(get_class(entry._target_), WandbLogger)
    }
    if not wandb_entries:
        return
    import inspect

    import wandb

    from pgh.override_errors import nearest

    takes = set(inspect.signature(WandbLogger.__init__).parameters) | set(inspect.signature(wandb.init).parameters)
    takes -= {"self", "kwargs"}
    for name, entry in wandb_entries.items():
        for key in entry:
            if not key.startswith("_") and key not in takes:
                raise ValueError(
                    f"`logger.{name}.{key}` is not a setting of Lightning's WandbLogger or of wandb.init"
                    + nearest(str(key), sorted(takes))
                )
    if all(logs_offline(entry) for entry in wandb_entries.values()):
        return
    # W&B starts its run on rank 0 alone; an open run (train(cfg) after wandb.init) is logged into
    if rank_zero_only.rank != 0 or wandb.run is not None:
        return
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return
    from wandb.sdk import wandb_setup

    settings = wandb_setup.singleton().settings  # WANDB_MODE, or `wandb offline` / `wandb disabled`
    if settings._offline or settings._noop:
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        # "Loaded credentials for ..." and "API key is configured", at every run otherwise
        logged_in = wandb.login(prompt=False, verify=False)  # an API key in ~/.netrc or W&B's settings files
    if not logged_in:
        raise ValueError(WANDB_NO_KEY)


def logs_offline(entry: DictConfig) -> bool:
    """Whether a W&B logger's own settings keep it off W&B's servers (offline=true, or a mode of
    offline, dryrun or disabled, given directly or in its `settings`)."""
    settings = entry.get("settings")
    modes = [entry.get("mode"), settings.get("mode") if isinstance(settings, DictConfig) else None]
    return bool(entry.get("offline")) or any(mode in ("offline", "dryrun", "disabled") for mode in modes)


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


def logger_step(trainer: Any) -> int:
    """The step Lightning logs `self.log` values at: batches that stepped, over every attempt (a resume
    restores it). `trainer.global_step` counts optimizer steps instead, three a batch for PGH (D, G, H;
    two in its GAN warm-up), so metrics logged at it would sit far along the losses' x-axis."""
    return int(getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step))


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


# numbers of metrics.json that describe the run rather than measure it: W&B gets them in the run's
# summary (its runs table), not as charts of one point
RUN_SETTINGS = ("bits", "seed", "num_queries", "num_database", "num_train", "torch_threads", "global_step", "log_step")


def split_for_wandb(metrics: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """metrics.json's entries as (the measurements W&B charts, the rest for the run's summary: the
    settings among the numbers, and the names, flags and lists)."""
    charted = {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in RUN_SETTINGS
    }
    return charted, {k: v for k, v in metrics.items() if k not in charted}


def finish(loggers: list[Logger], metrics: dict[str, Any], step: int = 0) -> None:
    """The run's final metrics (none: nothing to log) to every logger at `step` (a deep run's last
    step: the CSV logger put them at step 0), then close the loggers. W&B charts the measurements and
    keeps the rest of metrics.json (settings, names, flags) in the run's summary."""
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for logger in loggers:
        if isinstance(logger, WandbLogger) and metrics:
            charted, described = split_for_wandb(metrics)
            logger.log_metrics(charted, step=step)
            logger.experiment.summary.update(described)
        elif numeric:
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
    # small training sets: the losses are also logged once an epoch (`<name>_epoch`), which is what it asks for
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging")
    # a run continued from another directory's checkpoint (a copied run, a fine-tune) is supported, and
    # its ModelCheckpoint keeps only last.ckpt, which this directory's own replaces
    warnings.filterwarnings("ignore", message="The dirpath has changed from")
    # Lightning's own pytree helper against torch >= 2.10's: a deprecation inside Lightning, not ours to fix
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        rank_zero = logging.getLogger(name)
        if not any(isinstance(f, DropLightningAdvert) for f in rank_zero.filters):
            rank_zero.addFilter(DropLightningAdvert())
