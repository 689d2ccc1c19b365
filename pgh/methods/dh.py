"""DH, unsupervised Deep Hashing (Liong, Lu, Wang, Moulin, Zhou, CVPR 2015) on feature vectors.

A tanh MLP (`pgh.nets.mlp.HashMLP`, inputs standardised with the training set's mean/std) maps a
feature vector x (GIST by default: the run's `features` group, the paper's DH+GIST) to
h ∈ (−1, 1)^k; the binary code is b = sgn(h), stored as the bool h >= 0 (exactly 0 maps to 1).

The paper minimises, over the network weights W^m and biases c^m,

  J = ½‖B − H‖²_F − λ1/(2N)·tr(H Hᵀ) + λ2/2·Σ_m ‖W^m W^mᵀ − I‖²_F + λ3/2·Σ_m (‖W^m‖²_F + ‖c^m‖²₂)

(H = [h_1 … h_N], B = sgn(H) held fixed while stepping). Here it is minimised per mini-batch of n
samples with every data term averaged over the batch:

  J = μ·dh_quantization_loss(h) + λ1·dh_balance_loss(h) + λ2·dh_orthogonality_loss(W)
      + λ3·dh_weight_decay(W, c)

with μ = `quantization_weight`, λ1 = `balance_weight`, λ2 = `orthogonality_weight`,
λ3 = `weight_decay`. Deviations from the paper, all config values:
- the balance term is the per-bit variance over the batch, centred on the batch mean
  (`balance_centered=True`), so it rewards bits that split the data evenly; the paper's
  tr(H Hᵀ)/N is the uncentred version (it assumes zero-mean bits), `balance_centered=False`.
- the data terms are batch means (the paper's quantisation term is a sum over all N samples), so
  λ1..λ3 are not on the paper's scale (the paper: λ1 = 100, λ2 = λ3 = 0.001 for its sum form).
- the weight decay is this explicit loss term, not the optimiser's, so J can be checked by hand;
  the optimiser is Adam (the paper uses plain gradient descent with back-propagation).
- each orthogonality term uses the smaller Gram matrix of W^m ([out, in] in PyTorch): W Wᵀ when
  out <= in (orthonormal rows), else Wᵀ W (orthonormal columns), so it can reach 0.
- inputs: centred and divided by one global std (`input_norm="global"`, the covariance's shape
  kept, as PCA/ITQ see it) scaled to RMS vector norm `input_rms`, which sets how far the first
  tanh layer saturates; `input_norm="dim"` with `input_rms=None` gives plain z-scores.
- weights start orthogonal (`init`) and λ2 is large, so every layer stays near orthonormal and
  the bit-variance term acts like a (non-linear) PCA; with a weak λ2 the net is free to inflate
  its weights and find balanced but arbitrary partitions, and mAP drops below the untrained net's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pgh.methods.base import DeepHasher, check_number
from pgh.nets.mlp import INITS, NORM_MODES, HashMLP, check_hidden
from pgh.retrieval.codes import check_bits


def _check_h(h: torch.Tensor) -> None:
    if h.ndim != 2 or h.shape[0] == 0:
        raise ValueError(f"h must be 2-D [batch, bits] with batch >= 1, got shape {tuple(h.shape)}")


def dh_sign(h: torch.Tensor) -> torch.Tensor:
    """B = sgn(h) as ±1 in h's dtype, no gradient; exactly 0 maps to +1 (the code rule h >= 0)."""
    return torch.where(h.detach() >= 0, 1.0, -1.0).to(h.dtype)


def dh_quantization_loss(h: torch.Tensor) -> torch.Tensor:
    """½·‖B − H‖²_F / n = 1/(2n)·Σ_i Σ_k (b_ik − h_ik)², B = dh_sign(h) held fixed (no gradient)."""
    _check_h(h)
    return 0.5 * (dh_sign(h) - h).pow(2).sum() / h.shape[0]


def dh_balance_loss(h: torch.Tensor, centered: bool = True) -> torch.Tensor:
    """−1/(2n)·Σ_k Σ_i (h_ik − h̄_k)² = −½·Σ_k Var_batch(h_k) (biased variance), h̄_k the batch mean
    of bit k; minimising it maximises every bit's variance over the batch. With centered=False,
    h̄ = 0: −1/(2n)·tr(Hᵀ H), the paper's term (it assumes zero-mean bits)."""
    _check_h(h)
    centred = h - h.mean(0, keepdim=True) if centered else h
    return -0.5 * centred.pow(2).sum() / h.shape[0]


def dh_orthogonality_loss(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """½·Σ_m ‖G_m − I‖²_F, G_m = W_m W_mᵀ if W_m ([out, in]) has out <= in, else W_mᵀ W_m: the
    smaller Gram matrix, which is I exactly when the shorter side's vectors are orthonormal."""
    if not weights:
        raise ValueError("weights must hold at least one weight matrix")
    total = weights[0].new_zeros(())
    for i, w in enumerate(weights):
        if w.ndim != 2:
            raise ValueError(f"weights[{i}] must be a 2-D matrix, got shape {tuple(w.shape)}")
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        eye = torch.eye(gram.shape[0], dtype=w.dtype, device=w.device)
        total = total + (gram - eye).pow(2).sum()
    return 0.5 * total


def dh_weight_decay(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor]) -> torch.Tensor:
    """½·Σ_m (‖W_m‖²_F + ‖c_m‖²₂) over all weight matrices and bias vectors."""
    params = [*weights, *biases]
    if not params:
        raise ValueError("dh_weight_decay needs at least one weight or bias tensor")
    return 0.5 * sum(p.pow(2).sum() for p in params)


class DH(DeepHasher):
    """Unsupervised DH on the run's features. `in_dim=None` (the config default) builds the network
    in `on_before_fit` from the training features' width and records it in `hparams.in_dim`, so a
    checkpoint's hyper-parameters rebuild the same network (`DH.load_from_checkpoint`)."""

    input_kind = "features"
    architecture = ("in_dim", "hidden")

    def __init__(
        self,
        bits: int,
        in_dim: int | None = None,
        hidden: Sequence[int] = (256, 128),
        lr: float = 1e-3,
        quantization_weight: float = 1.0,
        balance_weight: float = 0.3,
        orthogonality_weight: float = 10.0,
        weight_decay: float = 1e-3,
        balance_centered: bool = True,
        input_norm: str = "global",
        input_rms: float | None = 7.0,
        init: str = "orthogonal",
    ) -> None:
        super().__init__()
        self.check_arguments(**self.constructor_arguments(locals()))
        hidden = check_hidden(hidden)
        self.save_hyperparameters(logger=False)  # the loggers get the whole composed config instead
        self.hparams.hidden = hidden
        self.net: HashMLP | None = None
        if in_dim is not None:
            self._build(in_dim)

    @classmethod
    def check_arguments(cls, **kwargs) -> None:
        a = cls.bind_arguments(kwargs)
        check_bits(a.bits)
        if a.in_dim is not None and (isinstance(a.in_dim, bool) or not isinstance(a.in_dim, int) or a.in_dim <= 0):
            raise ValueError(f"in_dim={a.in_dim!r} must be a positive integer or None (taken from the features)")
        check_hidden(a.hidden)
        check_number("lr", a.lr, strict=True)
        for name, value in (
            ("quantization_weight", a.quantization_weight),
            ("balance_weight", a.balance_weight),
            ("orthogonality_weight", a.orthogonality_weight),
            ("weight_decay", a.weight_decay),
        ):
            check_number(name, value)
        if a.init not in INITS:
            raise ValueError(f"init={a.init!r} is not one of {INITS}")
        if a.input_norm not in NORM_MODES:
            raise ValueError(f"input_norm={a.input_norm!r} is not one of {NORM_MODES}")
        if a.input_rms is not None:
            check_number("input_rms", a.input_rms, strict=True)

    def _build(self, in_dim: int) -> None:
        hp = self.hparams
        self.net = HashMLP(in_dim, hp.hidden, hp.bits, init=hp.init)
        self.hparams.in_dim = in_dim

    def _require_net(self) -> HashMLP:
        if self.net is None:
            raise RuntimeError("DH has no network yet: give in_dim, or call on_before_fit with the training features")
        return self.net

    def on_before_fit(
        self, train_inputs: torch.Tensor, train_features: torch.Tensor, device: torch.device | str = "cpu"
    ) -> None:
        """Build the network if in_dim was not given, and store the training features' mean/std."""
        if train_inputs.ndim != 2:
            raise ValueError(f"DH trains on feature vectors [n, dim], got inputs of shape {tuple(train_inputs.shape)}")
        if self.net is None:
            self._build(int(train_inputs.shape[1]))
        elif train_inputs.shape[1] != self.net.in_dim:
            raise ValueError(
                f"in_dim={self.net.in_dim} but the training features have {train_inputs.shape[1]} dimensions"
            )
        self.net.set_input_stats(train_inputs, mode=self.hparams.input_norm, rms_norm=self.hparams.input_rms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """h ∈ (−1, 1)^bits, [B, bits]."""
        return self._require_net()(x)

    @torch.no_grad()
    def encode_inputs(self, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """bool codes [n, bits] = h >= 0 of feature vectors [n, dim] (eval mode, batched), on the CPU."""
        return self._require_net().encode(self.check_inputs(inputs), batch_size=batch_size).cpu()

    def losses(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        """The four unweighted terms of J for a batch's h."""
        net = self._require_net()
        return {
            "quantization": dh_quantization_loss(h),
            "balance": dh_balance_loss(h, centered=self.hparams.balance_centered),
            "orthogonality": dh_orthogonality_loss(net.weights()),
            "weight_decay": dh_weight_decay(net.weights(), net.biases()),
        }

    def objective(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        hp = self.hparams
        return (
            hp.quantization_weight * terms["quantization"]
            + hp.balance_weight * terms["balance"]
            + hp.orthogonality_weight * terms["orthogonality"]
            + hp.weight_decay * terms["weight_decay"]
        )

    def configure_optimizers(self):
        return torch.optim.Adam(self._require_net().parameters(), lr=self.hparams.lr)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        h = self(x.float())
        terms = self.losses(h)
        loss = self.objective(terms)
        n = x.shape[0]
        self.log_losses({"loss/total": loss, **{f"loss/{k}": v for k, v in terms.items()}}, n, prog_bar=True)
        return loss
