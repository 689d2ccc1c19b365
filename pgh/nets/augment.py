"""Random small affine jitter (shift + rotation) of a batch of network inputs, one draw per image.

Used by PGH's hashing network (ours, `augment_shift` / `augment_degrees`): H trains on jittered real
and synthetic images, so it cannot reproduce initial codes that are a linear function of the pixels
(ITQ+PIXEL) exactly and has to learn codes that survive a small shift and rotation, i.e. codes of the
digit rather than of its pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def affine(x: torch.Tensor, shift_px: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """x [B, C, H, W] in [-1, 1], each image moved by shift_px[b] = (right, down) pixels and rotated by
    degrees[b] counter-clockwise (as displayed) about its centre; uncovered pixels become the background (-1)."""
    if x.dim() != 4:
        raise ValueError(f"affine expects [B, C, H, W] images, got shape {tuple(x.shape)}")
    n, _, height, width = x.shape
    if shift_px.shape != (n, 2) or degrees.shape != (n,):
        raise ValueError(
            f"shift_px must be [{n}, 2] and degrees [{n}], got {tuple(shift_px.shape)} and {tuple(degrees.shape)}"
        )
    angle = torch.deg2rad(degrees.to(x))
    cos, sin = torch.cos(angle), torch.sin(angle)
    # theta maps output to input coordinates in affine_grid's [-1, 1] units (one pixel = 2 / size)
    shift_x = -shift_px[:, 0].to(x) * 2 / width
    shift_y = -shift_px[:, 1].to(x) * 2 / height
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # shifted by +1 so that grid_sample's zero padding is the background value -1
    return F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


def random_affine(x: torch.Tensor, max_shift_px: float, max_degrees: float) -> torch.Tensor:
    """`affine` with a shift uniform in ±max_shift_px per axis and an angle uniform in ±max_degrees,
    drawn per image from torch's global generator. Returns x itself for 0, 0."""
    if max_shift_px < 0 or max_degrees < 0:
        raise ValueError(f"max_shift_px and max_degrees must be >= 0, got {max_shift_px} and {max_degrees}")
    if max_shift_px == 0 and max_degrees == 0:
        return x
    n = x.shape[0]
    shift = (torch.rand(n, 2, device=x.device) * 2 - 1) * max_shift_px
    degrees = (torch.rand(n, device=x.device) * 2 - 1) * max_degrees
    return affine(x, shift, degrees)
