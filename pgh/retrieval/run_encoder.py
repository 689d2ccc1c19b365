"""Code new images as a finished run does: a deep run's final checkpoint, loaded with the run's
method class, or a shallow run's fitted hasher (`hasher.pt`), fed the way training fed it (images
read at the dataset's shape, or the run's features of them for methods that read features).
`pgh-index` codes image collections with it."""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from pgh.callbacks.checkpointing import STOPPED_CHECKPOINT
from pgh.data.files import read_images
from pgh.features.base import resolve_device
from pgh.hashing import load_hasher
from pgh.io import read_checkpoint

log = logging.getLogger(__name__)


def load_deep_model(model_class: type, checkpoint: Path, device: torch.device | str = "cpu") -> Any:
    """The trained model of a deep run's `checkpoint`. A network built on pretrained weights (DeepBit's
    VGG16) is rebuilt without reading them: the checkpoint holds every weight, and the ImageNet file
    (500 MB, needed only to train) need not be on the machine that codes images."""
    rebuild = {"pretrained": False} if "pretrained" in inspect.signature(model_class.__init__).parameters else {}
    return model_class.load_from_checkpoint(checkpoint, map_location=device, weights_only=False, **rebuild)


class RunEncoder:
    """encoder(paths) -> bool codes [n, bits] of those image files, by the model of run directory `run`
    (the file `model_file`); `code_images` codes images already read (at `channels` x `size` x `size`)."""

    def __init__(self, run: str | Path, device: str = "auto") -> None:
        self.run = Path(run)
        config, metrics = self.run / "config.yaml", self.run / "metrics.json"
        if not config.exists() or not metrics.exists():
            raise FileNotFoundError(f"{self.run} is not a finished pgh-train run (no config.yaml or metrics.json)")
        cfg = OmegaConf.load(config)
        info = json.loads(metrics.read_text())
        self.dataset = info.get("dataset", cfg.dataset.get("name"))  # named in pgh-index's warnings
        self.device = resolve_device(device, key="--device")  # pgh-index's option
        if "module" in cfg.method:
            # a run stopped in mid-epoch was evaluated on the model it stopped with, which last.ckpt (its
            # last step checkpoint, where a resume continues) does not hold
            model_file = STOPPED_CHECKPOINT if info.get("stopped_mid_epoch") else "last.ckpt"
            checkpoint = self.run / "checkpoints" / model_file
            if not checkpoint.exists():
                raise FileNotFoundError(
                    f"{checkpoint} is missing: the run did not finish (or its checkpoints were moved)"
                )
            model_class = get_class(cfg.method.module._target_)
            self.model_file = checkpoint
            read_checkpoint(checkpoint)  # a file cut short: named, before Lightning's loader fails in torch's words
            self.model = load_deep_model(model_class, checkpoint, self.device)
            self.model.eval()
            self.bits, self.code = int(self.model.hparams.bits), self.model.encode_inputs
            reads_features = self.model.input_kind == "features"
        else:
            hasher_file = self.run / "hasher.pt"
            if not hasher_file.exists():
                raise FileNotFoundError(
                    f"{hasher_file} is missing: the shallow run predates saved hashers; rerun its command "
                    f"with hydra.run.dir={self.run} (fitting takes seconds to minutes) to write it"
                )
            self.model_file, self.hasher = hasher_file, load_hasher(hasher_file)
            if self.hasher.distance != "hamming":
                log.warning(
                    "%s ranks its codes by %s distance; pgh-index ranks by Hamming distance",
                    type(self.hasher).__name__,
                    self.hasher.distance,
                )
            self.bits, self.code, reads_features = self.hasher.bits, self.hasher.encode, True
        self.features = None
        if reads_features:  # on --device, not on the device the run was trained on
            device_override = {"device": str(self.device)} if "device" in cfg.features else {}
            try:
                self.features = instantiate(cfg.features, **device_override)
            except InstantiationException as error:  # e.g. a missing weights file: its own message
                if error.__cause__ is None:
                    raise
                raise error.__cause__ from None
        if "image_shape" in info:
            self.channels, height, width = info["image_shape"]
            if height != width:
                raise ValueError(f"{self.run}: the dataset's images are {height}x{width}; pgh-index reads square ones")
            self.size = height
        elif self.features is None:  # runs from before metrics.json recorded the shape: the network's own input
            # (DeepBit resolves its size from its backbone's defaults into attributes; the others keep it in hparams)
            self.channels = int(getattr(self.model, "channels", None) or self.model.hparams.channels)
            self.size = int(getattr(self.model, "image_size", None) or self.model.hparams.image_size)
        else:
            raise ValueError(
                f"{metrics} has no image_shape (the run predates it), and its {info.get('method')} reads features "
                f"of the dataset's images, which need their size: rerun its command with hydra.run.dir={self.run} "
                "ckpt_path=last (it reloads the final checkpoint and rewrites metrics.json)"
            )

    def __call__(self, paths: list[str | Path]) -> torch.Tensor:
        """bool codes [n, bits] (on the CPU) of the image files at `paths`, read and resized as the run's
        dataset was (`code_images` codes images already in memory)."""
        return self.code_images(read_images(paths, self.channels, self.size))

    def code_images(self, images: torch.Tensor) -> torch.Tensor:
        """bool codes [n, bits] of uint8 images [n, channels, size, size] (`channels`, `size`: the run's)."""
        if len(images) == 0:
            return torch.zeros(0, self.bits, dtype=torch.bool)
        return self.code(images if self.features is None else self.features(images))
