"""The fusion teacher: a skeleton encoder and an inertial encoder, their embeddings joined by a fusion head.

Fusion modes: `concat` (concatenate, then a linear layer with ReLU), `gated` (a learned per-dimension gate
between the two projected embeddings) and `attention` (a softmax over the two modalities from a learned score
of each projected embedding). Forward takes the skeleton [B, T, J, 3] and the inertial signal [B, C, T]
(already standardised) and returns (embedding, logits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pskd.data.clip import SKELETON
from pskd.errors import ConfigError
from pskd.models.zoo import InputSpec, inertial_net, register_model, skeleton_net

FUSIONS = ("concat", "gated", "attention")


class FusionHead(nn.Module):
    def __init__(self, dims: tuple[int, int], embedding_dim: int, num_classes: int, mode: str = "concat",
                 dropout: float = 0.3):
        super().__init__()
        if mode not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, not '{mode}'")
        self.mode = mode
        if mode == "concat":
            self.join = nn.Linear(sum(dims), embedding_dim)
        else:
            self.project = nn.ModuleList([nn.Linear(d, embedding_dim) for d in dims])
            self.score = nn.Linear(sum(dims) if mode == "gated" else embedding_dim, embedding_dim if mode == "gated" else 1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(embedding_dim, num_classes)
        self.embedding_dim = embedding_dim

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "concat":
            embedding = F.relu(self.join(torch.cat([first, second], dim=1)))
        elif self.mode == "gated":
            gate = torch.sigmoid(self.score(torch.cat([first, second], dim=1)))
            embedding = F.relu(gate * self.project[0](first) + (1 - gate) * self.project[1](second))
        else:
            tokens = torch.stack([self.project[0](first), self.project[1](second)], dim=1)  # [B, 2, E]
            weights = F.softmax(self.score(torch.tanh(tokens)), dim=1)  # [B, 2, 1]
            embedding = F.relu((weights * tokens).sum(dim=1))
        return embedding, self.classifier(self.dropout(embedding))


class FusionNet(nn.Module):
    """skeleton_dropout: during training, the skeleton branch's embedding is zeroed for this share of the clips
    (modality dropout), so the head must also decide from the inertial branch alone: a teacher whose decisions a
    student on that sensor can follow more closely."""

    def __init__(self, skeleton: nn.Module, inertial: nn.Module, num_classes: int, fusion: str = "concat",
                 embedding_dim: int = 128, dropout: float = 0.3, skeleton_dropout: float = 0.0):
        super().__init__()
        if not 0 <= skeleton_dropout < 1:
            raise ValueError(f"skeleton_dropout must be in [0, 1), not {skeleton_dropout}")
        self.skeleton = skeleton
        self.inertial = inertial
        self.head = FusionHead((skeleton.embedding_dim, inertial.embedding_dim), embedding_dim, num_classes, fusion,
                               dropout)
        self.embedding_dim = embedding_dim
        self.skeleton_dropout = skeleton_dropout

    def forward(self, skeleton: torch.Tensor, inertial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first, _ = self.skeleton(skeleton)
        second, _ = self.inertial(inertial)
        if self.training and self.skeleton_dropout > 0:
            kept = torch.rand(len(first), device=first.device) >= self.skeleton_dropout
            first = first * kept[:, None].to(first.dtype)
        return self.head(first, second)


OPTIONS = ("fusion", "embedding_dim", "dropout", "skeleton", "inertial", "inertial_model", "skeleton_dropout")


@register_model("fusion", kind="paired")
def build_fusion(streams: list[str], options: dict, spec: InputSpec, where: str) -> FusionNet:
    """The fusion teacher: options.skeleton for its skeleton_gcn, options.inertial for its inertial model
    (options.inertial_model, compact_cnn by default), and the head's own (fusion, embedding_dim, dropout,
    skeleton_dropout)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"{where}.options: unknown option(s) {unknown} for fusion")
    mode = options.get("fusion", "concat")
    if mode not in FUSIONS:
        raise ConfigError(f"{where}.options.fusion: one of {list(FUSIONS)}, not '{mode}'")
    inertial = [s for s in streams if s != SKELETON]
    skeleton_part = skeleton_net("skeleton_gcn", options.get("skeleton", {}), spec, f"{where}.options.skeleton")
    inertial_part = inertial_net(options.get("inertial_model", "compact_cnn"), options.get("inertial", {}), spec,
                                 inertial, f"{where}.options.inertial")
    try:
        return FusionNet(skeleton_part, inertial_part, spec.num_classes, mode, int(options.get("embedding_dim", 128)),
                         float(options.get("dropout", 0.3)), float(options.get("skeleton_dropout", 0.0)))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}.options: {err}") from None
