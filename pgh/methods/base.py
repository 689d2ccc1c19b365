"""What every deep method's LightningModule offers `train()`: which inputs it reads, a hook that
sees the training set once before fitting, and batched encoding to bool codes.

Training batches are `(inputs, index)`: `inputs` are uint8 images [B, C, H, W] when
`input_kind == "images"`, or float features [B, D] from the `features` group when
`input_kind == "features"`; `index` is each sample's position in the training set.
"""

from __future__ import annotations

import lightning as L
import torch

INPUT_KINDS = ("images", "features")


class DeepHasher(L.LightningModule):
    input_kind: str = "images"

    def on_before_fit(self, train_inputs: torch.Tensor, train_features: torch.Tensor) -> None:
        """Called once with the whole training set before `Trainer.fit` (e.g. to build a kNN graph)."""

    @torch.no_grad()
    def encode_inputs(self, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """bool codes [n, bits] of inputs of `input_kind`, in eval mode, batched on this device."""
        raise NotImplementedError
