"""The retrieval split: `query_per_class` queries per class, the rest is the database.

The training set is the database (labels are never used in training), or a seeded random subset of
it. The same seed gives the same split for every method, so rows of a table are comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pgh.io import save_npz


@dataclass(frozen=True)
class Split:
    query: torch.Tensor  # int64 indices into the pool
    database: torch.Tensor
    train: torch.Tensor

    def save(self, path: str | Path) -> None:
        save_npz(path, query=self.query.numpy(), database=self.database.numpy(), train=self.train.numpy())

    @classmethod
    def load(cls, path: str | Path) -> Split:
        with np.load(path) as f:
            return cls(*(torch.from_numpy(f[k]).long() for k in ("query", "database", "train")))


def class_indices(labels: torch.Tensor, owner: str = "") -> torch.Tensor:
    """`labels` as int64 class indices, refused when they are not integers (a cast would put 0.7 and
    0.2 in one class); `owner` prefixes the message (a dataset's name)."""
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(
            f"{owner}labels must be integers (class indices), got {labels.dtype}; map each class to 0, 1, 2, ..."
        )
    return labels.long()


def make_split(
    labels: torch.Tensor,
    query_per_class: int = 100,
    train_size: int | None = None,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> Split:
    """Draw `query_per_class` queries from each class; database = the rest; train ⊆ database.
    `class_names[label]` names a class in errors (pgh-train passes the dataset's, e.g. a folder's)."""
    labels = class_indices(torch.as_tensor(labels))
    for name, value in (("query_per_class", query_per_class), ("train_size", train_size), ("seed", seed)):
        whole = isinstance(value, int) and not isinstance(value, bool)
        if not (whole or (name == "train_size" and value is None)) or (name == "seed" and not 0 <= value < 2**63):
            within = " in 0..2**63 - 1" if name == "seed" else ""
            raise ValueError(f"split.{name}={value!r} must be a whole number{within}")
    if query_per_class < 1:
        raise ValueError(f"query_per_class must be >= 1, got {query_per_class}")
    classes, counts = (t.tolist() for t in labels.unique(return_counts=True))
    if len(classes) < 2:
        raise ValueError(
            "the dataset has a single class: with relevance = same label every item would be relevant and "
            "every metric 100%; a folder dataset needs a sub-folder per class, at least two"
        )
    sizes = dict(zip(classes, counts))
    small = [cls for cls in classes if sizes[cls] <= query_per_class]
    if small:
        name = (lambda cls: f"class {cls}") if class_names is None else (lambda cls: f"class {class_names[cls]!r}")
        named = ", ".join(f"{name(cls)} has {sizes[cls]} image{'s' * (sizes[cls] != 1)}" for cls in small[:5])
        named += f" (and {len(small) - 5} more classes)" if len(small) > 5 else ""
        largest = min(counts) - 1  # every class keeps an image for the database
        fix = (
            f"lower split.query_per_class to at most {largest}"
            if largest >= 1
            else "a class needs two images or more (a query and a database item): add images to it or leave it out"
        )
        raise ValueError(f"{named}, not more than split.query_per_class={query_per_class}; {fix}")
    gen = torch.Generator().manual_seed(seed)
    queries = []
    for cls in classes:
        members = (labels == cls).nonzero().flatten()
        queries.append(members[torch.randperm(members.numel(), generator=gen)[:query_per_class]])
    query = torch.cat(queries).sort().values
    is_query = torch.zeros(labels.numel(), dtype=torch.bool)
    is_query[query] = True
    database = (~is_query).nonzero().flatten()
    if train_size is None:
        train = database
    else:
        if not 0 < train_size <= database.numel():
            raise ValueError(
                f"split.train_size={train_size} must be in 1..{database.numel()} (the database size) "
                "or null for the whole database"
            )
        train = database[torch.randperm(database.numel(), generator=gen)[:train_size]].sort().values
    return Split(query=query, database=database, train=train)
