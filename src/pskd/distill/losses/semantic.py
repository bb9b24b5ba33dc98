"""Semantic (feature) matching: the student's embedding, through a learned linear projection into a teacher's
embedding space, should match that teacher's embedding (mean squared error per dimension)."""

from __future__ import annotations

import torch
from torch import nn


class Projection(nn.Module):
    """Maps the student's embedding into one teacher's embedding space; trained with the student."""

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.linear = nn.Linear(student_dim, teacher_dim)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.linear(embedding)


def semantic_mse(projected: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over dimensions of the squared error, averaged over the batch (optionally weighted per sample)."""
    per_sample = (projected - target.detach()).pow(2).mean(dim=1)
    if weights is not None:
        per_sample = per_sample * weights
    return per_sample.mean()
