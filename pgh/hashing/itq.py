"""Iterative quantization (Gong & Lazebnik 2011): PCA to `bits` dims, then an orthogonal rotation
learnt by alternating sign(VR) and orthogonal Procrustes for `iterations` steps."""

from __future__ import annotations

import torch

from pgh.hashing.base import ShallowHasher, check_pca_width, pca


class ITQ(ShallowHasher):
    """ITQ with `bits` bits (at most the features' width): PCA, then `iterations` rotation updates
    from a random orthogonal start drawn with `seed`."""

    state_names = ("mean", "pcs", "rotation")

    def __init__(self, bits: int, iterations: int = 50, seed: int = 0) -> None:
        super().__init__(bits, seed)
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise ValueError(f"iterations must be a whole number >= 0, got {iterations!r}")
        self.iterations = iterations

    def check_width(self, width: int) -> None:
        check_pca_width(self.bits, width)

    def _fit(self, x: torch.Tensor, gen: torch.Generator) -> None:
        self.mean, self.pcs, _ = pca(x, self.bits)
        v = (x - self.mean) @ self.pcs
        rotation, _ = torch.linalg.qr(torch.randn(self.bits, self.bits, generator=gen, dtype=torch.float64))
        self.quantization_loss = []
        for _ in range(self.iterations):
            b = torch.where(v @ rotation >= 0, 1.0, -1.0).to(v)
            self.quantization_loss.append(float(((b - v @ rotation) ** 2).sum()))
            u_b, _, u_a_t = torch.linalg.svd(b.T @ v)  # B^T V = U_B S U_A^T
            rotation = u_a_t.T @ u_b.T
        self.rotation = rotation

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.pcs @ self.rotation
