"""Paired batches: every batch carries every stream of the same clips, so a teacher's target and the
student's input always belong to one recording."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

LABEL = "label"
INDEX = "index"


class PairedClips(Dataset):
    """Fixed-length streams of a set of clips, kept as tensors (time-major: [N, T, ...])."""

    def __init__(self, streams: dict[str, np.ndarray], labels: np.ndarray, indices: np.ndarray,
                 epoch_size: int | None = None, labelled_share: float | None = None):
        """epoch_size: clips per shuffled epoch (default: each clip once). Larger, the clips are repeated in
        fresh shuffled passes, so a few labelled clips get as many optimizer steps as the whole training set.
        labelled_share: with labelled and unlabelled clips mixed, repeat the labelled ones within each shuffled
        epoch so that they make about this share of it (the epoch keeps its size; unlabelled clips left out of one
        epoch come in another)."""
        self.indices = np.asarray(indices, dtype=np.int64)
        self.epoch_size = len(self.indices) if epoch_size is None else int(epoch_size)
        if self.epoch_size < len(self.indices):
            raise ValueError(f"epoch_size {epoch_size} is smaller than the {len(self.indices)} clips")
        self.labelled_share = labelled_share
        self.streams = {name: torch.from_numpy(np.ascontiguousarray(v[self.indices])) for name, v in streams.items()}
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)[self.indices])
        self.clip_index = torch.from_numpy(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        sample = {name: value[item] for name, value in self.streams.items()}
        sample[LABEL] = self.labels[item]
        sample[INDEX] = self.clip_index[item]
        return sample

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[dict[str, torch.Tensor]]:
        """The same batches a DataLoader with default collation would give, without per-item overhead. Shuffled
        batches cover epoch_size clips (whole shuffled passes, the last one cut); unshuffled ones each clip once."""
        if shuffle and self._mixes():
            order = self._mixed_order(generator)
        elif shuffle:
            passes = -(-self.epoch_size // max(len(self), 1))
            order = torch.cat([torch.randperm(len(self), generator=generator) for _ in range(passes)])[:self.epoch_size]
        else:
            order = torch.arange(len(self))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = {name: value[rows] for name, value in self.streams.items()}
            batch[LABEL] = self.labels[rows]
            batch[INDEX] = self.clip_index[rows]
            yield batch

    def _mixes(self) -> bool:
        known = self.labels >= 0
        return self.labelled_share is not None and bool(known.any()) and not bool(known.all())

    def _mixed_order(self, generator: torch.Generator | None) -> torch.Tensor:
        """Labelled rows repeated to make labelled_share of the epoch, the rest unlabelled rows (a random subset
        when they do not all fit); shuffled."""
        known = torch.nonzero(self.labels >= 0).flatten()
        unknown = torch.nonzero(self.labels < 0).flatten()
        wanted = max(len(known), round(self.labelled_share * self.epoch_size))
        repeats = -(-wanted // len(known))
        labelled = torch.cat([known[torch.randperm(len(known), generator=generator)] for _ in range(repeats)])[:wanted]
        others = unknown[torch.randperm(len(unknown), generator=generator)][:max(0, self.epoch_size - wanted)]
        pool = torch.cat([labelled, others])
        return pool[torch.randperm(len(pool), generator=generator)]

    def num_batches(self, batch_size: int) -> int:
        """Batches in one shuffled (training) epoch."""
        return (self.epoch_size + batch_size - 1) // batch_size
