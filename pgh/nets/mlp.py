"""A fully connected hashing network on feature vectors: in_dim -> hidden... -> bits, tanh after every
layer (the last one included), so the relaxed code is h ∈ (−1, 1)^bits and the binary code is h >= 0.

Inputs are standardised inside the network, `(x − mean) / std`, with `mean` and `std` buffers (saved
in checkpoints) that `set_input_stats` fills from the training features (per-dimension z-scores, or
one global scale; optionally to a given RMS vector norm, which sets how far the first tanh layer
saturates); until then they are 0 and 1.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from pgh.nets.encoding import encode_in_eval_mode, full_precision

INITS = ("orthogonal", "default")
NORM_MODES = ("dim", "global")


def _check_positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    return value


def check_hidden(hidden: Sequence[int]) -> list[int]:
    """The hidden layer widths as a list of positive ints (an empty list: one linear layer)."""
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise ValueError(f"hidden={hidden!r} must be a list of positive layer widths (may be empty)")  # noqa: TRY004
    return [_check_positive(f"hidden[{i}]", h) for i, h in enumerate(hidden)]


class HashMLP(nn.Module):
    """tanh MLP `in_dim -> hidden[0] -> ... -> hidden[-1] -> bits`.

    `layers` holds the `nn.Linear` layers in order (W^m is `layers[m].weight`, [out, in], and c^m its
    bias), so losses on the weights can walk them. `init="orthogonal"` gives every weight matrix
    orthonormal rows or columns (whichever are fewer) and zero biases; `"default"` keeps PyTorch's.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], bits: int, init: str = "orthogonal") -> None:
        super().__init__()
        self.in_dim = _check_positive("in_dim", in_dim)
        self.bits = _check_positive("bits", bits)
        self.hidden = check_hidden(hidden)
        if init not in INITS:
            raise ValueError(f"init={init!r} is not one of {INITS}")
        dims = [self.in_dim, *self.hidden, self.bits]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
        if init == "orthogonal":
            for layer in self.layers:
                nn.init.orthogonal_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.register_buffer("mean", torch.zeros(self.in_dim))
        self.register_buffer("std", torch.ones(self.in_dim))

    @torch.no_grad()
    def set_input_stats(
        self, features: torch.Tensor, mode: str = "dim", rms_norm: float | None = None, eps: float = 1e-6
    ) -> None:
        """Fill `mean` and `std` from the rows of `features` [n, in_dim] (float64 arithmetic).

        mode="dim": std_d = σ_d, each dimension's own standard deviation (z-scores);
        mode="global": std_d = σ_g = sqrt(mean_d σ_d²) for every d (one scale, the covariance's
        shape kept). Either way E‖(x − mean) / std‖² = in_dim; with `rms_norm` = r, std is further
        multiplied by sqrt(in_dim) / r so that the standardised vectors have RMS norm r.
        σ is clamped to >= eps, so constant dimensions are only centred.
        """
        if mode not in NORM_MODES:
            raise ValueError(f"mode={mode!r} is not one of {NORM_MODES}")
        if rms_norm is not None and not (math.isfinite(rms_norm) and rms_norm > 0):
            raise ValueError(f"rms_norm={rms_norm!r} must be a finite number > 0 or None")
        if features.ndim != 2 or features.shape[1] != self.in_dim:
            raise ValueError(f"features must be [n, {self.in_dim}], got shape {tuple(features.shape)}")
        if features.shape[0] < 2:
            raise ValueError(f"need at least 2 feature rows for mean/std, got {features.shape[0]}")
        x = features.double()
        var = x.var(0)
        std = var.sqrt() if mode == "dim" else var.mean().sqrt().expand_as(var)
        std = std.clamp_min(eps)
        if rms_norm is not None:
            std = std * math.sqrt(self.in_dim) / rms_norm
        self.mean.copy_(x.mean(0).to(self.mean))
        self.std.copy_(std.to(self.std))

    def weights(self) -> list[torch.Tensor]:
        return [layer.weight for layer in self.layers]

    def biases(self) -> list[torch.Tensor]:
        return [layer.bias for layer in self.layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """h = tanh(W^M ... tanh(W^1 x̂ + c^1) ... + c^M) ∈ (−1, 1), [B, bits]; x̂ the standardised x."""
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"x must be [B, {self.in_dim}], got shape {tuple(x.shape)}")
        h = (x.to(self.mean.dtype) - self.mean) / self.std
        for layer in self.layers:
            h = torch.tanh(full_precision(layer(h)))
        return h

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """bool codes [N, bits] = forward(x) >= 0 (exactly 0 maps to 1), `batch_size` rows at a time
        on the network's device, in eval mode (restored afterwards); returned on x's device."""
        return encode_in_eval_mode(self, x, self.bits, 0, batch_size)
