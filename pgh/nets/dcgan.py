"""DCGAN-style hash-conditioned generator G(z | b) and discriminator D(x | b) (Radford et al. 2016).

Layout for an S-px image: a base grid of s0 x s0 and n stride-2 stages (s0 * 2^n = S):
28 px -> 7 x 7, n = 2;  32 px -> 4 x 4, n = 3;  64 px -> 4 x 4, n = 4.
Channels double at each downsampling stage from `width` (D, HashNet) and halve at each
upsampling stage down to `width` (G), so the base grid has width * 2^(n-1) channels.

The code b in {0,1}^bits enters as 2b - 1 in {-1, +1}: concatenated to z in G, and in D through a
projection (Miyato & Koyama 2018): logit = w . phi(x) + <embed(2b - 1), phi(x)>.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrize import is_parametrized

SUPPORTED_IMAGE_SIZES = (28, 32, 64)
_LAYOUT = {28: (7, 2), 32: (4, 3), 64: (4, 4)}  # image size -> (base grid s0, number of stages n)
NORMS = ("batch", "spectral")


def layout(image_size: int) -> tuple[int, int]:
    """(s0, n) for a supported image size."""
    if image_size not in _LAYOUT:
        raise ValueError(
            f"image_size={image_size!r} is not supported; use one of {SUPPORTED_IMAGE_SIZES} (resize the images first)"
        )
    return _LAYOUT[image_size]


def check_positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    return value


def check_channels(channels: int) -> int:
    if channels not in (1, 3):
        raise ValueError(f"channels={channels!r} is not supported; use 1 (grey) or 3 (colour)")
    return channels


def signed_code(b: torch.Tensor, bits: int, batch: int, dtype: torch.dtype) -> torch.Tensor:
    """b in {0,1} (bool or numbers) [batch, bits] -> 2b - 1 in {-1, +1}."""
    if b.shape != (batch, bits):
        raise ValueError(f"code b must have shape [{batch}, {bits}], got {tuple(b.shape)}")
    return b.to(dtype) * 2 - 1


def dcgan_init(module: nn.Module) -> nn.Module:
    """DCGAN initialisation of every submodule, in place; returns the module.

    Conv, transposed-conv and linear weights ~ N(0, 0.02) (under spectral norm: the unnormalised
    weight), batch-norm weights ~ N(1, 0.02) and fresh running statistics, all biases 0.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = m.parametrizations.weight.original if is_parametrized(m, "weight") else m.weight
            nn.init.normal_(weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):  # SyncBatchNorm (DDP) too
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
            m.reset_running_stats()
    return module


def conv_stages(channels: int, width: int, stages: int, batch_norm: bool = True) -> nn.Sequential:
    """`stages` x [Conv2d(4, stride 2, pad 1), BatchNorm (not on the first), LeakyReLU(0.2)],
    channels -> width -> 2 width -> ... -> width * 2^(stages-1); each stage halves the side."""
    layers: list[nn.Module] = []
    c_in = channels
    for i in range(stages):
        c_out = width * 2**i
        norm = batch_norm and i > 0
        layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not norm))
        if norm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        c_in = c_out
    return nn.Sequential(*layers)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation on every conv and linear weight of `module`."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.utils.parametrizations.spectral_norm(m)
    return module


class Generator(nn.Module):
    """G(z | b): [z, 2b - 1] -> Linear -> base grid -> (n - 1) x [ConvT 4/2/1, BN, ReLU]
    -> ConvT 4/2/1 -> Tanh.

    Outputs images in [-1, 1] of shape [B, channels, image_size, image_size].
    """

    def __init__(self, bits: int, z_dim: int = 64, channels: int = 1, image_size: int = 28, width: int = 64) -> None:
        super().__init__()
        self.bits = check_positive("bits", bits)
        self.z_dim = check_positive("z_dim", z_dim)
        self.channels = check_channels(channels)
        self.width = check_positive("width", width)
        self.image_size = image_size
        self.base, stages = layout(image_size)
        self.base_channels = width * 2 ** (stages - 1)
        self.project = nn.Linear(z_dim + bits, self.base_channels * self.base**2, bias=False)
        self.project_norm = nn.Sequential(nn.BatchNorm2d(self.base_channels), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        c_in = self.base_channels
        for _ in range(stages - 1):
            c_out = c_in // 2
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(True),
            ]
            c_in = c_out
        layers += [nn.ConvTranspose2d(c_in, channels, 4, 2, 1), nn.Tanh()]
        self.upsample = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [B, {self.z_dim}], got {tuple(z.shape)}")
        x = torch.cat([z, signed_code(b, self.bits, z.shape[0], z.dtype)], dim=1)
        x = self.project(x).view(-1, self.base_channels, self.base, self.base)
        return self.upsample(self.project_norm(x))


class Discriminator(nn.Module):
    """D(x | b): n conv stages -> features phi(x) [B, F];
    logit = linear(phi) + <embed(2b - 1), phi>.

    `norm="batch"` (default, DCGAN): BatchNorm on every conv stage but the first.
    `norm="spectral"`: no BatchNorm; spectral norm on every conv and linear layer (SN-GAN).
    """

    def __init__(
        self,
        bits: int,
        channels: int = 1,
        image_size: int = 28,
        width: int = 64,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm={norm!r} is not supported; use one of {NORMS}")
        self.bits = check_positive("bits", bits)
        self.channels = check_channels(channels)
        self.width = check_positive("width", width)
        self.image_size = image_size
        base, stages = layout(image_size)
        self.feature_dim = width * 2 ** (stages - 1) * base**2
        self.convs = conv_stages(channels, width, stages, batch_norm=norm == "batch")
        self.linear = nn.Linear(self.feature_dim, 1)
        self.embed = nn.Linear(bits, self.feature_dim, bias=False)
        dcgan_init(self)
        if norm == "spectral":
            apply_spectral_norm(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """phi(x): the flattened output of the last conv stage, [B, F]."""
        expected = (self.channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must have shape [B, {', '.join(map(str, expected))}], got {tuple(x.shape)}")
        return self.convs(x).flatten(1)

    def forward(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Logits [B] (no sigmoid) that x is a real image with code b."""
        phi = self.features(x)
        code = signed_code(b, self.bits, x.shape[0], phi.dtype)
        return self.linear(phi).squeeze(1) + (self.embed(code) * phi).sum(1)
