"""Training data order that a killed run can pick up mid-epoch, exactly where it stopped.

`EpochSampler` draws the order of epoch e as a permutation seeded by (seed, e) alone, so any epoch's
order can be rebuilt without replaying the ones before it. `ResumableDataLoader` counts the
batches it has handed out in the current epoch; Lightning stores its `state_dict()` in every
checkpoint (`FitLoop.on_save_checkpoint`, as for any loader with `state_dict`/`load_state_dict`)
and hands it back before the resumed fit builds its first iterator, which then skips the samples
the killed run had already trained on.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Sampler


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for one epoch's order, from the training seed and the epoch number."""
    # a seed drawn from sha256, not a content hash (those are store.hashing's; data/ sits below store/)
    digest = hashlib.sha256(f"value-harms-epoch-order/{int(seed)}/{int(epoch)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class EpochSampler(Sampler[int]):
    """Shuffled indices 0..n-1 whose order depends only on (seed, epoch); Lightning calls
    `set_epoch` at the start of every epoch. `resume_at(epoch, position)` makes the next
    iteration over that epoch start at `position` (a sample count) instead of 0."""

    def __init__(self, n: int, seed: int, shuffle: bool = True) -> None:
        self.n = int(n)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.epoch = 0
        self._resume: tuple[int, int] | None = None
        self.started = (0, 0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator()
        g.manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(self.n, generator=g).tolist()

    def resume_at(self, epoch: int, position: int) -> None:
        if not 0 <= int(position) <= self.n:
            raise ValueError(f"resume position {position} is outside 0..{self.n} (dataset of {self.n} examples)")
        self._resume = (int(epoch), int(position))

    def __iter__(self) -> Iterator[int]:
        # The order is fixed here, on the first batch: Lightning sets the epoch after building the
        # iterator. `started` says which epoch and start this iteration used.
        resume, self._resume = self._resume, None
        start = resume[1] if resume is not None and resume[0] == self.epoch else 0
        self.started = (self.epoch, start)
        return iter(self.order(self.epoch)[start:])

    def __len__(self) -> int:
        return self.n


class ResumableDataLoader(DataLoader):
    """A single-process DataLoader over an `EpochSampler` whose position survives a checkpoint.

    `state_dict()` gives {"seed", "n", "epoch", "position"}: position = samples of this epoch
    already handed to the training loop (the loop fetches a batch only when it trains on it: a
    sized loader is not prefetched by Lightning). `load_state_dict()` checks that the data are the
    same size and seed, and makes the next iteration over that epoch skip `position` samples.
    """

    def __init__(self, dataset, *, batch_size: int, seed: int, collate_fn, shuffle: bool = True) -> None:
        sampler = EpochSampler(len(dataset), seed, shuffle=shuffle)
        # Its own generator: building an iterator draws a base seed from the loader's generator,
        # which would otherwise come from (and shift) the global torch RNG that LoRA dropout uses.
        super().__init__(
            dataset,
            batch_size=int(batch_size),
            sampler=sampler,
            collate_fn=collate_fn,
            num_workers=0,
            generator=torch.Generator().manual_seed(int(seed)),
        )
        self._epoch = 0
        self._position = 0

    def __iter__(self):
        return self._count(super().__iter__())

    def _count(self, batches) -> Iterator[Any]:
        sampler: EpochSampler = self.sampler  # type: ignore[assignment]
        taken = 0
        for batch in batches:
            taken += 1
            epoch, start = sampler.started  # set when the first batch drew its indices
            self._epoch, self._position = epoch, min(sampler.n, start + taken * int(self.batch_size))
            yield batch

    def state_dict(self) -> dict[str, Any]:
        sampler: EpochSampler = self.sampler  # type: ignore[assignment]
        return {"seed": sampler.seed, "n": sampler.n, "epoch": self._epoch, "position": self._position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sampler: EpochSampler = self.sampler  # type: ignore[assignment]
        if int(state.get("n", -1)) != sampler.n or int(state.get("seed", -1)) != sampler.seed:
            raise ValueError(
                f"checkpoint data order (n={state.get('n')}, seed={state.get('seed')}) does not match "
                f"this run's (n={sampler.n}, seed={sampler.seed}): the checkpoint belongs to other data"
            )
        sampler.set_epoch(int(state["epoch"]))
        sampler.resume_at(int(state["epoch"]), int(state["position"]))
