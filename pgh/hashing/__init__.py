"""Shallow hashers with `fit(train_features)` / `encode(features) -> bool [n, bits]`."""

from pgh.hashing.base import ShallowHasher, load_hasher
from pgh.hashing.itq import ITQ
from pgh.hashing.lsh import LSH
from pgh.hashing.sh import SH
from pgh.hashing.sph import SpH

HASHERS = {"lsh": LSH, "itq": ITQ, "sh": SH, "sph": SpH}

__all__ = ["HASHERS", "ITQ", "LSH", "SH", "ShallowHasher", "SpH", "load_hasher"]
