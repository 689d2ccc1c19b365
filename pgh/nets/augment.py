"""Random jitter of a batch of network inputs, one draw per image: an affine part (shift, rotation,
and optionally scale and horizontal flip, one grid_sample) and an optional contrast part.

Used by PGH's hashing network (ours, `augment_*`): H trains on jittered real and synthetic images,
so it cannot reproduce initial codes that are a linear function of the pixels (ITQ+PIXEL) exactly and
has to learn codes that survive a small shift and rotation, i.e. codes of the digit rather than of its
pixels. Scale, flip and contrast are the further invariances a garment has (a wider shirt, a shoe
facing the other way, a darker coat); they are off unless asked for, and an option that is off draws
no random numbers, so the shift/rotation draws stay the same with or without the code for them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def affine(
    x: torch.Tensor,
    shift_px: torch.Tensor,
    degrees: torch.Tensor,
    scale: torch.Tensor | None = None,
    flip: torch.Tensor | None = None,
) -> torch.Tensor:
    """x [B, C, H, W] in [-1, 1], each image mirrored left-right where flip[b], enlarged by scale[b]
    (both optional), rotated by degrees[b] counter-clockwise (as displayed) about its centre and moved by
    shift_px[b] = (right, down) pixels; uncovered pixels become the background (-1)."""
    if x.dim() != 4:
        raise ValueError(f"affine expects [B, C, H, W] images, got shape {tuple(x.shape)}")
    n, _, height, width = x.shape
    if shift_px.shape != (n, 2) or degrees.shape != (n,):
        raise ValueError(
            f"shift_px must be [{n}, 2] and degrees [{n}], got {tuple(shift_px.shape)} and {tuple(degrees.shape)}"
        )
    for name, value in (("scale", scale), ("flip", flip)):
        if value is not None and value.shape != (n,):
            raise ValueError(f"{name} must be [{n}], got {tuple(value.shape)}")
    if scale is not None and not bool((scale > 0).all()):
        raise ValueError("scale must be > 0 for every image")
    angle = torch.deg2rad(degrees.to(x))
    cos, sin = torch.cos(angle), torch.sin(angle)
    # theta maps output to input coordinates in affine_grid's [-1, 1] units (one pixel = 2 / size):
    # input = Rotation · Flip · Scale⁻¹ · output + shift
    inverse_scale = 1 / scale.to(x) if scale is not None else torch.ones_like(cos)
    mirror = 1 - 2 * flip.to(x) if flip is not None else torch.ones_like(cos)
    shift_x = -shift_px[:, 0].to(x) * 2 / width
    shift_y = -shift_px[:, 1].to(x) * 2 / height
    theta = torch.stack(
        [
            torch.stack([cos * mirror * inverse_scale, -sin * inverse_scale, shift_x], 1),
            torch.stack([sin * mirror * inverse_scale, cos * inverse_scale, shift_y], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # shifted by +1 so that grid_sample's zero padding is the background value -1
    return F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


def random_affine(
    x: torch.Tensor, max_shift_px: float, max_degrees: float, max_scale: float = 0.0, flip: bool = False
) -> torch.Tensor:
    """`affine` with a shift uniform in ±max_shift_px per axis, an angle uniform in ±max_degrees, a scale
    uniform in [1 − max_scale, 1 + max_scale] and, if `flip`, a left-right mirror with probability ½,
    drawn per image from torch's global generator. Returns x itself when all are off."""
    if max_shift_px < 0 or max_degrees < 0:
        raise ValueError(f"max_shift_px and max_degrees must be >= 0, got {max_shift_px} and {max_degrees}")
    if not 0 <= max_scale < 1:
        raise ValueError(f"max_scale must be in [0, 1), got {max_scale}")
    if max_shift_px == 0 and max_degrees == 0 and max_scale == 0 and not flip:
        return x
    n = x.shape[0]
    shift = (torch.rand(n, 2, device=x.device) * 2 - 1) * max_shift_px
    degrees = (torch.rand(n, device=x.device) * 2 - 1) * max_degrees
    scale = 1 + (torch.rand(n, device=x.device) * 2 - 1) * max_scale if max_scale > 0 else None
    mirror = torch.rand(n, device=x.device) < 0.5 if flip else None
    return affine(x, shift, degrees, scale, mirror)


def random_contrast(x: torch.Tensor, max_contrast: float) -> torch.Tensor:
    """x [B, C, H, W] in [-1, 1] with each image's ink (its distance from the background -1) multiplied
    by a factor uniform in [1 − max_contrast, 1 + max_contrast], clipped to [-1, 1]. Returns x for 0."""
    if not 0 <= max_contrast < 1:
        raise ValueError(f"max_contrast must be in [0, 1), got {max_contrast}")
    if max_contrast == 0:
        return x
    factor = 1 + (torch.rand(x.shape[0], 1, 1, 1, device=x.device) * 2 - 1) * max_contrast
    return ((x + 1) * factor - 1).clamp(-1, 1)
