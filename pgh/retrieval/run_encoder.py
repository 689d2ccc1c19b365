"""Code new images as a finished deep run does: its final checkpoint, loaded with the run's method
class, fed the way training fed it (images read at the dataset's shape, or the run's features of
them for methods that read features). `pgh-index` codes image collections with it."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from pgh.data.files import read_images
from pgh.features.base import resolve_device


class RunEncoder:
    """encoder(paths) -> bool codes [n, bits] of those image files, by the model of run directory `run`."""

    def __init__(self, run: str | Path, device: str = "auto") -> None:
        self.run = Path(run)
        config, metrics = self.run / "config.yaml", self.run / "metrics.json"
        if not config.exists() or not metrics.exists():
            raise FileNotFoundError(f"{self.run} is not a finished pgh-train run (no config.yaml or metrics.json)")
        cfg = OmegaConf.load(config)
        info = json.loads(metrics.read_text())
        if "module" not in cfg.method:
            raise ValueError(
                f"{self.run} is a run of the shallow hasher {info.get('method', '?')}, which keeps no model to code "
                "new images (its codes of the protocol's images are in database_codes.npy); pgh-index needs a "
                "deep run (PGH, DH, DeepBit, BGAN)"
            )
        checkpoint = self.run / "checkpoints" / "last.ckpt"
        if not checkpoint.exists():
            raise FileNotFoundError(f"{checkpoint} is missing: the run did not finish (or its checkpoints were moved)")
        self.device = resolve_device(device)
        model_class = get_class(cfg.method.module._target_)
        self.model = model_class.load_from_checkpoint(checkpoint, map_location=self.device, weights_only=False).eval()
        self.bits = int(self.model.hparams.bits)
        self.features = instantiate(cfg.features) if self.model.input_kind == "features" else None
        if "image_shape" in info:
            self.channels, height, width = info["image_shape"]
            if height != width:
                raise ValueError(f"{self.run}: the dataset's images are {height}x{width}; pgh-index reads square ones")
            self.size = height
        elif self.features is None:  # runs from before metrics.json recorded the shape: the network's own input
            # (DeepBit resolves its size from its trunk into attributes; the others keep it in hparams)
            self.channels = int(getattr(self.model, "channels", None) or self.model.hparams.channels)
            self.size = int(getattr(self.model, "image_size", None) or self.model.hparams.image_size)
        else:
            raise ValueError(
                f"{metrics} has no image_shape (the run predates it), and its {info.get('method')} reads features "
                f"of the dataset's images, which need their size: rerun its command with hydra.run.dir={self.run} "
                "ckpt_path=last (it reloads the final checkpoint and rewrites metrics.json)"
            )

    def __call__(self, paths: list[str | Path]) -> torch.Tensor:
        images = read_images(paths, self.channels, self.size)
        inputs = images if self.features is None else self.features(images)
        return self.model.encode_inputs(inputs)
