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


class StepCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, but its every-n-steps save skips an epoch's last batch: Lightning
    resumes a checkpoint from that batch as a finished epoch without running the epoch's end, so PGH's
    code refresh at a round's last epoch (and any epoch-end work) would be lost. A run killed there
    resumes from the step before and repeats that batch."""

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        super().on_train_batch_end(trainer, *args, **kwargs)
