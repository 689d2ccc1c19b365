"""What every deep method's LightningModule offers `train()`: which inputs it reads, a hook that
sees the training set once before fitting, and batched encoding to bool codes.

Training batches are `(inputs, index)`: `inputs` are uint8 images [B, C, H, W] when
`input_kind == "images"`, or float features [B, D] from the `features` group when
`input_kind == "features"`; `index` is each sample's position in the training set.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable
from types import SimpleNamespace

import lightning as L
import torch
import torch.nn.functional as F

INPUT_KINDS = ("images", "features")

log = logging.getLogger(__name__)


def to_network_input(images: torch.Tensor, image_size: int, channels: int) -> torch.Tensor:
    """uint8 [B, C, H, W] -> float in [-1, 1], resized to image_size and with `channels` channels."""
    x = images.float().div(127.5).sub(1.0)
    if x.shape[1] != channels:
        if x.shape[1] == 3 and channels == 1:
            x = x.mean(1, keepdim=True)
        elif x.shape[1] == 1 and channels == 3:
            x = x.expand(-1, 3, -1, -1)
        else:
            hint = ""
            if images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):  # [n, H, W, C], as PIL and NumPy lay it
                hint = (
                    f" (shape {list(images.shape)} looks channels-last: give [n, C, H, W], e.g. x.permute(0, 3, 1, 2))"
                )
            raise ValueError(f"cannot feed {x.shape[1]}-channel images to a {channels}-channel network{hint}")
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x


def lossy_conversion(image_shape: tuple[int, ...], channels: int, image_size: int) -> list[str]:
    """What `to_network_input` loses of images of `image_shape` [C, H, W] read by a `channels`-channel
    network at `image_size` px: their colour, their detail; [] when it loses nothing (it may upsample)."""
    lost = []
    if image_shape[0] == 3 and channels == 1:
        lost.append("turns the colour images grey")
    if max(image_shape[1:]) > image_size:
        lost.append(f"shrinks them from {image_shape[1]}x{image_shape[2]} to {image_size}x{image_size} px")
    return lost


def keeping_size(side: int, image_sizes: tuple[int, ...] | None) -> int:
    """The `image_size` that keeps images of `side` px whole: `side` itself where the networks take any
    size or that one, else the smallest they take above it (upsampled), else their largest."""
    if image_sizes is None or side in image_sizes:
        return side
    return min((s for s in image_sizes if s > side), default=max(image_sizes))


def is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_number(name: str, value, minimum: float = 0.0, strict: bool = False) -> float:
    """value as a float, or a ValueError naming it: a finite number >= minimum (> with strict)."""
    if not is_finite_number(value) or value < minimum or (strict and value == minimum):
        bound = "" if minimum == -math.inf else f" {'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"{name}={value!r} must be a finite number{bound}")
    return float(value)


def check_adam_betas(betas, name: str = "betas") -> tuple[float, float]:
    """Adam's (beta1, beta2), each in [0, 1), or a ValueError naming them."""
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        raise ValueError(f"{name}={betas!r} must be two numbers (Adam's beta1, beta2), e.g. [0.5, 0.999]")
    for beta in betas:
        if check_number(name, beta) >= 1:
            raise ValueError(f"{name}={list(betas)} must each be in [0, 1)")
    return float(betas[0]), float(betas[1])


class DeepHasher(L.LightningModule):
    input_kind: str = "images"
    # constructor arguments that set the networks' parameter shapes (beside `bits`): a run resumed
    # from a checkpoint must keep them, which `pgh-train` checks before it touches the run
    architecture: tuple[str, ...] = ()
    # the `image_size` values its networks are built for; None: any
    image_sizes: tuple[int, ...] | None = None

    @classmethod
    def check_arguments(cls, **kwargs) -> None:
        """Refuse bad constructor arguments without building anything: `pgh-train` calls it before the
        features and initial codes are computed, and each method's constructor calls it first. Here:
        unknown or missing names (TypeError); the methods add their own checks."""
        cls.bind_arguments(kwargs)

    @classmethod
    def bind_arguments(cls, kwargs: dict) -> SimpleNamespace:
        """The constructor's arguments, defaults filled in, as attributes (unknown or missing: TypeError)."""
        arguments = inspect.signature(cls.__init__).bind(None, **kwargs)
        arguments.apply_defaults()
        return SimpleNamespace(**{k: v for k, v in arguments.arguments.items() if k != "self"})

    @staticmethod
    def constructor_arguments(frame_locals: dict) -> dict:
        """A constructor's own arguments from its `locals()` (taken before it binds any other name)."""
        return {k: v for k, v in frame_locals.items() if k not in ("self", "__class__")}

    def on_train_start(self) -> None:
        """A resumed run trains with this command's learning rates, betas and weight decay: Lightning
        restores the optimizers' param_groups from the checkpoint, which would keep the old settings
        without a word (a resume with `method.module.lr_h=1e-4` trained on at 2e-4)."""
        if self.trainer.ckpt_path is not None:
            apply_configured_settings(self.trainer.optimizers, as_list(self.configure_optimizers()))

    def on_before_fit(
        self, train_inputs: torch.Tensor, train_features: torch.Tensor, device: torch.device | str = "cpu"
    ) -> None:
        """Called once with the whole training set before `Trainer.fit` (e.g. to build a kNN graph), with
        the device to build it on: the trainer's root device, each DDP rank's own GPU."""

    @torch.no_grad()
    def encode_inputs(self, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """bool codes [n, bits] of inputs of `input_kind`, in eval mode, batched on this device."""
        raise NotImplementedError

    def log_losses(self, values: dict[str, torch.Tensor], batch_size: int, prog_bar: bool = False) -> None:
        """Each value as `<name>_step` (this batch on this rank) and `<name>_epoch` (the epoch's mean over
        all ranks), the names Lightning gives on_step + on_epoch, but synced under DDP once an epoch:
        sync_dist on a step value would add an all-reduce per value to every step."""
        self.log_dict({f"{k}_step": v for k, v in values.items()}, prog_bar=prog_bar, batch_size=batch_size)
        epoch = {f"{k}_epoch": v for k, v in values.items()}
        self.log_dict(epoch, on_step=False, on_epoch=True, sync_dist=True, batch_size=batch_size)

    def network_input(self) -> tuple[int, int] | None:
        """(channels, image size) of what the networks read, which `prepare` converts and resizes the
        images to; None for methods on features."""
        if self.input_kind != "images" or not {"channels", "image_size"} <= set(self.hparams):
            return None  # features, or a user's own image method with its own names
        return int(self.hparams["channels"]), int(self.hparams["image_size"])

    def prepare(self, inputs: torch.Tensor) -> torch.Tensor:
        """Raw inputs (on this device) -> what the network reads; image methods resize and rescale."""
        return inputs

    def check_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """`inputs` (a tensor or a NumPy array) as a tensor of this method's `input_kind`: uint8 images
        [n, C, H, W], or float32 features [n, dim]; anything else is a TypeError naming the fix."""
        inputs = torch.as_tensor(inputs)
        name, got = type(self).__name__, f"{inputs.dtype} {list(inputs.shape)}"
        if self.input_kind == "images" and (inputs.dtype != torch.uint8 or inputs.ndim != 4):
            # float images in [0, 1] would be read as 0..255 and silently give other codes
            if inputs.ndim == 3:
                fix = "add the channel axis, x[:, None] for grey images [n, H, W]"
            elif inputs.ndim != 4:
                fix = "give a batch of images [n, C, H, W]"
            elif inputs.is_floating_point():
                fix = "(x * 255).round().to(torch.uint8) for images in [0, 1]"
            else:
                fix = "x.to(torch.uint8) for whole numbers in 0..255"
            raise TypeError(f"{name} codes uint8 images [n, C, H, W] in 0..255, got {got}: convert them, e.g. {fix}")
        if self.input_kind == "features":
            if inputs.ndim != 2 or not inputs.is_floating_point():
                raise TypeError(f"{name} codes float features [n, dim] (the run's features group), got {got}")
            inputs = inputs.float()
        return inputs

    @torch.no_grad()
    def encode_prepared(
        self, inputs: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 512
    ) -> torch.Tensor:
        """Apply `encode` (a network's bool encoder) to `prepare`d chunks of `inputs`, one chunk on the
        device at a time, in eval mode (the mode is restored afterwards); bool codes [n, bits] on the CPU."""
        inputs = self.check_inputs(inputs)
        if inputs.shape[0] == 0:
            return torch.zeros(0, self.hparams.bits, dtype=torch.bool)
        was_training = self.training
        self.eval()  # each code from its own input alone (BatchNorm's running statistics), not from its chunk
        try:
            return torch.cat(
                [
                    encode(self.prepare(inputs[i : i + batch_size].to(self.device))).cpu()
                    for i in range(0, inputs.shape[0], batch_size)
                ]
            )
        finally:
            self.train(was_training)


def as_tuple(value):
    return tuple(value) if isinstance(value, list) else value


def as_list(optimizers) -> list[torch.optim.Optimizer]:
    """configure_optimizers' result (one optimizer or a list of them, as our methods return) as a list."""
    if isinstance(optimizers, torch.optim.Optimizer):
        return [optimizers]
    if isinstance(optimizers, (list, tuple)) and all(isinstance(o, torch.optim.Optimizer) for o in optimizers):
        return list(optimizers)
    raise TypeError(f"configure_optimizers must return an optimizer or a list of them, got {type(optimizers).__name__}")


def apply_configured_settings(restored: list[torch.optim.Optimizer], configured: list[torch.optim.Optimizer]) -> None:
    """Copy each configured param_group's settings (lr, betas, weight_decay, ...) onto the restored
    optimizers, whose moment estimates stay; a changed setting is logged. A per-round schedule keeps
    the configured rate as `initial_lr`: that is the one compared and replaced."""
    if len(restored) != len(configured):
        raise ValueError(f"the checkpoint restored {len(restored)} optimizers, this run configures {len(configured)}")
    for number, (old, new) in enumerate(zip(restored, configured)):
        for group_number, (group, fresh) in enumerate(zip(old.param_groups, new.param_groups)):
            for key, value in fresh.items():
                if key == "params":
                    continue
                before = group.get("initial_lr", group["lr"]) if key == "lr" else group.get(key)
                if as_tuple(before) != as_tuple(value):  # a checkpoint's betas come back as a list
                    log.info("optimizer %d, group %d: %s=%s from this command (the checkpoint trained with %s)",
                             number, group_number, key, value, before)  # fmt: skip
                group[key] = value
            group.pop("initial_lr", None)  # the schedule takes the configured rate again from `lr`
