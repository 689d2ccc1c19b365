"""Spectral hashing (Weiss, Torralba & Fergus 2008), as in the authors' trainSH.m / compressSH.m.

PCA to min(bits, dim) dimensions; fit a box [mn, mx] to the projected training data; enumerate the
one-dimensional Laplacian eigenfunctions cos(k * pi * (v - mn) / R) of that box, order them by
eigenvalue (k * pi / R)^2, skip the constant one and keep the next `bits`; each bit is the sign of
one eigenfunction. Training uses no randomness: `seed` is accepted for the common interface.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pgh.hashing.base import ShallowHasher, pca


class SH(ShallowHasher):
    """Spectral hashing with `bits` bits (deterministic: `seed` is not used)."""

    state_names = ("mean", "pcs", "mn", "modes", "omegas")

    def _fit(self, x: torch.Tensor, gen: torch.Generator) -> None:
        npca = min(self.bits, x.shape[1])
        self.mean, self.pcs, _ = pca(x, npca)
        v = (x - self.mean) @ self.pcs
        eps = float(np.finfo(np.float64).eps)  # MATLAB's eps
        self.mn = v.min(0).values - eps
        mx = v.max(0).values + eps
        r = mx - self.mn
        max_mode = torch.ceil((self.bits + 1) * r / r.max()).long().tolist()
        # one row per eigenfunction: row 0 is the constant mode, then modes 1..maxMode_i - 1 of dim i
        modes = torch.zeros(sum(max_mode) - len(max_mode) + 1, npca, dtype=torch.float64)
        row = 1
        for i, m in enumerate(max_mode):
            modes[row : row + m - 1, i] = torch.arange(1, m, dtype=torch.float64)
            row += m - 1
        omegas = modes * (math.pi / r)
        eigval = -(omegas**2).sum(1)
        # smallest omega^2 first (MATLAB's sort is stable, so ties keep table order)
        order = torch.sort(-eigval, stable=True).indices
        self.modes = modes[order[1 : self.bits + 1]]
        self.omegas = self.modes * (math.pi / r)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        u = (x - self.mean) @ self.pcs - self.mn
        # one bit at a time keeps memory at [n, npca] rather than [n, bits, npca]
        return torch.stack([torch.sin(u * w + math.pi / 2).prod(1) for w in self.omegas], 1)
