"""VGG16 fc7 activations (4096-d), the deep features of the paper's "+VGG" rows.

Weights come from a local file (`weights`) or torchvision's cache; nothing is downloaded. Random
weights (drawn from `seed`) are used only when asked for with `pretrained=False`: a missing weights
file is an error.
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


def vgg16_weights_path(weights: str | None, config_prefix: str) -> Path:
    """The weights file to load (`weights`, or torchvision's cache), which must exist; `config_prefix`
    (e.g. "features") names the config keys in the error."""
    path = Path(weights).expanduser() if weights else default_weights_path()
    if not path.is_file():
        where = "is a directory, not a file" if path.is_dir() else "not found"
        raise FileNotFoundError(
            f"VGG16 weights {where}: {path}. Copy torchvision's {TORCHVISION_FILE} there (or set "
            f"{config_prefix}.weights=PATH of that file); {config_prefix}.pretrained=false uses random weights."
        )
    return path


def load_vgg16_weights(model: torch.nn.Module, path: Path) -> None:
    """torchvision's VGG16 weights from `path` into `model`, with an error naming the file when it is no
    PyTorch weights file or holds another network's weights (torch's own lists every key)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling, zip or format errors, each with its own type
        raise ValueError(
            f"{path} is not a PyTorch weights file ({type(error).__name__}); give torchvision's {TORCHVISION_FILE}"
        ) from None
    expected = model.state_dict()
    if not isinstance(state, dict) or set(state) != set(expected):
        keys = set(state) if isinstance(state, dict) else set()
        missing, extra = sorted(set(expected) - keys), sorted(keys - set(expected))
        raise ValueError(
            f"{path} does not hold torchvision's VGG16 weights ({len(missing)} of its {len(expected)} tensors missing, "
            f"e.g. {missing[:2]}; {len(extra)} others, e.g. {extra[:2]}); give torchvision's {TORCHVISION_FILE}"
        )
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        raise ValueError(f"{path}: {len(wrong)} tensors have other shapes than VGG16's, e.g. {wrong[0]}")
    model.load_state_dict(state)


class VGG16FC7Features(FeatureExtractor):
    def __init__(
        self,
        weights: str | None = None,
        pretrained: bool = True,
        image_size: int = 224,
        batch_size: int = 64,
        device: str = "auto",
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, device)
        from torchvision.models import vgg16

        if image_size < 32:
            raise ValueError(f"image_size must be >= 32 for VGG16's five poolings, got {image_size}")
        self.image_size = image_size
        path = vgg16_weights_path(weights, "features") if pretrained else None  # before building the network
        self.weights_file = path
        self.seed = seed
        if path is not None:
            # the random initialisation is overwritten, but it draws from the caller's generator as it
            # always did, so the numbers of runs that follow (a deep method's init) stay what they were
            model = vgg16(weights=None)
            load_vgg16_weights(model, path)
        else:
            with torch.random.fork_rng(devices=[]):  # random weights from `seed`, the caller's stream untouched
                torch.manual_seed(seed)
                model = vgg16(weights=None)
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

    def cache_identity(self) -> dict:
        """The weights file by path, size and modification time (a file replaced under the same name
        gives a new key), or the seed of random weights."""
        identity = super().cache_identity()
        if self.weights_file is None:
            return {**identity, "random_weights_seed": self.seed}
        stat = self.weights_file.stat()
        return {
            **identity,
            "weights": str(self.weights_file.resolve()),
            "size": stat.st_size,
            "mtime": stat.st_mtime_ns,
        }

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"VGG16 needs 1- or 3-channel images, got {x.shape[1]} channels")
        x = F.interpolate(
            x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True
        )
        return self.model((x - self.mean) / self.std)
