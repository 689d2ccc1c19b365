"""Random generator states in checkpoints: saved with every checkpoint and restored on resume, so a
run resumed at an epoch boundary (e.g. after a finished round) draws the same batch order, noise
and jitter as the uninterrupted run, and gives the same numbers; a resume that trains nothing (a
finished run) saves the states it restored, so a later extension of the run still does."""

from __future__ import annotations

import random
import warnings
from typing import Any

import lightning as L
import numpy as np
import torch


class RandomState(L.Callback):
    def __init__(self) -> None:
        # the states this run resumed from, while no batch has trained since: Lightning draws from torch's
        # generator when it sets up the data even where it then trains nothing (a finished run resumed),
        # and the checkpoint saved after fit must not carry that draw into a later extension of the run
        self._restored: dict[str, Any] | None = None

    def on_train_batch_start(self, *args: Any) -> None:
        self._restored = None

    def state_dict(self) -> dict[str, Any]:
        if self._restored is not None:
            return self._restored
        # plain tensors and lists only, so the checkpoint still loads with weights_only=True
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, python_state, gauss_next = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            # this process's own device only: under DDP rank 0 writes the checkpoint, and its view of the
            # other devices is their untouched seed state; every rank draws the same stream (one seed)
            "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_available() else [],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
            "python": [version, list(python_state), gauss_next],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict
        torch.set_rng_state(state_dict["torch"])
        cuda = state_dict["cuda"]  # [the saving process's device's state]; older checkpoints: every device's
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state(cuda[0])  # into this process's device (each rank's own under DDP)
        elif cuda:
            warnings.warn(
                "the checkpoint holds a CUDA generator state and this machine has no CUDA device: the "
                "resumed run's random draws differ from the uninterrupted run's",
                stacklevel=2,
            )
        kind, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, python_state, gauss_next = state_dict["python"]
        random.setstate((version, tuple(python_state), gauss_next))
