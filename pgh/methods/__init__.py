"""Deep hashing methods, one LightningModule per method."""

from pgh.methods.base import DeepHasher
from pgh.methods.pgh import PGH

__all__ = ["DeepHasher", "PGH"]
