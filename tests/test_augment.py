"""The affine jitter PGH's H can train on: integer shifts and right-angle rotations against torch.roll /
torch.rot90, the background fill, the random version's bounds, and the errors of misuse."""

from __future__ import annotations

import pytest
import torch

from pgh.nets.augment import affine, random_affine


def digit_like(batch: int = 3, size: int = 12, seed: int = 0) -> torch.Tensor:
    """Background -1 with random strokes kept 3 px away from the border (so shifts lose nothing)."""
    x = torch.full((batch, 1, size, size), -1.0)
    inner = torch.rand(batch, 1, size - 6, size - 6, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    x[:, :, 3:-3, 3:-3] = inner
    return x


def test_integer_shift_equals_roll():
    x = digit_like()
    moved = affine(x, torch.tensor([[2.0, -1.0]] * 3), torch.zeros(3))
    expected = torch.roll(x, shifts=(-1, 2), dims=(2, 3))  # 1 px up, 2 px right
    torch.testing.assert_close(moved, expected, atol=1e-5, rtol=0)


def test_right_angle_rotation_equals_rot90_and_zero_is_identity():
    x = digit_like()
    rotated = affine(x, torch.zeros(3, 2), torch.full((3,), 90.0))
    torch.testing.assert_close(rotated, torch.rot90(x, 1, (2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(affine(x, torch.zeros(3, 2), torch.zeros(3)), x, atol=1e-5, rtol=0)


def test_shifted_out_pixels_become_background():
    x = torch.ones(1, 1, 8, 8)
    moved = affine(x, torch.tensor([[3.0, 0.0]]), torch.zeros(1))
    assert torch.all(moved[..., :3] == -1) and torch.allclose(moved[..., 3:], torch.ones(1, 1, 8, 5))


def test_random_affine_is_off_at_zero_and_bounded_otherwise():
    x = digit_like(batch=64)
    assert random_affine(x, 0, 0) is x
    torch.manual_seed(0)
    jittered = random_affine(x, 2.0, 10.0)
    assert jittered.shape == x.shape and jittered.min() >= -1 - 1e-6 and jittered.max() <= 1 + 1e-6
    assert not torch.allclose(jittered, x)
    # a 2 px / 10 degree jitter keeps the strokes' mass close to where it was
    mass = lambda t: (t + 1).sum(dim=(1, 2, 3))  # noqa: E731
    torch.testing.assert_close(mass(jittered), mass(x), rtol=0.1, atol=0)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="max_shift_px and max_degrees must be >= 0"):
        random_affine(digit_like(), -1, 0)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        affine(torch.zeros(8, 8), torch.zeros(1, 2), torch.zeros(1))
    with pytest.raises(ValueError, match="shift_px must be"):
        affine(digit_like(), torch.zeros(2, 2), torch.zeros(3))
