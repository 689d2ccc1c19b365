"""Batched binary encoding with a network in eval mode, and the full-precision last activation, shared
by every hashing network."""

from __future__ import annotations

import torch
from torch import nn


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """`t` in float32 where autocast left it in bfloat16 or float16, else unchanged: the nets take their
    sigmoids or tanh in full precision, since a bfloat16 one saturates to exactly ±1 (zero gradient)
    from |logit| ≈ 5.6 (sigmoid) or 3.4 (tanh) on."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


@torch.no_grad()
def encode_in_eval_mode(net: nn.Module, x: torch.Tensor, bits: int, threshold: float, batch_size: int) -> torch.Tensor:
    """bool codes [N, bits] = net(x) >= threshold, `batch_size` rows at a time on the network's
    device, in eval mode (BatchNorm running statistics; the mode is restored afterwards); returned on
    x's device."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        chunks = [
            (net(x[i : i + batch_size].to(device)) >= threshold).to(x.device) for i in range(0, x.shape[0], batch_size)
        ]
    finally:
        net.train(was_training)
    return torch.cat(chunks) if chunks else torch.zeros(0, bits, dtype=torch.bool, device=x.device)
