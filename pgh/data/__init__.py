"""Datasets (one labelled pool each) and the query / database / training split of the protocol."""

from pgh.data.datasets import (
    DatasetNotFoundError,
    ImageDataset,
    load_cifar10,
    load_digits,
    load_fashion_mnist,
    load_folder,
    load_mnist,
    load_mnist5k,
)
from pgh.data.split import Split, make_split

__all__ = [
    "DatasetNotFoundError",
    "ImageDataset",
    "Split",
    "load_cifar10",
    "load_digits",
    "load_fashion_mnist",
    "load_folder",
    "load_mnist",
    "load_mnist5k",
    "make_split",
]
