"""On-disk feature cache keyed by the dataset's content and the feature config.

Features are computed per image over the whole pool, so the split does not change them; the key is
the dataset name and content fingerprint plus the feature extractor's resolved config and its
`cache_identity()` (code version; for VGG16 the weights file's path, size and modification time, or
the seed of random weights), and any change to one of them gives a new key (a new file). Files are
written atomically; a cache that cannot be written (a read-only or full disk) or read is a warning.
Processes that need the same missing features at once (a sweep's jobs) take turns on a lock file
beside the cache file: one computes them, the others then read its file.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from pgh.data.datasets import ImageDataset
from pgh.io import atomic_path, file_lock

log = logging.getLogger(__name__)


def cache_key(dataset: ImageDataset, feature_config: dict[str, Any]) -> str:
    payload = json.dumps(
        {"dataset": dataset.name, "content": dataset.fingerprint(), "features": feature_config},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha1(payload.encode()).hexdigest()[:20]


# the dataset name's bytes in a cache file's name: with the key, `.lock` and `atomic_path`'s
# `.<name>.XXXXXXXX.tmp` well within the 255 bytes file systems allow a name
NAME_BYTES = 100


def cache_file_name(dataset_name: str, key: str) -> str:
    """`<dataset name>-<key>.pt`, the name cut to NAME_BYTES and a path separator in it made `_` (a
    folder dataset's name holds its root: `folder (/data/shoes)`); the key hashes the whole name, so two
    names that come out alike still get files of their own."""
    readable = dataset_name.encode("utf-8", "surrogateescape")[:NAME_BYTES].decode("utf-8", "ignore")
    readable = readable.replace(os.sep, "_").replace("\0", "_")
    return f"{readable}-{key}.pt"


def cached_features(
    dataset: ImageDataset,
    extractor: Callable[[torch.Tensor], torch.Tensor],
    feature_config: dict[str, Any],
    cache_dir: str | Path | None,
    check_width: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Features of every image of `dataset`, from `cache_dir` when present there, else computed;
    before computing them, `check_width` gets the features' width (from the first image's), so that
    a setting they do not suit is refused before the whole dataset's features."""
    if cache_dir is None:
        return compute(dataset, extractor, check_width)
    # device and batch size do not change the features; the extractor's code version and what it
    # loads (a weights file) do
    key_config = {k: v for k, v in feature_config.items() if k not in ("device", "batch_size")}
    identity = getattr(extractor, "cache_identity", None)
    if identity is not None:
        key_config["identity"] = identity()
    path = Path(cache_dir) / cache_file_name(dataset.name, cache_key(dataset, key_config))
    seen = file_id(path)
    feats = read_cache(path, len(dataset))
    if feats is None:
        with cache_lock(path):
            # another process (a sweep's job started beside this one) may have written them meanwhile
            if file_id(path) not in (None, seen):
                feats = read_cache(path, len(dataset))
            if feats is None:
                remove_stale_temporaries(path)
                feats = compute(dataset, extractor, check_width)
                try:
                    with atomic_path(path) as tmp:
                        torch.save(feats, tmp)
                except (OSError, RuntimeError) as e:  # torch.save's zip writer reports a full disk as a RuntimeError
                    log.warning(
                        "could not write the feature cache %s (%s): the features are computed again next time", path, e
                    )
                return feats
    log.info("features from cache %s", path)
    if check_width is not None:  # a refusal is the command's, not the file's
        check_width(feats.shape[1])
    return feats


def read_cache(path: Path, rows: int) -> torch.Tensor | None:
    """The features matrix in `path`, or None when it is missing, holds another number of rows, or
    cannot be read (a warning)."""
    if not path.exists():
        return None
    try:
        feats = torch.load(path, map_location="cpu", weights_only=True)
        if not (isinstance(feats, torch.Tensor) and feats.ndim == 2):
            held = f"a {feats.ndim}-D tensor" if isinstance(feats, torch.Tensor) else type(feats).__name__
            raise ValueError(f"it holds {held}, not a features matrix")
    except Exception as e:  # noqa: BLE001 - any unreadable cache file is recomputed, never trusted
        log.warning("ignoring unreadable feature cache %s (%s)", path, e)
        return None
    if feats.shape[0] != rows:
        log.warning("ignoring feature cache %s: %d rows for the dataset's %d images", path, feats.shape[0], rows)
        return None
    return feats


def file_id(path: Path) -> tuple[int, int, int] | None:
    """Which file `path` is now (an atomic write puts a new one there), None when there is none."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


@contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """Holds `<cache file>.lock`, so that of the processes computing the same features one computes
    them and the others wait, then read its file. Where the lock file cannot be made (a read-only
    cache folder) or locked (some network file systems), nothing is held."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only cache folder: computed without waiting
        yield
        return

    def unlockable(error: OSError) -> None:  # ENOLCK, or NFS on a read-only lock file
        log.warning("cannot lock %s (%s): features computed without waiting for other jobs", path, error)

    def waiting() -> None:
        log.info("another process is computing the features %s: waiting for it", path)

    with file_lock(path.with_name(f"{path.name}.lock"), on_wait=waiting, on_unlockable=unlockable):
        yield


STALE_TEMPORARY_S = 24 * 3600


def remove_stale_temporaries(path: Path) -> None:
    """Deletes the temporary files (`atomic_path`'s `.<name>.*.tmp`) of writes of `path` that were
    killed, once over a day old (a write under way is never that old)."""
    for tmp in path.parent.glob(glob.escape(f".{path.name}.") + "*.tmp"):
        try:
            if time.time() - tmp.stat().st_mtime > STALE_TEMPORARY_S:
                tmp.unlink()
        except OSError:
            pass


def compute(
    dataset: ImageDataset, extractor: Callable[[torch.Tensor], torch.Tensor], check_width: Callable[[int], None] | None
) -> torch.Tensor:
    if check_width is not None and len(dataset):
        check_width(extractor(dataset.images[:1]).shape[1])
    return extractor(dataset.images)
