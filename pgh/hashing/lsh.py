"""Locality-sensitive hashing as binary-hashing papers run it: the sign of centred random Gaussian
projections (Charikar 2002's random hyperplanes; the PGH paper cites Datar et al. 2004, whose
p-stable scheme quantises projections into integer buckets, not bits)."""

from __future__ import annotations

import torch

from pgh.hashing.base import ShallowHasher


class LSH(ShallowHasher):
    """LSH with `bits` bits: signs of the centred features' projections on `bits` Gaussian directions
    drawn with `seed`."""

    state_names = ("mean", "projection")

    def _fit(self, x: torch.Tensor, gen: torch.Generator) -> None:
        self.mean = x.mean(0)
        self.projection = torch.randn(x.shape[1], self.bits, generator=gen, dtype=torch.float64)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.projection
