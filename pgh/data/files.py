"""Image files on disk: find them under a folder and read them as uint8 tensors of one shape, naming
every file that cannot be read. `load_folder` (a labelled folder dataset) and `pgh-index` (coding an
unlabelled collection) read images through here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def find_images(root: str | Path) -> list[Path]:
    """Every file under `root` (recursively) with an image suffix, sorted; `root` may be one image."""
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"{root} is not an image (suffix not in {sorted(IMAGE_SUFFIXES)})")
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_images(paths: Sequence[str | Path], channels: int, size: int) -> torch.Tensor:
    """uint8 [n, channels, size, size]: each file converted to grayscale (channels 1) or RGB (3) and
    resized bilinearly. Raises ValueError listing every unreadable file."""
    from PIL import Image, UnidentifiedImageError

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    images, bad = [], []
    for path in paths:
        try:
            with Image.open(path) as im:
                im = im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR)
                array = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            bad.append(f"{path} ({type(e).__name__})")
            continue
        images.append(array[None] if channels == 1 else array.transpose(2, 0, 1))
    if bad:
        raise ValueError(f"{len(bad)} unreadable image(s):\n  " + "\n  ".join(bad))
    if not images:
        return torch.zeros(0, channels, size, size, dtype=torch.uint8)
    return torch.from_numpy(np.stack(images))
