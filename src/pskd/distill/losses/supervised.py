"""The supervised term: cross-entropy over the clips of a batch that have a label (label >= 0).

Unlabelled paired clips (label -1) pass through the same batches for the distillation and self-training terms;
this term skips them, and is zero (with a gradient path) for a batch without any label.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supervised_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    known = labels >= 0
    if bool(known.all()):
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    if not bool(known.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[known], labels[known], label_smoothing=label_smoothing)
