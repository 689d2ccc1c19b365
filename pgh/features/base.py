"""The feature-extractor interface: a callable from uint8 images [N, C, H, W] to float32 [N, D]."""

from __future__ import annotations

import torch


def resolve_device(device: str, key: str = "device") -> torch.device:
    """'auto' means CUDA when present, else CPU; anything else is passed to torch.device. Errors name
    the setting as `key`."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{key}={device!r} asked for CUDA but none is available; use {key}=auto or {key}=cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"{key}={device!r} is not a device: auto, cpu, cuda or cuda:N") from None


class FeatureExtractor:
    """Base class: batches the images, checks them, and concatenates the per-batch features.

    `version` is part of the feature cache's key: raise it in a subclass whose features change for the
    same settings (a fix of its computation), so that no cache made by the earlier code is read."""

    version = 1

    def __init__(self, batch_size: int = 512, device: str = "auto") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.device = resolve_device(device, key="features.device")  # as pgh-train's command line names it

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if images.shape[0] == 0:
            raise ValueError("no images to extract features from: images has shape " + str(tuple(images.shape)))
        out = [
            self.extract(images[i : i + self.batch_size].to(self.device)).float().cpu()
            for i in range(0, images.shape[0], self.batch_size)
        ]
        return torch.cat(out)

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] on self.device -> features [B, D]."""
        raise NotImplementedError

    def cache_identity(self) -> dict:
        """What, beside the extractor's settings, its features depend on (the feature cache's key)."""
        return {"extractor": type(self).__name__, "version": self.version}
