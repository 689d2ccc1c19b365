"""The shallow-hasher interface: `fit(train_features)` then `encode(features) -> bool [n, bits]`;
`state_dict()` / `load_state_dict()` carry a fitted hasher to another process (pgh-train writes
`hasher.pt` in every shallow run, which `pgh-index` codes new images with)."""

from __future__ import annotations

import importlib
import os

import numpy as np
import torch

from pgh.io import atomic_path
from pgh.retrieval.codes import check_bits


class ShallowHasher:
    """Base class. Subclasses implement `_fit`, and `_project` (real values whose sign is the code) or,
    for codes that are not signs of a projection (SpH's distances to its centres), `_encode`."""

    #: distance the hasher's codes are ranked by ("hamming" or "spherical")
    distance: str = "hamming"
    #: the tensors `fit` sets and `encode` reads: what `state_dict` saves
    state_names: tuple[str, ...] = ()

    def __init__(self, bits: int, seed: int = 0) -> None:
        self.bits = check_bits(bits)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
            raise ValueError(f"seed={seed!r} must be a whole number in 0..2**32 - 1 (as pgh-train's seed)")
        self.seed = int(seed)
        self.fitted = False

    def check_width(self, width: int) -> None:
        """Refuse features of this width before they are computed, where the hasher cannot fit them
        (ITQ's PCA needs as many dimensions as bits); the others take any width."""

    def fit(self, features: torch.Tensor | np.ndarray) -> ShallowHasher:
        """Fit on training features [n, dim] (a tensor on any device, a NumPy array or nested lists of
        numbers; computed in float64 on the CPU); returns self."""
        x = self._check(features)
        if x.shape[0] < 2:
            raise ValueError(f"{type(self).__name__}.fit needs at least 2 training samples, got {x.shape[0]}")
        self.dim = x.shape[1]
        self._fit(x, torch.Generator(device="cpu").manual_seed(self.seed))
        self.fitted = True
        return self

    def encode(self, features: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Codes of features [n, dim] (the width it was fitted on): bool [n, bits] on the CPU, True where
        a bit is 1 (`pgh.retrieval.pack_codes` packs them into uint8 [n, bits / 8])."""
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(train_features) first")
        x = self._check(features)
        if x.shape[1] != self.dim:
            raise ValueError(f"{type(self).__name__} was fitted on {self.dim}-d features, got {x.shape[1]}-d")
        return self._encode(x)

    def state_dict(self) -> dict:
        """The fitted hasher: its class, bits, seed, input dimension and `state_names` tensors (plain types
        only, so torch.load(weights_only=True) reads it)."""
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: there is no state to save")
        tensors = {name: getattr(self, name) for name in self.state_names}
        name, bits, seed, dim = type(self).__name__, self.bits, self.seed, self.dim
        # the module, so that load_hasher finds a hasher of the user's own beside the registry's
        state = {"hasher": name, "module": type(self).__module__}
        return {**state, "bits": bits, "seed": seed, "dim": dim, "tensors": tensors}

    def load_state_dict(self, state: dict) -> ShallowHasher:
        """Make this hasher the fitted one `state` describes (from `state_dict`); returns self."""
        name = state.get("hasher")
        if name != type(self).__name__:
            raise ValueError(f"the state was saved by {name}, not by {type(self).__name__}")
        if state["bits"] != self.bits:
            raise ValueError(f"the state has {state['bits']} bits, this {name} has {self.bits}")
        missing = sorted(set(self.state_names) - set(state["tensors"]))
        if missing:
            raise ValueError(f"the {name} state lacks {', '.join(missing)}")
        for tensor_name in self.state_names:
            setattr(self, tensor_name, state["tensors"][tensor_name])
        self.dim, self.fitted = int(state["dim"]), True
        return self

    def save(self, path: str | os.PathLike) -> None:
        """`state_dict()` to `path`, written atomically (load it with `load_hasher`)."""
        with atomic_path(path) as tmp:
            torch.save(self.state_dict(), tmp)

    def _check(self, features: torch.Tensor | np.ndarray) -> torch.Tensor:
        array = features if isinstance(features, torch.Tensor) else np.asarray(features)
        if isinstance(array, np.ndarray) and array.dtype.kind not in "biuf":
            raise TypeError(f"features must be numbers (a float [n, dim] array or tensor), got {array.dtype}")
        x = torch.as_tensor(array).cpu()  # the hashers fit and code on the CPU
        if x.is_complex():
            raise TypeError(f"features must be real numbers (a float [n, dim] array or tensor), got {x.dtype}")
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


def load_hasher(path: str | os.PathLike) -> ShallowHasher:
    """The fitted hasher that `ShallowHasher.save` wrote to `path`, ready to encode."""
    from pgh.hashing import HASHERS  # the registry imports this module

    classes = {cls.__name__: cls for cls in HASHERS.values()}
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # unpickling, zip or format errors, each with its own type
        raise ValueError(
            f"{path} is not a saved shallow hasher (not a PyTorch file: {type(error).__name__}); a shallow run "
            "writes its hasher.pt"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("hasher"), str):
        raise ValueError(f"{path} is not a saved shallow hasher (one of {', '.join(classes)}, or a ShallowHasher's)")
    name, module = state["hasher"], state.get("module")
    if name not in classes and isinstance(module, str):  # a hasher of the user's own: its module must import
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError as error:
            raise ValueError(f"{path} holds a {module}.{name}, which cannot be imported here ({error})") from None
        if isinstance(found, type) and issubclass(found, ShallowHasher):
            classes[name] = found
    if name not in classes:
        raise ValueError(f"{path} is not a saved shallow hasher (one of {', '.join(classes)}, or a ShallowHasher's)")
    return classes[name](bits=state["bits"], seed=state["seed"]).load_state_dict(state)


def check_pca_width(k: int, width: int) -> None:
    if k > width:
        raise ValueError(
            f"{k} bits need at least {k} feature dimensions for PCA, features have {width}; "
            "use fewer bits or richer features"
        )


def pca(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean [d], top-k principal directions [d, k], their eigenvalues [k]) of x [n, d]."""
    check_pca_width(k, x.shape[1])
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
