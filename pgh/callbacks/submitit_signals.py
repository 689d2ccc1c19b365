"""SIGTERM back to submitit during training, for jobs of the `slurm` and `local` launchers.

submitit ignores SIGTERM (SLURM sends it before the signal that makes submitit checkpoint and requeue
the job). Lightning installs its own SIGTERM handler when training starts, ahead of submitit's, and
ends the training at the end of the batch: a requeue signal coming later found the job gone, so the
job failed instead of resuming. This callback puts submitit's handler back once Lightning's is in.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L


def under_submitit() -> bool:
    """This process is a submitit job (submitit exports SUBMITIT_EXECUTOR to its jobs)."""
    return bool(os.environ.get("SUBMITIT_EXECUTOR"))


class SubmititSignals(L.Callback):
    def __init__(self) -> None:
        self._before_fit: Any = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # setup runs before Lightning registers its signal handlers, on_train_start after
        self._before_fit = signal.getsignal(signal.SIGTERM)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._before_fit is not None:
            signal.signal(signal.SIGTERM, self._before_fit)
