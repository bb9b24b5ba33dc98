"""A dataset prepared for training: every clip's streams resampled to fixed lengths, with per-clip metadata
(what pskd.data.cache builds and keeps on disk, and every part of a run reads)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pskd.data.clip import DatasetInfo


@dataclass
class Prepared:
    """A whole dataset as fixed-length arrays in physical units (time-major), plus per-clip metadata."""

    info: DatasetInfo
    streams: dict[str, np.ndarray]  # name -> [N, length, ...]
    labels: np.ndarray
    subjects: np.ndarray
    trials: np.ndarray
    clip_ids: list[str]
    source_lengths: dict[str, np.ndarray]  # name -> [N], samples before resampling
    scenes: np.ndarray | None = None  # [N]; 1 everywhere for single-scene datasets

    def __len__(self) -> int:
        return len(self.labels)
