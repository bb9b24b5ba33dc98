"""What a teacher's embedding is made of, as a student could learn it: its principal components over the training
clips, and how much of each one the watch signal predicts.

A teacher's embedding mixes what the student's sensor also carries with what only the teacher's modality carries
(the left arm, for a watch on the right wrist). Regressing all of it asks the student for the impossible; the
"modality focusing" result (Xue et al., ICLR 2023) is that only the part the student's modality can predict
transfers. `predictability` measures that part without any label and without the test subjects: a ridge regression
from simple features of the watch clip to each component, cross-validated over the training subjects (R^2 on the
held-out subjects; 0 where the watch predicts nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

RIDGE = 1.0  # on standardised features: the regression stays stable with more features than clips per fold
FOLDS = 4
SEGMENTS = 4  # the clip is cut into this many parts in time for the watch features


@dataclass
class Components:
    """The leading principal components of a teacher's embedding over the training clips."""

    mean: torch.Tensor  # [D]
    basis: torch.Tensor  # [D, K], orthonormal columns
    variance: torch.Tensor  # [K], the variance of each component over the training clips
    predictable: torch.Tensor | None = None  # [K], cross-validated R^2 from the watch, in [0, 1]

    def project(self, embeddings: torch.Tensor) -> torch.Tensor:
        """[B, D] -> [B, K], the coordinates of each embedding along the components (centred, not scaled)."""
        return (embeddings - self.mean.to(embeddings.device)) @ self.basis.to(embeddings.device)

    def to(self, *args, **kwargs) -> "Components":
        moved = [t.to(*args, **kwargs) if t is not None else None
                 for t in (self.mean, self.basis, self.variance, self.predictable)]
        return Components(*moved)


def principal_components(embeddings: torch.Tensor, count: int) -> Components:
    """The `count` leading components (fewer when the clips span fewer) of embeddings [N, D]."""
    values = embeddings.double()
    mean = values.mean(dim=0)
    _, singular, directions = torch.linalg.svd(values - mean, full_matrices=False)
    keep = min(count, int((singular > singular[0] * 1e-6).sum()) if len(singular) else 0)
    variance = singular[:keep] ** 2 / max(len(values) - 1, 1)
    return Components(mean.float(), directions[:keep].T.contiguous().float(), variance.float())


def watch_features(clips: np.ndarray) -> np.ndarray:
    """[N, T, C] -> [N, F]: per channel and per time segment the mean, spread and mean absolute change, and per
    channel the whole clip's extremes: what a simple model of the watch signal sees, standardised over the clips."""
    clips = clips.reshape(len(clips), clips.shape[1], -1).astype(np.float64)
    parts = []
    for piece in np.array_split(clips, SEGMENTS, axis=1):
        parts += [piece.mean(axis=1), piece.std(axis=1), np.abs(np.diff(piece, axis=1)).mean(axis=1)]
    parts += [clips.min(axis=1), clips.max(axis=1)]
    features = np.concatenate(parts, axis=1)
    spread = features.std(axis=0)
    return (features - features.mean(axis=0)) / np.where(spread > 1e-9, spread, 1.0)


def predictability(features: np.ndarray, targets: np.ndarray, groups: np.ndarray, folds: int = FOLDS,
                   ridge: float = RIDGE) -> np.ndarray:
    """[K]: the R^2 of a ridge regression from features [N, F] to each target column [N, K] on held-out groups
    (subjects), pooled over the folds, clipped to [0, 1]. With a single group, folds over the clips instead."""
    subjects = np.unique(groups)
    if len(subjects) >= 2:
        held = np.array_split(subjects, min(folds, len(subjects)))
        masks = [np.isin(groups, part) for part in held]
    else:
        order = np.arange(len(groups))
        masks = [np.isin(order, part) for part in np.array_split(order, min(folds, max(len(order), 1)))]
    predicted = np.zeros_like(targets, dtype=np.float64)
    for inside in masks:
        if inside.all() or not inside.any():
            continue
        x, y = features[~inside], targets[~inside]
        x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
        gram = (x - x_mean).T @ (x - x_mean) + ridge * len(x) * np.eye(x.shape[1])
        weights = np.linalg.solve(gram, (x - x_mean).T @ (y - y_mean))
        predicted[inside] = (features[inside] - x_mean) @ weights + y_mean
    residual = ((targets - predicted) ** 2).sum(axis=0)
    total = ((targets - targets.mean(axis=0)) ** 2).sum(axis=0)
    return np.clip(1 - residual / np.where(total > 0, total, 1.0), 0.0, 1.0)


def teacher_components(embeddings: torch.Tensor, rows: np.ndarray, count: int, watch: np.ndarray | None = None,
                       subjects: np.ndarray | None = None) -> Components:
    """The components of a teacher's embeddings [N, D] over the training clips `rows`; with the watch clips
    [N, T, C] and each clip's subject, how predictable each one is from the watch."""
    components = principal_components(embeddings[torch.as_tensor(rows, dtype=torch.long)], count)
    if watch is not None:
        coordinates = components.project(embeddings[torch.as_tensor(rows, dtype=torch.long)]).numpy()
        r2 = predictability(watch_features(watch[rows]), coordinates.astype(np.float64), subjects[rows])
        components.predictable = torch.as_tensor(r2, dtype=torch.float32)
    return components
