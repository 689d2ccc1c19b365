"""PGH's losses as pure functions on tensors (see /work/shared/PROTOCOL.md, "The method").

With h = H(x) in (0, 1)^k, a real image x_i, a synthetic image with its code x̄_i = G(z | b_i) and a
synthetic image with another sample's code x̄_j = G(z' | b_j):

- binarisation  b = ½·sgn(h − ½) + ½            (exactly ½ maps to 1, see `binarize`)
- triplet       max(0, γk − |H(x_i) − H(x̄_j)|₁ + |H(x_i) − H(x̄_i)|₁)
- quantisation  ‖H(x_i) − b_i‖² + ‖H(x̄_i) − b̄_i‖² + ‖H(x̄_j) − b̄_j‖²
- adversarial   max_D log D(x_i | b_i) + log(1 − D(G(z_i | b_i) | b_i)); G uses the non-saturating
                −log D(G(z | b) | b).

Every per-sample loss is averaged over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NEGATIVE_MODES = ("random", "farthest")


def binarize(h: torch.Tensor) -> torch.Tensor:
    """b = ½·sgn(h − ½) + ½, as 0./1. in h's dtype, no gradient. At exactly h = ½ (where sgn gives 0
    and the formula ½) we return 1, the same rule as `HashNet.encode`."""
    return (h >= 0.5).to(h.dtype)


def _check_codes(name: str, h: torch.Tensor) -> None:
    if h.ndim != 2:
        raise ValueError(f"{name} must be 2-D [batch, bits], got shape {tuple(h.shape)}")


def triplet_loss(h_real: torch.Tensor, h_same: torch.Tensor, h_other: torch.Tensor, gamma: float) -> torch.Tensor:
    """mean_i max(0, γ·k − ‖h_real − h_other‖₁ + ‖h_real − h_same‖₁), k = bits, L1 over the bits.

    h_real = H(x_i), h_same = H(G(z | b_i)), h_other = H(G(z' | b_j)); all [B, k] in (0, 1).
    γ ∈ [0, 1] is the margin as a fraction of the largest possible L1 distance k.
    """
    for name, h in (("h_real", h_real), ("h_same", h_same), ("h_other", h_other)):
        _check_codes(name, h)
        if h.shape != h_real.shape:
            raise ValueError(f"{name} has shape {tuple(h.shape)}, expected h_real's {tuple(h_real.shape)}")
    if gamma < 0:
        raise ValueError(f"gamma={gamma!r} must be >= 0 (the margin is gamma * bits)")
    k = h_real.shape[1]
    positive = (h_real - h_same).abs().sum(1)
    negative = (h_real - h_other).abs().sum(1)
    return F.relu(gamma * k - negative + positive).mean()


def quantization_loss(*hs: torch.Tensor) -> torch.Tensor:
    """Σ over the given tensors of mean_i ‖h_i − binarize(h_i)‖² (squared L2 over the bits).

    binarize(h) carries no gradient, so each h is pulled towards its nearer end of {0, 1}.
    """
    if not hs:
        raise ValueError("quantization_loss needs at least one tensor, e.g. quantization_loss(h_real, h_same)")
    total = hs[0].new_zeros(())
    for n, h in enumerate(hs):
        _check_codes(f"hs[{n}]", h)
        total = total + (h - binarize(h)).pow(2).sum(1).mean()
    return total


def code_target_loss(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Σ over (h, b) pairs of mean_i ‖h_i − b_i‖² with given {0, 1} targets b (no gradient to b).

    PGH's `quantization_target="condition"` variant: H(x_i) and H(G(z | b_i)) are pulled towards the
    conditioning code b_i and H(G(z' | b_j)) towards b_j (the protocol's default pulls each h
    towards its own binarisation instead, see `quantization_loss`).
    """
    if not pairs:
        raise ValueError("code_target_loss needs at least one (h, b) pair")
    total = pairs[0][0].new_zeros(())
    for n, (h, b) in enumerate(pairs):
        _check_codes(f"pairs[{n}][0]", h)
        if b.shape != h.shape:
            raise ValueError(f"pairs[{n}]: target shape {tuple(b.shape)} differs from {tuple(h.shape)}")
        total = total + (h - b.detach().to(h.dtype)).pow(2).sum(1).mean()
    return total


def adversarial_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """−[mean log D(x | b) + mean log(1 − D(G(z | b) | b))] with D = sigmoid(logits):
    BCE-with-logits(real, 1) + BCE-with-logits(fake, 0), each averaged over its batch."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def adversarial_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss −mean log D(G(z | b) | b) = BCE-with-logits(fake, 1)."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def negative_codes(codes: torch.Tensor, mode: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """For each sample i, the index j ≠ i (long [B]) of the sample whose code b_j is the negative.

    - "random": a random derangement — one random cycle through the whole batch, so every sample is
      used exactly once as a negative and never for itself. Drawn with `generator` (on its device)
      when given, else with the global RNG.
    - "farthest": argmax_j≠i of the Hamming distance between codes[i] and codes[j], ties to the
      lowest index; deterministic.

    codes: bool or 0/1 [B, bits], B >= 2.
    """
    if mode not in NEGATIVE_MODES:
        raise ValueError(f"mode={mode!r} is not a negative-code mode; use one of {NEGATIVE_MODES}")
    _check_codes("codes", codes)
    batch = codes.shape[0]
    if batch < 2:
        raise ValueError(f"negative_codes needs a batch of at least 2 samples to pick j != i, got {batch}")
    if mode == "random":
        device = generator.device if generator is not None else codes.device
        order = torch.randperm(batch, generator=generator, device=device).to(codes.device)
        index = torch.empty_like(order)
        index[order] = order.roll(-1)  # order[k] -> order[k + 1]: a single cycle, no fixed points
        return index
    c = codes.float()
    distance = c @ (1 - c).T + (1 - c) @ c.T  # Hamming distance [B, B]
    distance.fill_diagonal_(-1)
    return distance.argmax(1)  # first maximum = lowest index on ties
