"""Deep hashing methods, one LightningModule per file, over the `DeepHasher` base."""

from pgh.methods.base import DeepHasher
from pgh.methods.bgan import BGAN
from pgh.methods.deepbit import DeepBit
from pgh.methods.dh import DH
from pgh.methods.pgh import PGH

__all__ = ["BGAN", "DH", "PGH", "DeepBit", "DeepHasher"]
