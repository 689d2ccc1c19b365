"""Deep hashing methods, one LightningModule per method."""

from pgh.methods.pgh import PGH

__all__ = ["PGH"]
