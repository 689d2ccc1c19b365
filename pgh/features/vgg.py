"""VGG16 fc7 activations (4096-d), the deep features of the paper's "+VGG" rows.

Weights come from a local file (`weights`) or torchvision's cache; nothing is downloaded. Random
weights are used only when asked for with `pretrained=False`: a missing weights file is an error.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from pgh.features.base import FeatureExtractor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_FILE = "vgg16-397923af.pth"


def default_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE


class VGG16FC7Features(FeatureExtractor):
    def __init__(
        self,
        weights: str | None = None,
        pretrained: bool = True,
        image_size: int = 224,
        batch_size: int = 64,
        device: str = "auto",
    ) -> None:
        super().__init__(batch_size, device)
        from torchvision.models import vgg16

        if image_size < 32:
            raise ValueError(f"image_size must be >= 32 for VGG16's five poolings, got {image_size}")
        self.image_size = image_size
        model = vgg16(weights=None)
        if pretrained:
            path = Path(weights).expanduser() if weights else default_weights_path()
            if not path.is_file():
                raise FileNotFoundError(
                    f"VGG16 weights not found at {path}. Copy torchvision's {TORCHVISION_FILE} there "
                    "(or set features.weights=PATH); features.pretrained=false uses random weights."
                )
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        # fc7 = the output of the second fully connected layer after its ReLU (classifier[:5])
        self.model = (
            torch.nn.Sequential(
                model.features, model.avgpool, torch.nn.Flatten(1), *list(model.classifier.children())[:5]
            )
            .eval()
            .to(self.device)
        )
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"VGG16 needs 1- or 3-channel images, got {x.shape[1]} channels")
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return self.model((x - self.mean) / self.std)
