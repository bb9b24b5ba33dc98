"""Scarce labels: which training clips keep their label, the rest staying in as unlabelled paired clips.

A lab records synchronised camera + watch sessions cheaply and annotates few of them. `keep_labels` reproduces that
on a fully labelled dataset: it keeps the labels of a fraction of the training clips, stratified by class and by
subject, drawn by its own seed so that the labelled set stays fixed while a run's seed varies the training. Clips
that came without a label (an empty `label` in a folder manifest) stay unlabelled whatever the fraction.
"""

from __future__ import annotations

import numpy as np

UNLABELLED = -1  # the label of a clip whose class is not known (or hidden)


def _round(value: float) -> int:
    return int(np.floor(value + 0.5))


def _interleave(groups: list[np.ndarray]) -> list[int]:
    """The first of every group, then the second of every group, ...: a prefix spreads over the groups."""
    longest = max((len(g) for g in groups), default=0)
    return [int(g[i]) for i in range(longest) for g in groups if i < len(g)]


def keep_labels(labels: np.ndarray, subjects: np.ndarray, rows: np.ndarray, fraction: float, seed: int,
                only_subjects: list[int] | None = None) -> np.ndarray:
    """A boolean mask over every clip: True where the label is kept.

    Only the clips `rows` (the training subjects' clips) lose labels. Per class, max(1, round(fraction x its
    clips)) keep theirs, taken round-robin over the subjects in a random order, each subject's clips in a random
    order: at a quarter of UTD-MHAD's four trials, one trial per class and subject. With only_subjects, clips of
    other subjects lose their label first, and the fraction applies to those subjects' clips.
    """
    keep = labels != UNLABELLED
    candidates = rows[keep[rows]]
    if only_subjects is not None:
        outside = ~np.isin(subjects[candidates], list(only_subjects))
        keep[candidates[outside]] = False
        candidates = candidates[~outside]
    if fraction >= 1.0:
        return keep
    rng = np.random.default_rng(seed)
    kept: list[int] = []
    for label in np.unique(labels[candidates]):
        members = candidates[labels[candidates] == label]
        count = max(1, _round(fraction * len(members)))
        order = rng.permutation(np.unique(subjects[members]))
        groups = [rng.permutation(members[subjects[members] == subject]) for subject in order]
        kept.extend(_interleave(groups)[:count])
    keep[candidates] = False
    keep[np.asarray(kept, dtype=np.int64)] = True
    return keep


def hide_labels(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """A copy of `labels` with UNLABELLED where `keep` is False."""
    return np.where(keep, labels, UNLABELLED).astype(labels.dtype)
