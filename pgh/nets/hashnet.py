"""The hashing network H: image -> k sigmoids in (0, 1), the relaxed code that PGH trains.

Conv stages as in the discriminator (Conv 4/2/1, BatchNorm except the first, LeakyReLU 0.2), then a
hidden fully connected layer and a linear layer to `bits` logits. The binary code is h >= 0.5
(the same rule as `pgh.methods.pgh_losses.binarize`: exactly 0.5 maps to 1).
"""

from __future__ import annotations

import torch
from torch import nn

from pgh.nets.dcgan import check_channels, check_positive, conv_stages, dcgan_init, layout
from pgh.nets.encoding import encode_in_eval_mode, full_precision


class HashNet(nn.Module):
    def __init__(self, bits: int, channels: int = 1, image_size: int = 28, width: int = 64, hidden: int = 512) -> None:
        super().__init__()
        self.bits = check_positive("bits", bits)
        self.channels = check_channels(channels)
        self.width = check_positive("width", width)
        self.hidden = check_positive("hidden", hidden)
        self.image_size = image_size
        base, stages = layout(image_size)
        feature_dim = width * 2 ** (stages - 1) * base**2
        self.convs = conv_stages(channels, width, stages)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(feature_dim, hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, bits),
        )
        dcgan_init(self)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        expected = (self.channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must have shape [B, {', '.join(map(str, expected))}], got {tuple(x.shape)}")
        return self.head(self.convs(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Bit probabilities h = sigmoid(logits) in (0, 1), [B, bits], in float32 under autocast too: a
        bfloat16 sigmoid is exactly 1 from a logit of about 5.6 on, where its gradient vanishes."""
        return torch.sigmoid(full_precision(self.logits(x)))

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Binary codes bool [N, bits] = forward(x) >= 0.5, in eval mode (BatchNorm running stats),
        `batch_size` images at a time on the network's device; returned on x's device. The network's
        train/eval mode is restored afterwards."""
        return encode_in_eval_mode(self, x, self.bits, 0.5, batch_size)
