"""PGH (Ma et al., IJCAI 2018): a hash-conditioned GAN (G, D) and a hashing network H trained
jointly, with manual optimisation, in progressive rounds.

Per batch of real images x_i with their current conditioning codes b_i:
  1. D step:   adversarial loss on (x_i, b_i) vs (G(z | b_i), b_i).
  2. G+H step: one backward of  L_adv(G) + λ·(triplet + μ·quantisation)  over
               (x_i, x̄_i = G(z | b_i), x̄_j = G(z' | b_j)), then a G step and an H step. G thus gets
               the adversarial and the triplet gradient; H gets λ·∇(triplet + μ·quantisation), the
               same direction as an H step on triplet + μ·quantisation (Adam is scale-invariant).
Two warm-ups of our own: `gan_warmup_epochs` (default 0) trains G and D alone first;
`distill_epochs` (default 10) makes the conditioning codes b_i, b_j H's quantisation target first
(H learns the initial codes, and G, through H, learns to draw images that carry their code), after
which the protocol's own-binarisation target takes over. And one regulariser of our own: H trains on
jittered inputs (real and synthetic: a random shift of up to `augment_shift` pixels and rotation of up
to `augment_degrees`, default 2 and 10; 0 and 0 switch it off; `augment_scale`, `augment_flip` and
`augment_contrast` add scale, mirror and ink-contrast jitter, off by default), see `pgh.nets.augment`.
And an optional anchor (`anchor_weight` = α, default 0): after the distillation warm-up the G+H loss
gets + λ·α·‖H(x_i) − b⁰_i‖², b⁰_i the round-0 code of x_i, so the rounds refine the initial
neighbourhoods instead of drifting away from them.
And an optional neighbourhood term (`neighborhood_weight` = ν, default 0), BGAN's l_N: after the
warm-up, each batch of real images is joined by one of each image's K1 nearest training images (in
the run's features) and H's loss gets + ν·l_N over the real images and those neighbours, with S from
BGAN's released rule (`pgh.methods.bgan_similarity.released_lists`: the images an image shares most neighbours
with, and their neighbours), so H's codes also follow a wide neighbourhood of the features.
And an optional weight average of H (`h_ema_decay` = d, default 0: off): after the t-th H step,
H_ema ← d_t·H_ema + (1 − d_t)·H over its weights and BatchNorm statistics, with d_t = min(d,
(1 + t)/(10 + t)) (TensorFlow's `ExponentialMovingAverage` with `num_updates`: the first steps do not
leave H's random initialisation in the average), and every code PGH gives (each round's refresh and
evaluation, the final codes, pgh-index) comes from H_ema, which smooths the step-to-step noise of
H's weights out of the codes.
Between rounds, `pgh.callbacks.ProgressiveRounds` re-encodes every training image with H and makes
those codes the GAN's condition (`codes`, one row per training image, saved in checkpoints).
"""

from __future__ import annotations

import copy
import logging

import torch

from pgh.methods.base import DeepHasher, check_adam_betas, check_number, to_network_input
from pgh.methods.bgan_similarity import batch_similarity, knn_indices, neighborhood_loss, released_lists
from pgh.methods.pgh_losses import (
    NEGATIVE_MODES,
    adversarial_d_loss,
    adversarial_g_loss,
    code_target_loss,
    negative_codes,
    quantization_loss,
    triplet_loss,
)
from pgh.nets import Discriminator, Generator, HashNet, dcgan_init
from pgh.nets.augment import random_affine, random_contrast
from pgh.nets.dcgan import SUPPORTED_IMAGE_SIZES
from pgh.retrieval.codes import check_bits

QUANTIZATION_TARGETS = ("own", "condition")
log = logging.getLogger(__name__)


class PGH(DeepHasher):
    input_kind = "images"
    two_steps_per_backward = True  # G's and H's steps share one backward pass (train.py refuses float16's loss scaler)
    # what shapes the checkpoint's tensors (h_ema_decay > 0 adds H_ema's): a resume must keep them
    architecture = ("image_size", "channels", "z_dim", "width", "hidden", "h_ema_decay")
    image_sizes = SUPPORTED_IMAGE_SIZES

    def __init__(
        self,
        bits: int,
        num_train: int,
        image_size: int = 28,
        channels: int = 1,
        z_dim: int = 64,
        width: int = 32,
        hidden: int = 256,
        gamma: float = 0.5,
        lam: float = 1.0,
        quantization_weight: float = 0.3,
        quantization_target: str = "own",
        gan_warmup_epochs: int = 0,
        distill_epochs: int = 10,
        distill_min_agreement: float = 0.8,
        augment_shift: float = 2.0,
        augment_degrees: float = 10.0,
        augment_scale: float = 0.0,
        augment_flip: bool = False,
        augment_contrast: float = 0.0,
        anchor_weight: float = 0.0,
        neighborhood_weight: float = 0.0,
        neighborhood_k1: int = 20,
        neighborhood_k2: int = 30,
        neighborhood_positive_weight: float = 10.0,
        negative: str = "random",
        h_ema_decay: float = 0.0,
        lr_d: float = 2e-4,
        lr_g: float = 2e-4,
        lr_h: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        betas_h: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        self.check_arguments(**self.constructor_arguments(locals()))
        self.save_hyperparameters(logger=False)  # the loggers get the whole composed config instead
        self.automatic_optimization = False
        self.G = Generator(bits, z_dim=z_dim, channels=channels, image_size=image_size, width=width)
        self.D = Discriminator(bits, channels=channels, image_size=image_size, width=width)
        self.H = HashNet(bits, channels=channels, image_size=image_size, width=width, hidden=hidden)
        # the weight average of H that codes images (h_ema_decay > 0); a module, so checkpoints hold it
        self.H_ema = copy.deepcopy(self.H).requires_grad_(False) if h_ema_decay > 0 else None
        if self.H_ema is not None:
            self.register_buffer("h_ema_updates", torch.zeros((), dtype=torch.long))
        self.reset_gan()
        self.register_buffer("codes", torch.zeros(num_train, bits))  # conditioning codes b_i, in {0, 1}
        self.register_buffer("initial_codes", torch.zeros(num_train, bits))  # round-0 codes (the anchor)
        self.register_buffer("current_round", torch.zeros((), dtype=torch.long))
        self.epoch_agreement: list[torch.Tensor] = []  # this epoch's codes/agreement, batch by batch
        # neighborhood_weight > 0: the training images' K1 lists and released-rule sets (buffers, so they
        # move with the model to its device; not checkpointed: on_before_fit rebuilds them at every
        # start, resumes too) and the training images themselves
        self.register_buffer("neighbor_lists", torch.zeros(0, 0, dtype=torch.long), persistent=False)
        self.register_buffer("similar_lists", torch.zeros(0, 0, dtype=torch.long), persistent=False)
        self._neighborhood_images: torch.Tensor | None = None

    @classmethod
    def check_arguments(cls, **kwargs) -> None:
        a = vars(cls.bind_arguments(kwargs))  # unknown or missing names: TypeError
        check_bits(a["bits"])
        for name in (
            "gamma", "lam", "quantization_weight", "augment_shift",
            "augment_degrees", "anchor_weight", "neighborhood_weight", "neighborhood_positive_weight",
            "lr_d", "lr_g", "lr_h",  # a learning rate of 0 freezes that network (an ablation)
        ):  # fmt: skip
            check_number(name, a[name])
        for name in ("gan_warmup_epochs", "distill_epochs"):  # a fraction would be rounded up by the epoch counts
            if isinstance(a[name], bool) or not isinstance(a[name], int) or a[name] < 0:
                raise ValueError(f"{name}={a[name]!r} must be a whole number >= 0 of epochs")
        if 0 < a["distill_epochs"] <= a["gan_warmup_epochs"]:
            raise ValueError(
                f"distill_epochs={a['distill_epochs']} ends inside gan_warmup_epochs={a['gan_warmup_epochs']}: both "
                "count from epoch 0 and H does not train in the GAN's warm-up, so it would never distil the codes; "
                f"set distill_epochs above {a['gan_warmup_epochs']} or 0"
            )
        check_adam_betas(a["betas"])
        if a["betas_h"] is not None:
            check_adam_betas(a["betas_h"], name="betas_h")
        for name in ("augment_scale", "augment_contrast"):
            if not 0 <= check_number(name, a[name]) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {a[name]}")
        if not 0 <= check_number("h_ema_decay", a["h_ema_decay"]) < 1:
            raise ValueError(f"h_ema_decay must be in [0, 1) (0: off), got {a['h_ema_decay']}")
        if not 0 <= a["distill_min_agreement"] <= 1:
            raise ValueError(f"distill_min_agreement must be in [0, 1], got {a['distill_min_agreement']}")
        if a["quantization_target"] not in QUANTIZATION_TARGETS:
            raise ValueError(f"quantization_target={a['quantization_target']!r} is not one of {QUANTIZATION_TARGETS}")
        if a["negative"] not in NEGATIVE_MODES:
            raise ValueError(f"negative={a['negative']!r} is not one of {NEGATIVE_MODES}")
        num_train = a["num_train"]
        if num_train < 2:
            raise ValueError(f"PGH needs at least 2 training images, got num_train={num_train}")
        for name in ("neighborhood_k1", "neighborhood_k2"):
            value = a[name]
            # a term that is off needs no neighbours (a PGH built only to code images has num_train=2)
            top = num_train - 1 if a["neighborhood_weight"] > 0 else value
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise ValueError(
                    f"{name}={value!r} must be a whole number in 1..{num_train - 1} (below the training images)"
                )

    def on_before_fit(
        self, train_inputs: torch.Tensor, train_features: torch.Tensor, device: torch.device | str = "cpu"
    ) -> None:
        hp = self.hparams
        if hp.neighborhood_weight == 0:
            return
        if train_features.shape[0] != train_inputs.shape[0]:
            raise ValueError(f"{train_features.shape[0]} training features for {train_inputs.shape[0]} training images")
        neighbors = knn_indices(train_features.float().to(device), hp.neighborhood_k1, "cosine").cpu()
        self.neighbor_lists = neighbors.to(self.device)
        self.similar_lists = released_lists(neighbors, hp.neighborhood_k2).to(self.device)
        self._neighborhood_images = train_inputs

    # ------------------------------------------------------------------------------ state

    def set_codes(self, codes: torch.Tensor, initial: bool = False) -> None:
        """Make `codes` [num_train, bits] the GAN's condition; `initial=True` also makes them the anchor."""
        if codes.shape != self.codes.shape:
            raise ValueError(f"codes must be [{self.codes.shape[0]}, {self.codes.shape[1]}], got {tuple(codes.shape)}")
        self.codes.copy_(codes.to(self.codes))
        if initial:
            self.initial_codes.copy_(codes.to(self.initial_codes))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints written before the anchor existed have no `initial_codes`; without an anchor
        they are never read, so those load with the conditioning codes in their place. A checkpoint
        with a weight average of H continues only with one, and one without it only without one."""
        state = checkpoint["state_dict"]
        saved_decay = checkpoint.get("hyper_parameters", {}).get("h_ema_decay", 0.0)
        if any(k.startswith("H_ema.") for k in state) != (self.H_ema is not None):
            raise ValueError(
                f"this checkpoint was trained with h_ema_decay={saved_decay} and this run has "
                f"h_ema_decay={self.hparams.h_ema_decay}: H's weight average is either in both or in neither; "
                f"resume it with method.module.h_ema_decay={saved_decay}"
            )
        if "initial_codes" not in state and "codes" in state:
            if self.hparams.anchor_weight > 0:
                raise ValueError(
                    "this checkpoint holds no round-0 codes (it predates anchor_weight), so it cannot "
                    "continue with anchor_weight > 0; resume it with method.module.anchor_weight=0"
                )
            state["initial_codes"] = state["codes"].clone()

    def reset_gan(self) -> None:
        """Re-initialise G and D (DCGAN init); their optimiser state is reset by the caller. Under DDP
        every rank takes rank 0's draw: DDP copies the weights from rank 0 only when it starts, and the
        ranks' random states differ (or, after a resume, are all rank 0's)."""
        dcgan_init(self.G)
        dcgan_init(self.D)
        # only in training (a process group left open by an earlier fit, e.g. NCCL's, may not take the
        # CPU tensors of a module being built) and only with ranks to agree
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed and self._trainer is not None and torch.distributed.get_world_size() > 1:
            for tensor in (*self.G.state_dict().values(), *self.D.state_dict().values()):
                torch.distributed.broadcast(tensor, src=0)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return to_network_input(images, self.hparams.image_size, self.hparams.channels)

    @property
    def warmup_epochs(self) -> int:
        """Epochs before the protocol's losses all apply: the longer of the distillation and GAN warm-ups."""
        return max(self.hparams.distill_epochs, self.hparams.gan_warmup_epochs)

    @property
    def coder(self) -> HashNet:
        """The network whose outputs are the codes: H's weight average where the run keeps one, else H."""
        return self.H if self.H_ema is None else self.H_ema

    @torch.no_grad()
    def encode_inputs(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """bool codes [n, bits] of uint8 images by `coder` (eval mode, batched on this module's device)."""
        return self.encode_prepared(images, lambda x: self.coder.encode(x, batch_size=batch_size), batch_size)

    @torch.no_grad()
    def update_h_ema(self) -> None:
        """H_ema ← d_t·H_ema + (1 − d_t)·H over every floating-point tensor of their state (weights
        and BatchNorm's running statistics), d_t = min(h_ema_decay, (1 + t)/(10 + t)) at the t-th
        update (t from 0); BatchNorm's batch counter is copied."""
        t = int(self.h_ema_updates)
        decay = min(self.hparams.h_ema_decay, (1 + t) / (10 + t))
        self.h_ema_updates += 1
        for average, current in zip(self.H_ema.state_dict().values(), self.H.state_dict().values()):
            if average.is_floating_point():
                average.lerp_(current, 1 - decay)
            else:
                average.copy_(current)

    @torch.no_grad()
    def generate(self, codes: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """G's images in [-1, 1] for the given {0, 1} codes, from a seeded z (eval mode)."""
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(codes.shape[0], self.hparams.z_dim, generator=gen).to(self.device)
        was_training = self.G.training
        self.G.eval()
        images = self.G(z, codes.to(self.device).float())
        self.G.train(was_training)
        return images

    # ------------------------------------------------------------------------------ training

    def configure_optimizers(self):
        hp = self.hparams
        betas = tuple(hp.betas)
        betas_h = betas if hp.betas_h is None else tuple(hp.betas_h)
        return (
            torch.optim.Adam(self.D.parameters(), lr=hp.lr_d, betas=betas),
            torch.optim.Adam(self.G.parameters(), lr=hp.lr_g, betas=betas),
            torch.optim.Adam(self.H.parameters(), lr=hp.lr_h, betas=betas_h),
        )

    def training_step(self, batch, batch_idx: int) -> None:
        hp = self.hparams
        images, index = batch
        x = self.prepare(images)
        b = self.codes[index]
        opt_d, opt_g, opt_h = self.optimizers()
        n = x.shape[0]
        z, z_other = torch.randn(n, hp.z_dim, device=self.device), torch.randn(n, hp.z_dim, device=self.device)
        b_other = b[negative_codes(b, hp.negative)]

        fake_same = self.G(z, b)
        loss_d = adversarial_d_loss(self.D(x, b), self.D(fake_same.detach(), b))
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()

        fake_other = self.G(z_other, b_other)
        # one forward over the three parts: BatchNorm then normalises real and synthetic images with
        # the same batch statistics its running averages (used when encoding) are made of
        distilling = self.current_epoch < hp.distill_epochs
        parts = [x, fake_same, fake_other]
        if hp.neighborhood_weight > 0 and not distilling:
            if self._neighborhood_images is None:
                raise RuntimeError("PGH: neighborhood_weight > 0 needs on_before_fit(train_inputs, train_features)")
            pick = torch.randint(0, hp.neighborhood_k1, (n,)).to(self.device)  # from the CPU generator, as before
            extra = self.neighbor_lists[index, pick]  # one of each image's K1 nearest training images
            parts.append(self.prepare(self._neighborhood_images[extra.cpu()].to(self.device)))
        h_input = torch.cat(parts)
        h_input = random_affine(h_input, hp.augment_shift, hp.augment_degrees, hp.augment_scale, hp.augment_flip)
        h_input = random_contrast(h_input, hp.augment_contrast)
        # H's sigmoids, and so the losses, are float32 under bf16-mixed too (HashNet.forward): bfloat16
        # L1 sums over the bits would step by 0.125 or more around the triplet margin
        h_parts = self.H(h_input).split(n)
        h_real, h_same, h_other = h_parts[:3]
        loss_triplet = triplet_loss(h_real, h_same, h_other, hp.gamma)
        # distillation warm-up: the conditioning codes are the target (see the module docstring)
        if hp.quantization_target == "own" and not distilling:
            loss_quant = quantization_loss(h_real, h_same, h_other)
        else:
            loss_quant = code_target_loss([(h_real, b), (h_same, b), (h_other, b_other)])
        loss_h = loss_triplet + hp.quantization_weight * loss_quant
        if hp.anchor_weight > 0 and not distilling:
            loss_anchor = code_target_loss([(h_real, self.initial_codes[index])])
            loss_h = loss_h + hp.anchor_weight * loss_anchor
            self.log_losses({"loss/anchor": loss_anchor}, n)
        if len(h_parts) == 4:  # BGAN's l_N over the real images and their neighbours, codes in [-1, 1]
            similar = self.similar_lists
            s_batch = batch_similarity(similar, torch.cat([index, extra]), similar.shape[1], "released")
            h_pairs = torch.cat([h_real, h_parts[3]]) * 2 - 1
            with torch.autocast(self.device.type, enabled=False):  # its inner products in float32 under bf16 too
                loss_neighborhood = neighborhood_loss(h_pairs, s_batch.to(self.device), hp.neighborhood_positive_weight)
            loss_h = loss_h + hp.neighborhood_weight * loss_neighborhood
            self.log_losses({"loss/neighborhood": loss_neighborhood}, n)
        loss_adv = adversarial_g_loss(self.D(fake_same, b))
        # during the GAN warm-up (the first epochs of the run) G learns the conditioning alone
        warm = self.current_epoch >= hp.gan_warmup_epochs
        loss = loss_adv + warm * hp.lam * loss_h
        opt_g.zero_grad(set_to_none=True)
        opt_h.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_g.step()
        if warm:
            opt_h.step()
            if self.H_ema is not None:
                self.update_h_ema()

        losses = {"loss/d": loss_d, "loss/g_adv": loss_adv, "loss/triplet": loss_triplet}
        self.log_losses({**losses, "loss/quantization": loss_quant}, n, prog_bar=True)
        # the share of the real images' bits that H (on their jittered copies) gives as their condition
        agreement = ((h_real.detach() >= 0.5) == b.bool()).float().mean()
        self.epoch_agreement.append(agreement)
        self.log_losses({"codes/agreement": agreement}, n)
        # the round whose codes condition the GAN this epoch (0: the initial codes); `rounds/round` counts
        # the rounds completed, logged at each round's end
        conditioning = self.current_round.float()
        self.log("conditioning_round", conditioning, on_step=False, on_epoch=True, sync_dist=True, batch_size=n)

    def on_train_epoch_start(self) -> None:
        self.epoch_agreement = []

    def on_train_epoch_end(self) -> None:
        """Warn when the distillation warm-up ends (or the run ends inside it) before H has learnt the
        conditioning codes: the own-binarisation target would then take over codes H does not carry,
        and a round's refresh scrambles the initial neighbourhoods (short runs collapse this way, far
        below round 0)."""
        hp = self.hparams
        last_warm_up_epoch = min(hp.distill_epochs, self.trainer.max_epochs) - 1
        switching = hp.quantization_target == "own" and self.current_epoch == last_warm_up_epoch
        if not switching or not self.epoch_agreement or not self.trainer.is_global_zero:
            return
        agreement = float(torch.stack(self.epoch_agreement).mean())
        if agreement < hp.distill_min_agreement:
            batches = self.trainer.num_training_batches * (last_warm_up_epoch + 1)
            so_far = f"{batches} {'batch' if batches == 1 else 'batches'} so far"
            fix = f"Raise method.module.distill_epochs ({so_far}) or train on more images"
            if hp.distill_epochs > self.trainer.max_epochs:  # the run ends inside the warm-up
                fix = (
                    f"The run ({self.trainer.max_epochs} epochs) ends inside the warm-up (distill_epochs="
                    f"{hp.distill_epochs}): train longer (method.rounds x epochs_per_round) or on more images"
                )
            log.warning(
                "the distillation warm-up's last epoch (epoch %d, counting from 0) ends with H giving only %.1f%% of "
                "the training images' bits as their conditioning codes (distill_min_agreement: %.0f%%); the rounds "
                "start from codes H does not carry. %s",
                self.current_epoch,
                100 * agreement,
                100 * hp.distill_min_agreement,
                fix,
            )
