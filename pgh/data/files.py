"""Image files on disk: find them under a folder and read them as uint8 tensors of one shape, naming
every file that cannot be read. `load_folder` (a labelled folder dataset) and `pgh-index` (coding an
unlabelled collection) read images through here."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)

READ_BATCH_BYTES = 32 * 2**20  # bytes of images read_images reads at a time, into the tensor it returns

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def find_images(root: str | Path, within: str | Path | None = None) -> list[Path]:
    """Every file under `root` (recursively, through symbolic links to folders) with an image suffix,
    sorted, but hidden files and what hidden folders hold (.ipynb_checkpoints, .git, ._ files of
    macOS); `root` may be one image. A folder reached twice (two links to it, or a link to a folder
    above it) is read once, and a folder really below `root` (or `within`) only by its own path, not
    through a link to it; broken symbolic links are left out and named in a warning."""
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"{root} is not an image (suffix not in {sorted(IMAGE_SUFFIXES)})")
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist")
    # a folder really below root (or `within`, e.g. the dataset root around a class folder) is read by its
    # own path, never through a link to it (the link may sort first, and paths decide the order of images,
    # hence the split and the caches; a link to another class would copy its images). A resolved path has
    # no links in it, so a target whose resolved path lies under the resolved base is reached without one
    base = os.path.realpath(within if within is not None else root)
    found, broken, visited = [], [], {os.path.realpath(root)}
    for folder, subfolders, names in os.walk(root, followlinks=True):
        # sorted, so that of two links to one folder the same one is read on every run
        subfolders[:] = [name for name in sorted(subfolders) if not name.startswith(".")]
        for name in list(subfolders):
            path = os.path.join(folder, name)
            real = os.path.realpath(path)
            if real in visited or (os.path.islink(path) and os.path.commonpath([real, base]) == base):
                subfolders.remove(name)
            else:
                visited.add(real)
        for path in (Path(folder, name) for name in names if not name.startswith(".")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                found.append(path)
            elif path.is_symlink() and not path.exists():
                broken.append(path)
    warn_broken_links(broken, root)
    return sorted(found)


def warn_broken_links(links: Sequence[Path], root: str | Path) -> None:
    """A warning naming symbolic links whose targets are gone (they are left out, as no file)."""
    if links:
        shown = [f"{link} -> {os.readlink(link)}" for link in sorted(links)[:10]]
        more = f"\n  and {len(links) - 10} more" if len(links) > 10 else ""
        log.warning("%d broken symbolic link(s) under %s, left out (their targets are gone):\n  %s%s",
                    len(links), root, "\n  ".join(shown), more)  # fmt: skip


def read_images(paths: Sequence[str | Path], channels: int, size: int, workers: int = 0) -> torch.Tensor:
    """uint8 [n, channels, size, size]: each file converted to grayscale (channels 1) or RGB (3) and
    resized bilinearly, in the order given; `workers` > 0 reads in that many processes. Raises
    ValueError listing every unreadable file."""
    # filled batch by batch: a list of every image, then stacked, took twice the images' memory at the end
    images = torch.empty(len(paths), channels, size, size, dtype=torch.uint8)
    batch_size, done = max(1, READ_BATCH_BYTES // max(channels * size * size, 1)), 0
    for batch in iter_image_batches(paths, channels, size, batch_size, workers=workers):
        images[done : done + len(batch)] = batch
        done += len(batch)
    return images


def iter_image_batches(
    paths: Sequence[str | Path], channels: int, size: int, batch_size: int, workers: int = 0
) -> Iterator[torch.Tensor]:
    """uint8 batches [<= batch_size, channels, size, size] of the files, in order, read as `read_images`
    reads them; with `workers` > 0, worker processes (a torch DataLoader) read the next batches while
    the caller works on this one. After the last batch, raises ValueError listing every unreadable
    file (they are left out of the batches)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    files = ImageFiles(paths, channels, size)
    loader = DataLoader(files, batch_size=batch_size, num_workers=workers, collate_fn=_stack_readable)
    bad: list[str] = []
    for images, errors in loader:
        bad += errors
        if len(images):
            yield images
    if bad:
        raise ValueError(
            f"{len(bad)} unreadable image(s):\n  " + "\n  ".join(bad) + "\nrepair or remove them, or move them out "
            "of the folder that is read"
        )


class ImageFiles(Dataset):
    """files[i] -> (uint8 [channels, size, size], "") or, for a file that cannot be read, (None, "<path> (<error>)")."""

    def __init__(self, paths: Sequence[str | Path], channels: int, size: int) -> None:
        self.paths, self.channels, self.size = list(paths), channels, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[np.ndarray | None, str]:
        from PIL import Image, ImageOps

        path = self.paths[i]
        try:
            with Image.open(path) as im:
                # 16-bit grey (I;16, or I for a PNG, which has no 32-bit mode: Pillow before 10.3 read it so)
                sixteen_bit = im.mode.startswith("I;16") or (im.mode == "I" and im.format == "PNG")
                if im.mode in ("I", "F") and not sixteen_bit:
                    kind = "integer" if im.mode == "I" else "float"
                    return None, f"{path} (32-bit {kind} pixels have no fixed range: save it with 8 or 16 bits)"
                im = ImageOps.exif_transpose(im)  # a photo tagged "rotated" as it is shown
                if sixteen_bit:  # scaled to 8 bits (convert would clip it at 255)
                    grey = np.asarray(im).astype(np.int64).clip(0, 65535) // 257
                    im = Image.fromarray(grey.astype(np.uint8), "L")
                im = im.convert("L" if self.channels == 1 else "RGB").resize((self.size, self.size), Image.BILINEAR)
                array = np.asarray(im, dtype=np.uint8)
        # any error: a damaged or unusual file raises one of many types (a ValueError for a mode Pillow
        # cannot convert, DecompressionBombError), in a worker process too; each is listed with its file
        except Exception as e:  # noqa: BLE001
            return None, f"{path} ({_reason(e)})"
        return (array[None] if self.channels == 1 else array.transpose(2, 0, 1)), ""


def _reason(error: Exception) -> str:
    """Why a file could not be read, in words (the path is given beside it)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(error, Image.DecompressionBombError):
        return (
            f"{str(error).rstrip('.')}: larger than Pillow's limit for an image; shrink it, or move it out of the "
            "folder that is read"
        )
    if isinstance(error, UnidentifiedImageError):
        return "not an image file Pillow can read"
    if isinstance(error, OSError) and error.strerror:  # str() would repeat the path
        return error.strerror
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _stack_readable(items: list[tuple[np.ndarray | None, str]]) -> tuple[torch.Tensor, list[str]]:
    """A batch of the readable images, and the errors of the others."""
    arrays = [array for array, _ in items if array is not None]
    errors = [error for _, error in items if error]
    if not arrays:
        return torch.zeros(0, dtype=torch.uint8), errors
    return torch.from_numpy(np.stack(arrays)), errors
