"""Raw pixels scaled to [0, 1] and flattened: the paper's PIXEL features."""

from __future__ import annotations

import torch

from pgh.features.base import FeatureExtractor


class PixelFeatures(FeatureExtractor):
    def extract(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1).float() / 255.0
