"""The shallow-hasher interface: `fit(train_features)` then `encode(features) -> bool [n, bits]`."""

from __future__ import annotations

import torch

from pgh.retrieval.codes import check_bits


class ShallowHasher:
    """Base class. Subclasses implement `_fit` and `_project` (real values whose sign is the code)."""

    #: distance the hasher's codes are ranked by ("hamming" or "spherical")
    distance: str = "hamming"

    def __init__(self, bits: int, seed: int = 0) -> None:
        self.bits = check_bits(bits)
        self.seed = seed
        self.fitted = False

    def fit(self, features: torch.Tensor) -> ShallowHasher:
        x = self._check(features)
        if x.shape[0] < 2:
            raise ValueError(f"{type(self).__name__}.fit needs at least 2 training samples, got {x.shape[0]}")
        self.dim = x.shape[1]
        self._fit(x, torch.Generator(device="cpu").manual_seed(self.seed))
        self.fitted = True
        return self

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(train_features) first")
        x = self._check(features)
        if x.shape[1] != self.dim:
            raise ValueError(f"{type(self).__name__} was fitted on {self.dim}-d features, got {x.shape[1]}-d")
        return self._encode(x)

    def _check(self, features: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(features)
        if x.ndim != 2:
            raise ValueError(f"features must be 2-D [n, dim], got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("features contain NaN or inf")
        return x.double()

    def _fit(self, x: torch.Tensor, gen: torch.Generator) -> None:
        raise NotImplementedError

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._project(x) > 0

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bits={self.bits}, seed={self.seed})"


def pca(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean [d], top-k principal directions [d, k], their eigenvalues [k]) of x [n, d]."""
    if k > x.shape[1]:
        raise ValueError(
            f"{k} bits need at least {k} feature dimensions for PCA, features have {x.shape[1]}; "
            "use fewer bits or richer features"
        )
    if k > x.shape[0] - 1:  # n centred samples span at most n - 1 directions; the rest would be arbitrary
        raise ValueError(
            f"a {k}-dimensional PCA needs at least {k + 1} training samples, got {x.shape[0]}; "
            "use more training images (split.train_size) or fewer bits"
        )
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / (x.shape[0] - 1)
    eigvals, eigvecs = torch.linalg.eigh(cov)
    top = eigvals.argsort(descending=True)[:k]
    vecs = eigvecs[:, top]
    # fix each direction's sign so results do not depend on the eigen-solver's choice
    vecs = vecs * torch.where(vecs.sum(0) < 0, -1.0, 1.0).to(vecs)
    return mean, vecs, eigvals[top]
