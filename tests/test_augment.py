"""The jitter PGH's H can train on: integer shifts, right-angle rotations and flips against torch.roll /
torch.rot90 / torch.flip, scale and rotation against torchvision's affine, the background fill, the
contrast jitter, the random versions' bounds, and the errors of misuse."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from pgh.nets.augment import affine, random_affine, random_contrast


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


def test_flip_mirrors_left_right():
    x = digit_like()
    flipped = affine(x, torch.zeros(3, 2), torch.zeros(3), flip=torch.tensor([True, False, True]))
    torch.testing.assert_close(flipped[[0, 2]], torch.flip(x[[0, 2]], dims=[3]), atol=1e-5, rtol=0)
    torch.testing.assert_close(flipped[1], x[1], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("scale", "degrees"), [(1.25, 0.0), (0.8, 0.0), (1.2, 30.0), (0.7, -20.0)])
def test_scale_and_rotation_match_torchvision(scale, degrees):
    """torchvision's affine (its angle is clockwise) as the independent reference. Away from the
    border only: where the sampling reaches outside the image, torchvision blends the fill differently."""
    x = digit_like(size=20)
    ours = affine(x, torch.zeros(3, 2), torch.full((3,), degrees), scale=torch.full((3,), scale))
    reference = torch.stack(
        [
            TF.affine(image, angle=-degrees, translate=[0, 0], scale=scale, shear=[0.0, 0.0],
                      interpolation=InterpolationMode.BILINEAR, fill=[-1.0])
            for image in x
        ]
    )  # fmt: skip
    torch.testing.assert_close(ours[..., 6:-6, 6:-6], reference[..., 6:-6, 6:-6], atol=1e-4, rtol=0)


def test_random_scale_and_flip_draw_only_when_asked():
    x = digit_like(batch=64)
    torch.manual_seed(0)
    plain = random_affine(x, 2.0, 10.0)
    after_plain = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(random_affine(x, 2.0, 10.0, 0.0, False), plain) and torch.equal(torch.rand(1), after_plain)
    flipped = random_affine(x, 0, 0, flip=True)
    mirrored = torch.tensor([torch.allclose(f, torch.flip(o, dims=[2]), atol=1e-5) for f, o in zip(flipped, x)])
    unchanged = torch.tensor([torch.allclose(f, o, atol=1e-5) for f, o in zip(flipped, x)])
    assert torch.all(mirrored ^ unchanged) and 10 < int(mirrored.sum()) < 54  # about half are mirrored
    # a scale in [0.8, 1.2] changes the ink mass by a factor in [0.64, 1.44]
    mass = lambda t: (t + 1).sum(dim=(1, 2, 3))  # noqa: E731
    ratio = mass(random_affine(x, 0, 0, max_scale=0.2)) / mass(x)
    assert ratio.min() > 0.6 and ratio.max() < 1.5 and ratio.std() > 0.05


def test_random_contrast_scales_the_ink_of_each_image_and_keeps_the_background():
    x = digit_like(batch=64) * 0.5 - 0.5  # ink in [-1, 0]: a factor <= 1.5 keeps it below 1, no clipping
    assert random_contrast(x, 0) is x
    torch.manual_seed(0)
    y = random_contrast(x, 0.5)
    assert torch.all(y[x == -1] == -1)
    ink = x > -0.9  # enough ink for a float32 ratio
    factors = [((yi + 1)[m] / (xi + 1)[m]) for xi, yi, m in zip(x, y, ink)]
    assert all(torch.allclose(f, f[0].expand_as(f), rtol=1e-4) for f in factors)  # one factor per image
    first = torch.stack([f[0] for f in factors])
    assert first.min() >= 0.5 and first.max() <= 1.5 and first.std() > 0.1
    assert random_contrast(torch.ones(2, 1, 4, 4), 0.9).max() <= 1  # clipped to the input range


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"max_scale must be in \[0, 1\)"):
        random_affine(digit_like(), 0, 0, max_scale=1.0)
    with pytest.raises(ValueError, match=r"max_contrast must be in \[0, 1\)"):
        random_contrast(digit_like(), -0.5)
    with pytest.raises(ValueError, match="scale must be > 0"):
        affine(digit_like(), torch.zeros(3, 2), torch.zeros(3), scale=torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"flip must be \[3\]"):
        affine(digit_like(), torch.zeros(3, 2), torch.zeros(3), flip=torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="max_shift_px and max_degrees must be >= 0"):
        random_affine(digit_like(), -1, 0)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        affine(torch.zeros(8, 8), torch.zeros(1, 2), torch.zeros(1))
    with pytest.raises(ValueError, match="shift_px must be"):
        affine(digit_like(), torch.zeros(2, 2), torch.zeros(3))
