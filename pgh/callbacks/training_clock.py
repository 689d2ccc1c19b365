"""Training time summed over every attempt of a run: saved in each checkpoint and restored on resume,
so `train_seconds` in metrics.json is the run's whole training time, not only the last attempt's
(a resumed, requeued or reloaded finished run would otherwise report seconds)."""

from __future__ import annotations

import time
from typing import Any

import lightning as L


class TrainingClock(L.Callback):
    def __init__(self) -> None:
        self.earlier_seconds = 0.0  # earlier attempts, up to the checkpoint this one resumed from
        self.started: float | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Earlier attempts' training seconds plus this attempt's so far."""
        return self.earlier_seconds + (time.perf_counter() - self.started if self.started is not None else 0.0)

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.earlier_seconds = float(state_dict["seconds"])
