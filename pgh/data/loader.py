"""The deep methods' training loader: shuffled batches whose position in the epoch goes into the
checkpoint, so that a run resumed in mid-epoch trains the rest of that epoch's batches in the order
the uninterrupted run would have, and from there gives its numbers bit for bit."""

from collections.abc import Iterator
from itertools import islice
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler


class EpochSeedSampler(RandomSampler):
    """`RandomSampler` (same seed draw from torch's global generator, same permutation) that keeps
    the seed of the epoch it is drawing, so that the epoch's order can be drawn again."""

    def __init__(self, data_source: Any) -> None:
        super().__init__(data_source)
        self.epoch_seed: int | None = None  # the seed of the epoch under way (or the last one)
        self.replay_seed: int | None = None  # set: the next epoch draws this seed's order, not a new one

    def __iter__(self) -> Iterator[int]:
        if self.replay_seed is None:  # RandomSampler's own draw, on the epoch's first index
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
        else:
            seed, self.replay_seed = self.replay_seed, None
        self.epoch_seed = seed
        yield from RandomSampler(self.data_source, generator=torch.Generator().manual_seed(seed))


class _SkipFirstBatches:
    """The loader's batch sampler, less its first `skip` batches on the first pass that draws a batch
    only: a loader with worker processes makes a pass it never reads before the one it reads, and one
    with persistent workers keeps this sampler for every later epoch."""

    def __init__(self, batches: Any, skip: int) -> None:
        self.batches, self.skip = batches, skip

    def __len__(self) -> int:
        return len(self.batches)  # the epoch's length: Lightning counts the skipped batches as done

    def __iter__(self) -> Iterator[Any]:
        skip, self.skip = self.skip, 0
        yield from islice(iter(self.batches), skip, None)


class ResumableLoader(DataLoader):
    """A `DataLoader` with Lightning's `state_dict` / `load_state_dict`: the state is how many batches
    of the epoch it has given and its `EpochSeedSampler`'s seed (None under DDP, whose
    `DistributedSampler` draws each epoch's order from the seed and the epoch number). Loaded in
    mid-epoch, the next pass gives that epoch's remaining batches, and draws nothing from torch's
    global generator: the checkpoint's generator state was saved after the epoch's draws."""

    _batches_given = 0
    _resume: tuple[int, int | None] | None = None  # (batches to skip, the sampler's seed)
    _skip = 0

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self._batches_given, "seed": getattr(self.sampler, "epoch_seed", None)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        batches, seed = int(state_dict["batches"]), state_dict["seed"]
        # saved at an epoch's start or end: the next epoch starts afresh; saved under another trainer
        # (DDP's checkpoint has no seed, a single process's none for DDP's sampler): the epoch's
        # remaining batches come from that trainer's own order
        self._resume = (batches, None if seed is None else int(seed)) if 0 < batches < len(self) else None

    @property
    def _index_sampler(self) -> Any:
        batches = super()._index_sampler
        return _SkipFirstBatches(batches, self._skip) if self._skip else batches

    def __iter__(self) -> Iterator[Any]:
        resume, self._resume = self._resume, None
        if resume is None:
            self._batches_given = 0
            return self._counted(super().__iter__())
        batches, seed = resume
        if isinstance(self.sampler, EpochSeedSampler) and seed is not None:
            self.sampler.replay_seed = seed
        self._batches_given, self._skip = batches, batches
        try:
            with torch.random.fork_rng(devices=[]):  # the workers' base seed, already drawn before the checkpoint
                iterator = super().__iter__()
        finally:
            self._skip = 0
        return self._counted(iterator)

    def _counted(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            self._batches_given += 1
            yield batch


def training_loader(dataset: Any, batch_size: int, drop_last: bool, num_workers: int) -> ResumableLoader:
    """Shuffled batches of `dataset` for a deep method's `trainer.fit` (DDP gives each rank its share)."""
    return ResumableLoader(
        dataset, batch_size=batch_size, sampler=EpochSeedSampler(dataset), drop_last=drop_last, num_workers=num_workers
    )
