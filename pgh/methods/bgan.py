"""BGAN (Song, He, Gao, Shen, "Binary Generative Adversarial Networks for Image Retrieval", AAAI 2018)
as a `DeepHasher` on images.

Networks: an encoder E (image -> `bits` pre-activations h, `pgh.nets.HashNet.logits`), a binary layer
b = binarizer(h) in {-1, +1}^bits (or its relaxation in (-1, 1)), a generator G(b) -> image (no noise)
and an unconditional discriminator D(x) -> logit whose last conv stage phi(x) is the feature space of
the content loss. The retrieval code of an image is bit = [h >= 0] (= [tanh(β·h) >= 0] for any β > 0).

Per training batch of images x_i with training-set indices i (manual optimisation):
  1. D step (only when D is used, i.e. adversarial_weight > 0 or the content loss has a feature term):
     BCE(D(x), 1) + BCE(D(G(E(x))), 0).
  2. E+G step on  w_N·l_N + w_C·l_C + w_A·l_A + w_Q·l_Q  (a term with weight 0 is neither computed
     nor used):
       l_N  neighbourhood structure  mean_ij W_ij ((1/k)·B Bᵀ − S)²_ij  over the batch, W_ij = w₊ on
            similar pairs, 1 elsewhere (`neighborhood_loss`; w₊ = 1 is the paper's plain form)
       l_C  content  α_pix·mse(G(b), x) + α_feat·mse(phi(G(b)), phi(x))        (`content_loss`)
       l_A  adversarial, non-saturating  −mean log D(G(b))            (`adversarial_g_loss`)
       l_Q  quantisation  mean (tanh(h) − sgn(h))²  (not in the paper; for `sign_st`, `quantization_loss`)

The similarity S comes from the run's `features` group (GIST by default: the paper's BGAN+GIST),
computed once in `on_before_fit` as sorted kNN index lists [n, max(K1, K2)] (never an n x n matrix);
the batch's block S[index][:, index] is looked up from those lists (`batch_similarity`; these and
l_N are in `bgan_similarity.py`, which PGH's neighbourhood term shares). What S is:

  N_K(i): the K nearest neighbours of training image i by `metric` distance on the features —
          "cosine" (1 − cos, the default) or "euclidean" — i itself excluded, ties in any order.
  - mutual: S_ij = 1  iff  j ∈ N_K1(i) and i ∈ N_K1(j)
  - either: S_ij = 1  iff  j ∈ N_K1(i) or  i ∈ N_K1(j)      (the symmetrised kNN graph)
  - shared: S_ij = 1  iff  (j ∈ N_K1(i) or i ∈ N_K1(j)) and |N_K2(i) ∩ N_K2(j)| >= min_shared
            (our reconstruction of the paper's K1/K2 refinement: a K1-NN edge is kept only when the two
            images also share at least `min_shared` of their K2 nearest neighbours; it was not checked
            against the paper's text, which is not available offline)
  - released: the rule of the authors' released code (`create_S.py`): with N'(i) = {i} ∪ N_K1(i),
            take the K2 images j with the largest |N'(i) ∩ N'(j)| (i itself among them; ties by
            index) and let E(i) be the union of their N'(j); S_ij = 1 iff j ∈ E(i) or i ∈ E(j).
            A wider, less pure neighbourhood than the others (the code's K2 is 30)
  S_ii = 1 in every mode (a code's own inner product (1/k)·b·b = 1); S_ij = 0 otherwise (the released
  code sets −1 there).

With `neighbor_pairs`, every batch is doubled with one random K1-neighbour of each image (S of those
pairs is still looked up as above, so it may be 0); without it, a random batch of B images out of n
holds only about B²·K1/n similar pairs. The neighbours enter l_N (and l_Q), not l_C or l_A.

Our choices where the paper is not at hand (all config values, conf/method/bgan.yaml): the `released`
similarity above by default (7 to 13 mAP points above our `shared` reconstruction on mnist5k and
Fashion-MNIST), cosine distance, S ∈ {0, 1}, `positive_weight` > 1 and `neighbor_pairs` (without
them l_N is dominated by the dissimilar pairs and the codes shrink towards 0), separate Adam
optimisers for D, G and E, D trained whenever it is used, and `scaled_tanh` as the default binary layer
with β_t = β₀·(1 + γ·t)^p per training step (`sign_st` trains, but weaker, with `quantization_weight`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from pgh.methods.base import DeepHasher, check_adam_betas, to_network_input
from pgh.methods.bgan_similarity import (
    METRICS,
    SIMILARITY_MODES,
    batch_similarity,
    knn_indices,
    neighborhood_loss,
    released_lists,
)
from pgh.methods.pgh_losses import adversarial_d_loss, adversarial_g_loss
from pgh.nets import HashNet
from pgh.nets.bgan_nets import CodeGenerator, ImageDiscriminator
from pgh.nets.dcgan import NORMS, SUPPORTED_IMAGE_SIZES
from pgh.nets.encoding import full_precision
from pgh.retrieval.codes import check_bits

BINARIZERS = ("sign_st", "scaled_tanh")
LOSS_TERMS = ("neighborhood", "content", "adversarial", "quantization")


# ---------------------------------------------------------------------------------- binary layer


class _SignST(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u):
        return torch.where(u >= 0, torch.ones_like(u), -torch.ones_like(u))

    @staticmethod
    def backward(ctx, grad):
        return grad


def sign_st(u: torch.Tensor) -> torch.Tensor:
    """sgn(u) in {-1, +1} (sgn(0) = +1) forwards; the identity's gradient backwards (straight-through)."""
    return _SignST.apply(u)


def beta_schedule(step: int, start: float = 1.0, gamma: float = 0.005, power: float = 0.5) -> float:
    """β_t = start · (1 + gamma·t)^power at training step t (HashNet-style continuation; tanh(β·h)
    tends to sgn(h) as β grows)."""
    return float(start * (1.0 + gamma * step) ** power)


def binary_layer(h: torch.Tensor, binarizer: str, beta: float = 1.0) -> torch.Tensor:
    """The code fed to G and l_N from pre-activations h:
    "sign_st":     sgn(tanh(h)) with a straight-through gradient (∂b/∂h = 1 − tanh²(h));
    "scaled_tanh": tanh(β·h), the paper's relaxation, β growing over training (`beta_schedule`)."""
    if binarizer == "sign_st":
        return sign_st(torch.tanh(h))
    if binarizer == "scaled_tanh":
        return torch.tanh(beta * h)
    raise ValueError(f"binarizer={binarizer!r} is not one of {BINARIZERS}")


# ---------------------------------------------------------------------------------- losses


def quantization_loss(h: torch.Tensor) -> torch.Tensor:
    """l_Q = mean (tanh(h) − sgn(h))² over all entries (sgn(0) = +1): pulls the relaxed code towards
    the binary one. Not in the paper; `sign_st` needs it (our choice), or E's outputs stay near 0 and
    their signs flip between train and eval mode."""
    u = torch.tanh(h)
    return (u - torch.where(h >= 0, 1.0, -1.0).to(u)).pow(2).mean()


def content_loss(
    fake: torch.Tensor,
    real: torch.Tensor,
    fake_features: torch.Tensor | None = None,
    real_features: torch.Tensor | None = None,
    pixel_weight: float = 1.0,
    feature_weight: float = 1.0,
) -> torch.Tensor:
    """l_C = α_pix · mean (G(b) − x)² + α_feat · mean (phi(G(b)) − phi(x))²   (means over all entries).

    phi(x) (`real_features`) is a target: no gradient flows into it. A term with weight 0 is skipped
    (its features may then be None).
    """
    if pixel_weight < 0 or feature_weight < 0:
        raise ValueError(f"pixel_weight={pixel_weight!r} and feature_weight={feature_weight!r} must be >= 0")
    total = fake.new_zeros(())
    if pixel_weight > 0:
        if fake.shape != real.shape:
            raise ValueError(f"fake {tuple(fake.shape)} and real {tuple(real.shape)} images differ in shape")
        total = total + pixel_weight * F.mse_loss(fake, real)
    if feature_weight > 0:
        if fake_features is None or real_features is None or fake_features.shape != real_features.shape:
            raise ValueError("feature_weight > 0 needs fake_features and real_features of the same shape")
        total = total + feature_weight * F.mse_loss(fake_features, real_features.detach())
    return total


def weighted_total(terms: Mapping[str, torch.Tensor | None], weights: Mapping[str, float]) -> torch.Tensor:
    """Σ_t w_t · l_t over the terms with w_t > 0. A term with weight 0 is ignored whatever its value
    (None, NaN): the ablation switch. Weights must be >= 0 and at least one > 0."""
    unknown = sorted(set(weights) - set(LOSS_TERMS))
    if unknown:
        raise ValueError(f"unknown loss weights {unknown}; the terms are {LOSS_TERMS}")
    bad = {k: w for k, w in weights.items() if not w >= 0}
    if bad:
        raise ValueError(f"loss weights must be >= 0, got {bad}")
    total = None
    for name, w in weights.items():
        if w == 0:
            continue
        term = terms.get(name)
        if term is None:
            raise ValueError(f"the {name} loss has weight {w} but was not computed")
        total = w * term if total is None else total + w * term
    if total is None:
        raise ValueError(f"every loss weight is 0 ({dict(weights)}); at least one must be > 0")
    return total


# ---------------------------------------------------------------------------------- module


class BGAN(DeepHasher):
    input_kind = "images"
    two_steps_per_backward = True  # E's and G's steps share one backward pass (train.py refuses float16's loss scaler)
    architecture = ("image_size", "channels", "width", "hidden")
    image_sizes = SUPPORTED_IMAGE_SIZES

    def __init__(
        self,
        bits: int,
        image_size: int = 28,
        channels: int = 1,
        width: int = 16,
        hidden: int = 128,
        binarizer: str = "scaled_tanh",
        beta_start: float = 1.0,
        beta_gamma: float = 0.005,
        beta_power: float = 0.5,
        similarity: str = "released",
        metric: str = "cosine",
        k1: int = 20,
        k2: int = 30,
        min_shared: int = 10,
        knn_chunk_size: int = 1024,
        neighbor_pairs: bool = True,
        neighborhood_weight: float = 1.0,
        positive_weight: float = 10.0,
        content_weight: float = 0.03,
        adversarial_weight: float = 0.01,
        quantization_weight: float = 0.0,
        pixel_weight: float = 1.0,
        feature_weight: float = 1.0,
        d_norm: str = "batch",
        lr_d: float = 2e-4,
        lr_g: float = 2e-4,
        lr_e: float = 1e-3,
        betas: tuple[float, float] = (0.5, 0.999),
    ) -> None:
        super().__init__()
        self.check_arguments(**self.constructor_arguments(locals()))
        self.save_hyperparameters(logger=False)  # the loggers get the whole composed config instead
        self.automatic_optimization = False
        self.E = HashNet(bits, channels=channels, image_size=image_size, width=width, hidden=hidden)
        self.G = CodeGenerator(bits, channels=channels, image_size=image_size, width=width)
        self.D = ImageDiscriminator(channels=channels, image_size=image_size, width=width, norm=d_norm)
        # kNN lists [n, max(k1, k2)] of the training set, rebuilt by on_before_fit (not checkpointed)
        self.register_buffer("neighbors", torch.zeros(0, 0, dtype=torch.long), persistent=False)
        # similarity=released: each training image's E(i) (`released_lists`), rebuilt by on_before_fit
        self.register_buffer("released", torch.zeros(0, 0, dtype=torch.long), persistent=False)
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))  # drives the β schedule
        self._train_images: torch.Tensor | None = None

    @classmethod
    def check_arguments(cls, **kwargs) -> None:
        a = cls.bind_arguments(kwargs)
        check_bits(a.bits)
        bad = []
        if a.binarizer not in BINARIZERS:
            bad.append(f"binarizer={a.binarizer!r} is not one of {BINARIZERS}")
        if a.similarity not in SIMILARITY_MODES:
            bad.append(f"similarity={a.similarity!r} is not one of {SIMILARITY_MODES}")
        if a.metric not in METRICS:
            bad.append(f"metric={a.metric!r} is not one of {METRICS}")
        if a.d_norm not in NORMS:
            bad.append(f"d_norm={a.d_norm!r} is not one of {NORMS}")
        for name, value in (("k1", a.k1), ("k2", a.k2), ("knn_chunk_size", a.knn_chunk_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                bad.append(f"{name}={value!r} must be a positive integer")
        if a.similarity == "shared" and not (isinstance(a.min_shared, int) and 0 <= a.min_shared <= a.k2):
            bad.append(f"min_shared={a.min_shared!r} must be an integer in [0, k2={a.k2}]")
        for name, value in (
            ("neighborhood_weight", a.neighborhood_weight),
            ("positive_weight", a.positive_weight),
            ("content_weight", a.content_weight),
            ("adversarial_weight", a.adversarial_weight),
            ("quantization_weight", a.quantization_weight),
            ("pixel_weight", a.pixel_weight),
            ("feature_weight", a.feature_weight),
            ("beta_gamma", a.beta_gamma),
            ("beta_power", a.beta_power),
        ):
            if not value >= 0:
                bad.append(f"{name}={value!r} must be >= 0")
        for name, value in (("beta_start", a.beta_start), ("lr_d", a.lr_d), ("lr_g", a.lr_g), ("lr_e", a.lr_e)):
            if not value > 0:
                bad.append(f"{name}={value!r} must be > 0")
        try:
            check_adam_betas(a.betas)
        except ValueError as error:
            bad.append(str(error))
        if not bad and a.neighborhood_weight == a.content_weight == a.adversarial_weight == a.quantization_weight == 0:
            bad.append(
                "neighborhood_weight, content_weight, adversarial_weight and quantization_weight are all 0; "
                "one must be > 0"
            )
        if not bad and a.content_weight > 0 and a.pixel_weight == a.feature_weight == 0:
            bad.append("content_weight > 0 needs pixel_weight > 0 or feature_weight > 0")
        if bad:
            raise ValueError("BGAN: " + "; ".join(bad))

    # ------------------------------------------------------------------------------ helpers

    @property
    def uses_neighbors(self) -> bool:
        return self.hparams.neighborhood_weight > 0

    @property
    def uses_generator(self) -> bool:
        return self.hparams.content_weight > 0 or self.hparams.adversarial_weight > 0

    @property
    def uses_discriminator(self) -> bool:
        hp = self.hparams
        return hp.adversarial_weight > 0 or (hp.content_weight > 0 and hp.feature_weight > 0)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return to_network_input(images, self.hparams.image_size, self.hparams.channels)

    def beta(self) -> float:
        hp = self.hparams
        return beta_schedule(int(self.train_steps), hp.beta_start, hp.beta_gamma, hp.beta_power)

    def on_before_fit(
        self, train_inputs: torch.Tensor, train_features: torch.Tensor, device: torch.device | str = "cpu"
    ) -> None:
        """kNN lists of the training features (the similarity matrix S, sparsely); keeps a reference
        to the training images for `neighbor_pairs`."""
        hp = self.hparams
        n = train_inputs.shape[0]
        if train_features.shape[0] != n:
            raise ValueError(f"{train_features.shape[0]} training features for {n} training images")
        self._train_images = train_inputs
        if not self.uses_neighbors:
            return
        k = max(hp.k1, hp.k2) if hp.similarity == "shared" else hp.k1
        if k >= n:
            raise ValueError(
                f"BGAN: k1={hp.k1}"
                + (f", k2={hp.k2}" if hp.similarity == "shared" else "")
                + f" nearest neighbours need more than that many training images, and there are {n}: lower "
                + "method.module.k1 (and k2) or train on more images (split.train_size)"
            )
        self.neighbors = knn_indices(train_features.to(device), k, hp.metric, hp.knn_chunk_size).to(self.device)
        if hp.similarity == "released":
            self.released = released_lists(self.neighbors[:, : hp.k1], hp.k2)

    @torch.no_grad()
    def encode_inputs(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """bool codes [n, bits] = [E(x) >= 0] (eval mode, batched on this module's device)."""
        return self.encode_prepared(images, lambda x: self.E.encode(x, batch_size=batch_size), batch_size)

    # ------------------------------------------------------------------------------ training

    def configure_optimizers(self):
        hp = self.hparams
        betas = tuple(hp.betas)
        return (
            torch.optim.Adam(self.D.parameters(), lr=hp.lr_d, betas=betas),
            torch.optim.Adam(self.G.parameters(), lr=hp.lr_g, betas=betas),
            torch.optim.Adam(self.E.parameters(), lr=hp.lr_e, betas=betas),
        )

    def training_step(self, batch, batch_idx: int) -> None:
        hp = self.hparams
        images, index = batch
        n = images.shape[0]
        opt_d, opt_g, opt_e = self.optimizers()
        if self.uses_neighbors and self.neighbors.numel() == 0:
            raise RuntimeError("BGAN: call on_before_fit(train_inputs, train_features) before training")

        all_index = index
        if self.uses_neighbors and hp.neighbor_pairs:
            pick = torch.randint(0, hp.k1, (n,), device=self.neighbors.device)
            extra = self.neighbors[index.to(self.neighbors.device), pick]
            if self._train_images is None:
                raise RuntimeError("BGAN: neighbor_pairs needs on_before_fit to have seen the training images")
            images = torch.cat([images, self._train_images[extra.cpu()].to(images.device)])
            all_index = torch.cat([index, extra.to(index.device)])
        x_all = self.prepare(images)
        x = x_all[:n]
        beta = self.beta()
        h_all = full_precision(self.E.logits(x_all))  # tanh(β·h) in float32: bfloat16 saturates to ±1, zero gradient
        b_all = binary_layer(h_all, hp.binarizer, beta)
        b = b_all[:n]

        logs: dict[str, torch.Tensor | float] = {"beta": beta}
        fake = self.G(b) if self.uses_generator else None
        if self.uses_discriminator:
            loss_d = adversarial_d_loss(self.D(x), self.D(fake.detach()))
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss_d)
            opt_d.step()
            logs["loss/d"] = loss_d

        terms: dict[str, torch.Tensor] = {}
        if hp.neighborhood_weight > 0:
            if hp.similarity == "released":
                s = batch_similarity(self.released, all_index, self.released.shape[1], "released")
            else:
                s = batch_similarity(self.neighbors, all_index, hp.k1, hp.similarity, hp.k2, hp.min_shared)
            terms["neighborhood"] = neighborhood_loss(b_all, s, hp.positive_weight)
            logs["similar_pairs"] = (s.sum() - s.shape[0]) / max(1, s.shape[0] * (s.shape[0] - 1))
        fake_logits = fake_features = real_features = None
        if hp.adversarial_weight > 0 or (hp.content_weight > 0 and hp.feature_weight > 0):
            fake_logits, fake_features = self.D(fake, return_features=True)
        if hp.content_weight > 0:
            if hp.feature_weight > 0:
                with torch.no_grad():
                    real_features = self.D.features(x)
            terms["content"] = content_loss(fake, x, fake_features, real_features, hp.pixel_weight, hp.feature_weight)
        if hp.adversarial_weight > 0:
            terms["adversarial"] = adversarial_g_loss(fake_logits)
        if hp.quantization_weight > 0:
            terms["quantization"] = quantization_loss(h_all)
        loss = weighted_total(
            terms,
            {
                "neighborhood": hp.neighborhood_weight,
                "content": hp.content_weight,
                "adversarial": hp.adversarial_weight,
                "quantization": hp.quantization_weight,
            },
        )
        opt_e.zero_grad(set_to_none=True)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_e.step()
        if self.uses_generator:
            opt_g.step()
        self.train_steps += 1

        logs.update({f"loss/{k}": v for k, v in terms.items()})
        logs["loss/total"] = loss
        self.log_losses(logs, batch_size=n)
