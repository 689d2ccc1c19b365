"""Checkpointing: Lightning's torch checkpoint IO made atomic (a temporary file, then a rename, so a
run killed while saving never leaves a truncated `last.ckpt` behind), and step checkpoints that a
resume never mistakes for a finished epoch."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from pgh.io import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


# after a stop in mid-epoch: the evaluated model, weights only (a resume continues from last.ckpt's step)
STOPPED_CHECKPOINT = "stopped.ckpt"


def reached_last_batch(trainer: L.Trainer) -> bool:
    """Whether the current epoch's last batch has run: False inside an epoch, and at the epoch's end
    when a stop in mid-epoch (max_steps, max_time, a callback's should_stop) ended it early, where
    Lightning still runs the epoch-end hooks and would record the epoch as finished."""
    return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)


class StepCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint saving `last` every n steps, with two changes.
    A save is due when the batch's optimiser steps reached or passed a multiple of n, not only when
    global_step hits one: a PGH batch makes 3 steps (2 in the GAN warm-up), so Lightning's exact test
    saved only every lcm(n, 3) steps, and after a warm-up of an odd number of batches never again.
    A save due at an epoch's last batch is made at the epoch's end instead: Lightning resumes a
    checkpoint from the last batch as a finished epoch without running the epoch's end, so PGH's code
    refresh at a round's last epoch would be lost. (Checkpoint callbacks run after the others and the
    module at an epoch's end, so the deferred save holds the refreshed codes.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._save_at_epoch_end = False
        self._previous_step = 0  # global_step at the last batch's end (or at the start of training)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._previous_step = trainer.global_step  # a resume starts from its checkpoint's step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        every, step = self._every_n_train_steps, trainer.global_step
        due = every >= 1 and step // every > self._previous_step // every
        self._previous_step = step
        if not due:
            return
        if reached_last_batch(trainer):
            self._save_at_epoch_end = True
        elif not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Nothing: Lightning saves `last` here even after a stop in mid-epoch, recording the epoch as
        finished (a resume would skip its remaining batches); pgh-train makes the final save itself,
        only after a finished epoch."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._save_at_epoch_end and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self._save_at_epoch_end = False
