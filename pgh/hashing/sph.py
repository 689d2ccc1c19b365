"""Spherical hashing (Heo, Lee, He, Chang & Yoon, CVPR 2012 / TPAMI 2015).

Bit k is 1 when a point lies inside hypersphere k (Euclidean distance to pivot p_k <= radius t_k).
Each radius is the median training distance, so every sphere holds half the training points; the
pivots are moved by the mean force f_i = 1/c sum_j f_{i<-j}, f_{i<-j} = 1/2 (o_ij - m/4) / (m/4)
(p_i - p_j), until every two spheres share about a quarter of the points (o_ij ~ m/4):
mean |o_ij - m/4| <= eps_mean m/4 and std(o_ij) <= eps_std m/4 over i < j, or `max_iterations`
pivot updates. Pivots start, as in the authors' MATLAB code, as the means of 5 distinct randomly
drawn training points (of all of them when there are fewer). Codes are ranked by the spherical Hamming distance
|a xor b| / (|a and b| + 0.1) (the 0.1 as in the authors' code: codes that share no 1-bit).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch

from pgh.hashing.base import ShallowHasher

POINTS_PER_INITIAL_PIVOT = 5


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


class SpH(ShallowHasher):
    """Spherical hashing with `bits` hyperspheres, their pivots started from training points drawn
    with `seed` and moved for at most `max_iterations` updates until the overlaps meet `eps_mean` and
    `eps_std`, on all training points or `train_samples` of them. Its codes rank by the spherical
    Hamming distance (`distance = "spherical"`: `evaluate(..., distance="spherical")`)."""

    distance = "spherical"
    state_names = ("pivots", "radii")

    def __init__(
        self,
        bits: int,
        seed: int = 0,
        max_iterations: int = 100,
        eps_mean: float = 0.1,
        eps_std: float = 0.15,
        train_samples: int | None = None,
    ) -> None:
        super().__init__(bits, seed)
        if not _is_int(max_iterations) or max_iterations < 0:
            raise ValueError(f"max_iterations must be an integer >= 0, got {max_iterations!r}")
        for name, value in (("eps_mean", eps_mean), ("eps_std", eps_std)):
            if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if train_samples is not None and (not _is_int(train_samples) or train_samples < 2):
            raise ValueError(f"train_samples must be None or an integer >= 2, got {train_samples!r}")
        self.max_iterations = int(max_iterations)
        self.eps_mean, self.eps_std = float(eps_mean), float(eps_std)
        self.train_samples = None if train_samples is None else int(train_samples)

    def _fit(self, x: torch.Tensor, gen: torch.Generator) -> None:
        if self.train_samples is not None and self.train_samples < x.shape[0]:
            x = x[torch.randperm(x.shape[0], generator=gen)[: self.train_samples]]
        m, c = x.shape[0], self.bits
        per_pivot = min(POINTS_PER_INITIAL_PIVOT, m)  # all of them when fewer (train_samples may be 2)
        picks = torch.multinomial(torch.ones(c, m), per_pivot, replacement=False, generator=gen)
        pivots = x[picks].mean(1)
        target = m / 4
        upper = torch.triu_indices(c, c, offset=1)
        self.iterations_run = 0
        while True:
            dist = torch.cdist(x, pivots)  # [m, c]
            radii = dist.median(0).values  # lower median: ceil(m / 2) points inside each sphere
            inside = (dist <= radii).double()
            overlap = inside.T @ inside  # o_ij: points inside both sphere i and sphere j
            pairs = overlap[upper[0], upper[1]]
            self.overlap_mean = float((pairs - target).abs().mean())
            self.overlap_std = float(pairs.std(correction=0))
            converged = self.overlap_mean <= self.eps_mean * target and self.overlap_std <= self.eps_std * target
            if converged or self.iterations_run == self.max_iterations:
                break
            alpha = 0.5 * (overlap - target) / target
            alpha.fill_diagonal_(0.0)
            # p_i += 1/c sum_j alpha_ij (p_i - p_j), the paper's mean force (the j = i term is 0)
            pivots = pivots + (alpha.sum(1, keepdim=True) * pivots - alpha @ pivots) / c
            self.iterations_run += 1
        self.converged = converged
        self.pivots, self.radii = pivots, radii

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cdist(x, self.pivots) <= self.radii
