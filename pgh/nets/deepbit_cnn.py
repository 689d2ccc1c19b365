"""DeepBit's networks (Lin et al., CVPR 2016): a trunk, then a latent linear layer to `bits`
sigmoids h = F(x) in (0, 1); the binary code is b = (h >= 0.5).

Two trunks, both fed images in [-1, 1] (as `pgh.methods.base.to_network_input` makes them):
- `DeepBitCNN` (our choice, for 28-32 px images on a CPU): `stages` x [Conv 3x3 pad 1, ReLU,
  MaxPool 2], channels width -> 2 width -> ..., then Flatten -> Linear(hidden) -> ReLU (hidden=0: no
  fully connected layer, the flattened conv output is the feature). No BatchNorm, so the trunk is the
  same function in train and eval mode (DeepBit initialises the latent layer from its features).
- `VGG16FC7Trunk` (the paper's): torchvision VGG16 up to fc7 (features, avgpool, fc6, ReLU, dropout,
  fc7, ReLU, dropout: what VGG16 feeds fc8), on 3-channel images, ImageNet-normalised inside.
  Weights come from a local file; random weights only with `pretrained=False`.
"""

from __future__ import annotations

import torch
from torch import nn

from pgh.nets.dcgan import check_channels, check_positive
from pgh.nets.encoding import encode_in_eval_mode, full_precision

BACKBONES = ("cnn", "vgg16")


class DeepBitCNN(nn.Module):
    """Small CNN trunk: [B, channels, S, S] in [-1, 1] -> features [B, hidden]."""

    def __init__(
        self,
        channels: int = 1,
        image_size: int = 28,
        width: int = 32,
        hidden: int = 256,
        stages: int = 2,
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.image_size = check_positive("image_size", image_size)
        self.width = check_positive("width", width)
        if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 0:
            raise ValueError(f"hidden={hidden!r} must be an integer >= 0 (0: no fully connected layer)")
        self.hidden = hidden
        self.stages = check_positive("stages", stages)
        side = image_size // 2**stages
        if side < 1:
            raise ValueError(
                f"image_size={image_size} is too small for stages={stages} (each stage halves the side); "
                f"use image_size >= {2**stages} or fewer stages"
            )
        layers: list[nn.Module] = []
        c_in = channels
        for i in range(stages):
            c_out = width * 2**i
            layers += [
                nn.Conv2d(c_in, c_out, 3, 1, 1),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        self.convs = nn.Sequential(*layers)
        flat = c_in * side * side
        if hidden:
            self.fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(inplace=True))
        else:
            self.fc = nn.Flatten()
        self.feature_dim = hidden or flat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = (self.channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must have shape [B, {', '.join(map(str, expected))}], got {tuple(x.shape)}")
        return self.fc(self.convs(x))


class VGG16FC7Trunk(nn.Module):
    """torchvision VGG16 up to fc7: [B, 3, S, S] in [-1, 1] (S >= 32) -> fc7 activations [B, 4096]."""

    feature_dim = 4096

    def __init__(self, weights: str | None = None, pretrained: bool = True) -> None:
        super().__init__()
        from torchvision.models import vgg16

        from pgh.features.vgg import IMAGENET_MEAN, IMAGENET_STD, load_vgg16_weights, vgg16_weights_path

        # the file is checked before building the 138M-parameter network
        path = vgg16_weights_path(weights, "method.module") if pretrained else None
        model = vgg16(weights=None)
        if path is not None:
            load_vgg16_weights(model, path)
        self.features = model.features
        self.avgpool = model.avgpool
        self.classifier = nn.Sequential(*list(model.classifier.children())[:6])  # fc6 .. fc7 + dropout
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or min(x.shape[-2:]) < 32:
            raise ValueError(f"VGG16 needs images [B, 3, S, S] with S >= 32, got {tuple(x.shape)}")
        x = ((x + 1) / 2 - self.mean) / self.std  # [-1, 1] -> [0, 1] -> ImageNet-normalised
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class DeepBitNet(nn.Module):
    """trunk -> latent Linear(feature_dim, bits) -> sigmoid: h = F(x) in (0, 1)^bits."""

    def __init__(self, trunk: nn.Module, feature_dim: int, bits: int) -> None:
        super().__init__()
        self.bits = check_positive("bits", bits)
        self.trunk = trunk
        self.latent = nn.Linear(check_positive("feature_dim", feature_dim), bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(full_precision(self.latent(self.trunk(x))))

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """bool codes [N, bits] = forward(x) >= 0.5 in eval mode, `batch_size` images at a time on the
        network's device, returned on x's device; the train/eval mode is restored afterwards."""
        return encode_in_eval_mode(self, x, self.bits, 0.5, batch_size)


def build_deepbit_net(
    bits: int,
    backbone: str = "cnn",
    channels: int = 1,
    image_size: int = 28,
    width: int = 32,
    hidden: int = 256,
    stages: int = 2,
    weights: str | None = None,
    pretrained: bool = True,
) -> DeepBitNet:
    """The DeepBit network for `backbone` ("cnn" or "vgg16"; vgg16 ignores width/hidden/stages)."""
    if backbone == "cnn":
        trunk: nn.Module = DeepBitCNN(channels, image_size, width, hidden, stages)
    elif backbone == "vgg16":
        if channels != 3:
            raise ValueError(f"backbone=vgg16 needs channels=3 (grey images are repeated), got channels={channels}")
        if image_size < 32:
            raise ValueError(f"backbone=vgg16 needs image_size >= 32 for its five poolings, got {image_size}")
        trunk = VGG16FC7Trunk(weights, pretrained)
    else:
        raise ValueError(f"backbone={backbone!r} is not one of {BACKBONES}")
    return DeepBitNet(trunk, trunk.feature_dim, bits)
