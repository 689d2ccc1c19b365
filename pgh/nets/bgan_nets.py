"""BGAN's generator and discriminator (Song et al., AAAI 2018), DCGAN-style like `pgh.nets.dcgan`.

BGAN's generator is a decoder of the binary code alone (no noise z): G(b) with b in {-1, +1}^bits
(or its relaxation in [-1, 1] during training). Its discriminator is unconditional: D(x) -> logit, and
D's last conv stage doubles as the feature space of the content (feature-matching) loss.
The encoder E is `pgh.nets.HashNet` (its `logits` are E's pre-activations).

Layouts (base grid s0, stages n) and the conv blocks are those of `pgh.nets.dcgan`.
"""

from __future__ import annotations

import torch
from torch import nn

from pgh.nets.dcgan import (
    NORMS,
    apply_spectral_norm,
    check_channels,
    check_positive,
    conv_stages,
    dcgan_init,
    layout,
)


class CodeGenerator(nn.Module):
    """G(b): b [B, bits] (values in [-1, 1]) -> Linear -> base grid -> (n - 1) x [ConvT 4/2/1, BN,
    ReLU] -> ConvT 4/2/1 -> Tanh; images in [-1, 1] of shape [B, channels, image_size, image_size]."""

    def __init__(self, bits: int, channels: int = 1, image_size: int = 28, width: int = 64) -> None:
        super().__init__()
        self.bits = check_positive("bits", bits)
        self.channels = check_channels(channels)
        self.width = check_positive("width", width)
        self.image_size = image_size
        self.base, stages = layout(image_size)
        self.base_channels = width * 2 ** (stages - 1)
        self.project = nn.Linear(bits, self.base_channels * self.base**2, bias=False)
        self.project_norm = nn.Sequential(nn.BatchNorm2d(self.base_channels), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        c_in = self.base_channels
        for _ in range(stages - 1):
            c_out = c_in // 2
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
            c_in = c_out
        layers += [nn.ConvTranspose2d(c_in, channels, 4, 2, 1), nn.Tanh()]
        self.upsample = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, b: torch.Tensor) -> torch.Tensor:
        if b.ndim != 2 or b.shape[1] != self.bits:
            raise ValueError(f"code b must have shape [B, {self.bits}], got {tuple(b.shape)}")
        x = self.project(b).view(-1, self.base_channels, self.base, self.base)
        return self.upsample(self.project_norm(x))


class ImageDiscriminator(nn.Module):
    """Unconditional D(x): n conv stages -> phi(x) [B, F] (`features`) -> Linear -> logit [B].

    `norm="batch"` (DCGAN): BatchNorm on every conv stage but the first; `norm="spectral"`: no
    BatchNorm, spectral norm on every conv and linear layer.
    """

    def __init__(self, channels: int = 1, image_size: int = 28, width: int = 64, norm: str = "batch") -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm={norm!r} is not supported; use one of {NORMS}")
        self.channels = check_channels(channels)
        self.width = check_positive("width", width)
        self.image_size = image_size
        base, stages = layout(image_size)
        self.feature_dim = width * 2 ** (stages - 1) * base**2
        self.convs = conv_stages(channels, width, stages, batch_norm=norm == "batch")
        self.linear = nn.Linear(self.feature_dim, 1)
        dcgan_init(self)
        if norm == "spectral":
            apply_spectral_norm(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """phi(x): the flattened output of the last conv stage, [B, F] (the content loss's features)."""
        expected = (self.channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must have shape [B, {', '.join(map(str, expected))}], got {tuple(x.shape)}")
        return self.convs(x).flatten(1)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """Logits [B] (no sigmoid) that x is real; with `return_features`, (logits, phi(x))."""
        phi = self.features(x)
        logits = self.linear(phi).squeeze(1)
        return (logits, phi) if return_features else logits
