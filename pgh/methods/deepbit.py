"""DeepBit (Lin, Lu, Chen, Zhou, CVPR 2016): an unsupervised CNN whose top (latent) layer gives
k sigmoids h = F(x) in (0, 1)^k, binarised at 0.5: b = (h >= 0.5).

Losses (pure functions below; every per-sample term is averaged over the batch):
- quantisation (the paper's L1)     mean_i ‖b_i − h_i‖²,  b_i = (h_i >= 0.5) with no gradient,
                                    so each output is pulled to its nearer end of {0, 1};
- even bit distribution (L2)        Σ_k (μ_k − 0.5)²,  μ_k = mean_i h_ik (the batch mean of bit k's
                                    activation: each bit should be 1 for half of the images);
- rotation invariance (L3)          Σ_θ C(θ) · mean_i ‖h_i − F(R(x_i, θ))‖²,  C(θ) = exp(−decay·|θ|),
                                    θ in degrees over the configured angles (R: rotation about the
                                    image centre, black fill).
Objective: α·L1 + β·L2 + γ·L3 (`quantization_weight`, `balance_weight`, `rotation_weight`).

Two stages as in the paper: the first `stage1_epochs` epochs train with α·L1 + β·L2 on the images;
the remaining epochs (stage 2) add γ·L3, each batch with its rotated copies in the same forward
pass; L1 and L2 stay on the unrotated images. **(our choice)** C(θ) = exp(−|θ| in radians) by default
(`rotation_decay = π/180` per degree): exp(−|θ|) with θ in degrees would weigh a 10° rotation by
4.5e-5, i.e. switch L3 off (`rotation_decay: 1` gives that reading).

**(our choice)** Before training, the latent layer is set from a shallow hasher (`latent_init`:
itq by default; lsh, pca, or random to keep PyTorch's initialisation) fitted on the trunk's features
of the training images, so the bits start balanced and informative. The paper starts from VGG16
pretrained on ImageNet; a small CNN trained from scratch on these objectives alone has no signal
that ties its bits to image content: with latent_init=random, mnist5k at 32 bits collapses to one
code for every image (mAP@all 20.8, P@100 = chance), while itq starts at 41.3 and ends at 54.3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.functional import rotate

from pgh.hashing import ITQ, LSH
from pgh.hashing.base import pca
from pgh.methods.base import DeepHasher, check_number, is_finite_number, to_network_input
from pgh.nets.deepbit_cnn import BACKBONES, build_deepbit_net
from pgh.retrieval.codes import check_bits

DEFAULT_SIZE = {"cnn": 28, "vgg16": 224}
DEFAULT_CHANNELS = {"cnn": 1, "vgg16": 3}
LATENT_INITS = ("random", "lsh", "pca", "itq")


def _check_codes(name: str, h: torch.Tensor) -> None:
    if h.ndim != 2:
        raise ValueError(f"{name} must be 2-D [batch, bits], got shape {tuple(h.shape)}")


def binarize(h: torch.Tensor) -> torch.Tensor:
    """b = (h >= 0.5) as 0./1. in h's dtype, no gradient."""
    return (h >= 0.5).to(h.dtype).detach()


def quantization_loss(h: torch.Tensor) -> torch.Tensor:
    """L1 = mean_i Σ_k (b_ik − h_ik)², b = binarize(h) (detached). h: [B, k] in (0, 1)."""
    _check_codes("h", h)
    return (binarize(h) - h).pow(2).sum(1).mean()


def balance_loss(h: torch.Tensor) -> torch.Tensor:
    """L2 = Σ_k (μ_k − 0.5)², μ_k = mean_i h_ik (even bit distribution). h: [B, k]."""
    _check_codes("h", h)
    return (h.mean(0) - 0.5).pow(2).sum()


def rotation_costs(angles: Sequence[float], decay: float) -> torch.Tensor:
    """C(θ) = exp(−decay·|θ|) for each angle θ (degrees), float32 [R]."""
    if decay < 0:
        raise ValueError(f"rotation decay={decay!r} must be >= 0")
    return torch.exp(-decay * torch.tensor([abs(float(a)) for a in angles], dtype=torch.float32))


def rotation_invariance_loss(h: torch.Tensor, h_rotated: torch.Tensor, costs: torch.Tensor) -> torch.Tensor:
    """L3 = Σ_r C_r · mean_i Σ_k (h_ik − h^r_ik)².

    h: [B, k] outputs on the images; h_rotated: [R, B, k] outputs on their copies rotated by θ_r;
    costs: [R], C_r = C(θ_r).
    """
    _check_codes("h", h)
    if h_rotated.ndim != 3 or tuple(h_rotated.shape[1:]) != tuple(h.shape):
        raise ValueError(f"h_rotated must be [R, {h.shape[0]}, {h.shape[1]}], got {tuple(h_rotated.shape)}")
    if costs.shape != (h_rotated.shape[0],):
        raise ValueError(f"costs must be [{h_rotated.shape[0]}] (one per rotation), got {tuple(costs.shape)}")
    per_rotation = (h.unsqueeze(0) - h_rotated).pow(2).sum(2).mean(1)  # [R]
    return (costs.to(h) * per_rotation).sum()


def rotate_batch(x: torch.Tensor, angles: Sequence[float], fill: float = -1.0) -> torch.Tensor:
    """x [B, C, H, W] rotated by each angle (degrees, counter-clockwise, bilinear, `fill` outside),
    stacked angle-major: [R·B, C, H, W] (rows r·B .. r·B + B − 1 are x rotated by angles[r])."""
    if x.ndim != 4:
        raise ValueError(f"x must be [B, C, H, W], got shape {tuple(x.shape)}")
    fill_values = [float(fill)] * x.shape[1]
    return torch.cat([rotate(x, float(a), interpolation=InterpolationMode.BILINEAR, fill=fill_values) for a in angles])


class DeepBit(DeepHasher):
    input_kind = "images"
    architecture = ("backbone", "image_size", "channels", "width", "hidden", "stages")

    def __init__(
        self,
        bits: int,
        backbone: str = "cnn",
        image_size: int | None = None,
        channels: int | None = None,
        width: int = 16,
        hidden: int = 128,
        stages: int = 2,
        weights: str | None = None,
        pretrained: bool = True,
        stage1_epochs: int = 2,
        quantization_weight: float = 1.0,
        balance_weight: float = 1.0,
        rotation_weight: float = 1.0,
        rotations: Sequence[float] = (-10.0, -5.0, 5.0, 10.0),
        rotation_decay: float = math.pi / 180,
        rotation_fill: float = -1.0,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        backbone_lr_scale: float = 1.0,
        latent_init: str = "itq",
        latent_init_scale: float = 1.0,
        latent_init_images: int = 10000,
        itq_iterations: int = 50,
    ) -> None:
        super().__init__()
        self.check_arguments(**self.constructor_arguments(locals()))
        self.save_hyperparameters(logger=False)  # the loggers get the whole composed config instead
        self.image_size = DEFAULT_SIZE[backbone] if image_size is None else image_size
        self.channels = DEFAULT_CHANNELS[backbone] if channels is None else channels
        self.net = build_deepbit_net(
            bits,
            backbone,
            channels=self.channels,
            image_size=self.image_size,
            width=width,
            hidden=hidden,
            stages=stages,
            weights=weights,
            pretrained=pretrained,
        )
        dim = self.net.latent.in_features
        if latent_init in ("pca", "itq") and dim < bits:
            raise ValueError(
                f"latent_init={latent_init} needs at least bits={bits} trunk features, the trunk gives {dim}: "
                "raise hidden (or use latent_init=lsh / random)"
            )
        self.register_buffer("costs", rotation_costs(rotations, rotation_decay), persistent=False)
        # a scale of 0 freezes the trunk (the authors' VGG16 setting): no gradient, so no backward through its
        # weights and no Adam state for them; set here, before DDP wraps the module (configure_optimizers comes
        # after, and DDP without find_unused_parameters fails on weights that stop getting gradients)
        self.net.trunk.requires_grad_(backbone_lr_scale > 0)

    @classmethod
    def check_arguments(cls, **kwargs) -> None:
        a = cls.bind_arguments(kwargs)
        check_bits(a.bits)
        if a.backbone not in BACKBONES:
            raise ValueError(f"backbone={a.backbone!r} is not one of {BACKBONES}")
        if not isinstance(a.stage1_epochs, int) or isinstance(a.stage1_epochs, bool) or a.stage1_epochs < 0:
            raise ValueError(f"stage1_epochs={a.stage1_epochs!r} must be an integer >= 0")
        for name, value in (
            ("quantization_weight", a.quantization_weight),
            ("balance_weight", a.balance_weight),
            ("rotation_weight", a.rotation_weight),
            ("rotation_decay", a.rotation_decay),
            ("weight_decay", a.weight_decay),
            ("backbone_lr_scale", a.backbone_lr_scale),
        ):
            check_number(name, value)
        check_number("lr", a.lr, strict=True)
        check_number("latent_init_scale", a.latent_init_scale, strict=True)
        if a.latent_init not in LATENT_INITS:
            raise ValueError(f"latent_init={a.latent_init!r} is not one of {LATENT_INITS}")
        for name, value, low in (
            ("latent_init_images", a.latent_init_images, 1),
            ("itq_iterations", a.itq_iterations, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}={value!r} must be an integer >= {low}")
        check_number("rotation_fill", a.rotation_fill, minimum=-math.inf)
        if (
            isinstance(a.rotations, (str, bytes))
            or not isinstance(a.rotations, Sequence)
            or len(a.rotations) == 0
            or not all(is_finite_number(angle) for angle in a.rotations)
        ):
            raise ValueError(f"rotations={a.rotations!r} must be a non-empty list of angles in degrees")
        if a.backbone == "vgg16" and a.pretrained:  # a missing weights file, before any work
            from pgh.features.vgg import vgg16_weights_path

            vgg16_weights_path(a.weights, "method.module")

    # ------------------------------------------------------------------------------ inference

    def network_input(self) -> tuple[int, int]:
        return self.channels, self.image_size  # the backbone's defaults where the config leaves them null

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> the network's input: [-1, 1], resized to image_size, `channels` channels."""
        return to_network_input(images, self.image_size, self.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """h = F(x) in (0, 1)^bits for prepared images x."""
        return self.net(x)

    @torch.no_grad()
    def encode_inputs(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """bool codes [n, bits] = F(x) >= 0.5 of uint8 images (eval mode, batched on this device)."""
        return self.encode_prepared(images, lambda x: self.net.encode(x, batch_size=batch_size), batch_size)

    # ------------------------------------------------------------------------------ training

    @torch.no_grad()
    def trunk_features(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """The trunk's features [n, D] of uint8 images, in eval mode, batched on this device (None: 512
        images a batch, 64 from 128 px on: one VGG16 conv1 activation of 512 images at 224 px is 6.6 GB)."""
        if batch_size is None:
            batch_size = 512 if self.image_size < 128 else 64
        was_training = self.net.training
        self.net.eval()
        try:
            return torch.cat(
                [
                    self.net.trunk(self.prepare(images[i : i + batch_size].to(self.device))).cpu()
                    for i in range(0, images.shape[0], batch_size)
                ]
            )
        finally:
            self.net.train(was_training)

    @torch.no_grad()
    def init_latent(self, images: torch.Tensor) -> None:
        """**(our choice)** Set the latent layer from a shallow hasher (`latent_init`) fitted on the
        trunk's features of (at most `latent_init_images` of) the training images, so training starts
        from balanced, informative bits instead of random ones: with projection v = (f − mean)·W, the
        pre-sigmoid activation is scale · v_k / std(v_k), so b = (h >= 0.5) is exactly the hasher's code.
        lsh: W random Gaussian; pca: the top-k principal directions; itq: PCA then the ITQ rotation."""
        hp = self.hparams
        if hp.latent_init == "random":
            return
        if images.shape[0] > hp.latent_init_images:
            images = images[torch.randperm(images.shape[0])[: hp.latent_init_images]]
        f = self.trunk_features(images).double()
        seed = int(torch.randint(0, 2**31 - 1, ()))
        if hp.latent_init == "lsh":
            lsh = LSH(hp.bits, seed=seed).fit(f)
            mean, w = lsh.mean, lsh.projection
        elif hp.latent_init == "pca":
            mean, w, _ = pca(f, hp.bits)
        else:
            itq = ITQ(hp.bits, iterations=hp.itq_iterations, seed=seed).fit(f)
            mean, w = itq.mean, itq.pcs @ itq.rotation
        mean, w = mean.double(), w.double()
        std = ((f - mean) @ w).std(0).clamp_min(1e-12)
        w = w * (hp.latent_init_scale / std)
        self.net.latent.weight.copy_(w.T.to(self.net.latent.weight))
        self.net.latent.bias.copy_((-(mean @ w)).to(self.net.latent.bias))

    def on_before_fit(
        self, train_inputs: torch.Tensor, train_features: torch.Tensor, device: torch.device | str = "cpu"
    ) -> None:
        """The latent layer's initial fit, its trunk features computed on `device` (the rank's GPU: the
        trainer has not moved the module yet, and VGG16 over 10,000 images at 224 px takes hours on a CPU)."""
        before = self.device
        self.to(device)
        try:
            self.init_latent(train_inputs)
        finally:
            self.to(before)

    def in_stage2(self) -> bool:
        return self.current_epoch >= self.hparams.stage1_epochs

    def on_fit_start(self) -> None:
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs >= 0 and self.hparams.stage1_epochs > max_epochs:
            raise ValueError(
                f"DeepBit: stage1_epochs={self.hparams.stage1_epochs} is more than max_epochs={max_epochs}; "
                "stage 2 runs the epochs after stage1_epochs, so set method.module.stage1_epochs <= "
                "method.max_epochs"
            )

    def configure_optimizers(self):
        hp = self.hparams
        # its group stays with a frozen trunk (lr 0), so a resume may change the scale
        return torch.optim.Adam(
            [
                {"params": self.net.trunk.parameters(), "lr": hp.lr * hp.backbone_lr_scale},
                {"params": self.net.latent.parameters(), "lr": hp.lr},
            ],
            lr=hp.lr,
            weight_decay=hp.weight_decay,
        )

    def compute_losses(self, x: torch.Tensor, rotation: bool) -> dict[str, torch.Tensor]:
        """L1, L2 (on x) and, when `rotation`, L3 (x with its rotated copies, one forward pass) for
        prepared images x [B, C, S, S]; L3 is 0 otherwise. Keys: quantization, balance, rotation."""
        hp = self.hparams
        n = x.shape[0]
        if rotation:
            h_all = self.net(torch.cat([x, rotate_batch(x, hp.rotations, hp.rotation_fill)]))
            h = h_all[:n]
            loss_rot = rotation_invariance_loss(h, h_all[n:].reshape(len(hp.rotations), n, -1), self.costs)
        else:
            h = self.net(x)
            loss_rot = h.new_zeros(())
        return {
            "quantization": quantization_loss(h),
            "balance": balance_loss(h),
            "rotation": loss_rot,
        }

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        hp = self.hparams
        images, _ = batch
        stage2 = self.in_stage2()
        losses = self.compute_losses(self.prepare(images), rotation=stage2 and hp.rotation_weight > 0)
        loss = (
            hp.quantization_weight * losses["quantization"]
            + hp.balance_weight * losses["balance"]
            + hp.rotation_weight * losses["rotation"]
        )
        n = images.shape[0]
        self.log_losses({"loss/total": loss, **{f"loss/{k}": v for k, v in losses.items()}}, n, prog_bar=True)
        self.log("stage", 2.0 if stage2 else 1.0, on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        return loss
