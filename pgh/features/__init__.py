"""Image features for the shallow hashers: raw pixels, GIST, VGG16 fc7 (with an on-disk cache)."""

from pgh.features.base import FeatureExtractor
from pgh.features.cache import cached_features
from pgh.features.gist import GistFeatures
from pgh.features.pixels import PixelFeatures
from pgh.features.vgg import VGG16FC7Features

__all__ = ["FeatureExtractor", "GistFeatures", "PixelFeatures", "VGG16FC7Features", "cached_features"]
