"""The skeleton encoder: a spatio-temporal graph convolution network (ST-GCN family) over any layout.

Input: a skeleton batch [B, T, J, 3] (centred and scaled per clip). The input streams are options: `joint`
(positions), `bone` (each joint minus its parent: direction and length of every bone) and `motion` (the
frame-to-frame difference), concatenated as channels. Each block is a graph convolution over the spatial
partitions of the layout plus a learned offset per partition (an adaptive graph, initialised at zero), then a
temporal convolution, each with batch norm and a residual connection. Forward returns (embedding, logits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pskd.data.layouts import Layout
from pskd.models.graph import spatial_partitions
from pskd.models.zoo import register_model

INPUT_STREAMS = ("joint", "bone", "motion")


def skeleton_features(skeleton: torch.Tensor, layout: Layout, inputs: tuple[str, ...]) -> torch.Tensor:
    """[B, T, J, 3] -> [B, 3 * len(inputs), T, J]."""
    parts = []
    for name in inputs:
        if name == "joint":
            parts.append(skeleton)
        elif name == "bone":
            parent = list(range(layout.num_joints))
            for child, root in layout.bones:
                parent[child] = root
            parts.append(skeleton - skeleton[:, :, parent])
        elif name == "motion":
            parts.append(F.pad(skeleton[:, 1:] - skeleton[:, :-1], (0, 0, 0, 0, 0, 1)))
        else:
            raise ValueError(f"unknown skeleton input '{name}'")
    return torch.cat(parts, dim=-1).permute(0, 3, 1, 2).contiguous()


class GraphConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, partitions: torch.Tensor, adaptive: bool = True):
        super().__init__()
        self.partitions_count = partitions.shape[0]
        self.c_out = c_out
        self.register_buffer("partitions", partitions)
        self.offset = nn.Parameter(torch.zeros_like(partitions)) if adaptive else None
        self.conv = nn.Conv2d(c_in, c_out * self.partitions_count, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, steps, joints = x.shape
        y = self.conv(x).view(batch, self.partitions_count, self.c_out, steps, joints)
        graph = self.partitions if self.offset is None else self.partitions + self.offset
        return torch.einsum("bkctj,kjv->bctv", y, graph)


class GraphBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, partitions: torch.Tensor, stride: int, kernel: int, dropout: float,
                 adaptive: bool):
        super().__init__()
        self.graph = GraphConv(c_in, c_out, partitions, adaptive)
        self.bn_graph = nn.BatchNorm2d(c_out)
        self.temporal = nn.Conv2d(c_out, c_out, (kernel, 1), stride=(stride, 1), padding=(kernel // 2, 0))
        self.bn_temporal = nn.BatchNorm2d(c_out)
        self.dropout = nn.Dropout(dropout)
        self.residual = (
            nn.Identity()
            if c_in == c_out and stride == 1
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=(stride, 1)), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn_graph(self.graph(x)))
        out = self.bn_temporal(self.temporal(self.dropout(out)))
        return F.relu(out + self.residual(x))


@register_model("skeleton_gcn", kind="skeleton")
class SkeletonGCN(nn.Module):
    """Graph convolution network over a skeleton layout; small enough to train on a CPU."""

    def __init__(
        self,
        layout: Layout,
        num_classes: int,
        seq_len: int,
        inputs: tuple[str, ...] = ("joint", "bone", "motion"),
        widths: tuple[int, ...] = (48, 64, 96, 128),
        strides: tuple[int, ...] = (1, 2, 1, 2),
        kernel: int = 9,
        embedding_dim: int = 128,
        dropout: float = 0.2,
        adaptive: bool = True,
    ):
        super().__init__()
        if len(widths) != len(strides):
            raise ValueError("widths and strides must have the same length")
        unknown = [name for name in inputs if name not in INPUT_STREAMS]
        if unknown or not inputs:
            raise ValueError(f"skeleton inputs must be chosen from {INPUT_STREAMS}, got {list(inputs)}")
        self.layout = layout
        self.inputs = tuple(inputs)
        c_in = 3 * len(inputs)
        partitions = torch.from_numpy(spatial_partitions(layout))
        self.input_norm = nn.BatchNorm1d(c_in * layout.num_joints)
        blocks, previous = [], c_in
        for width, stride in zip(widths, strides):
            blocks.append(GraphBlock(previous, width, partitions, stride, kernel, dropout, adaptive))
            previous = width
        self.blocks = nn.Sequential(*blocks)
        self.embedding = nn.Sequential(nn.Linear(previous, embedding_dim), nn.ReLU())
        self.classifier = nn.Linear(embedding_dim, num_classes)
        self.embedding_dim = embedding_dim

    def forward(self, skeleton: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = skeleton_features(skeleton, self.layout, self.inputs)
        batch, channels, steps, joints = x.shape
        # batch norm per (channel, joint), over clips and time: the data normalisation of ST-GCN
        x = x.permute(0, 1, 3, 2).reshape(batch, channels * joints, steps)
        x = self.input_norm(x).view(batch, channels, joints, steps).permute(0, 1, 3, 2)
        features = self.blocks(x)
        embedding = self.embedding(features.mean(dim=(-2, -1)))
        return embedding, self.classifier(embedding)


@register_model("skeleton_motion", kind="skeleton")
class SkeletonMotion(nn.Module):
    """A fixed description of the skeleton's motion and a linear classifier on it: per time segment, each joint's
    mean position and mean velocity (standardised over the training clips by a batch norm without weights).

    Its embedding is the description itself, not a learned feature: as a teacher with the `feature` term, the
    student regresses the skeleton's motion from the watch on every paired clip (a cross-modal auxiliary target),
    and it is a weak teacher beside the graph network."""

    def __init__(self, layout: Layout, num_classes: int, seq_len: int, segments: int = 4, dropout: float = 0.2):
        super().__init__()
        if not 1 <= segments <= seq_len:
            raise ValueError(f"segments must be between 1 and the clip's {seq_len} frames, not {segments}")
        self.segments = segments
        self.embedding_dim = layout.num_joints * 3 * 2 * segments
        self.norm = nn.BatchNorm1d(self.embedding_dim, affine=False)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.embedding_dim, num_classes)

    def forward(self, skeleton: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        motion = F.pad(skeleton[:, 1:] - skeleton[:, :-1], (0, 0, 0, 0, 0, 1))
        parts = [torch.stack([piece.mean(dim=1) for piece in torch.tensor_split(x, self.segments, dim=1)], dim=1)
                 for x in (skeleton, motion)]
        embedding = self.norm(torch.cat(parts, dim=-1).flatten(1))
        return embedding, self.classifier(self.dropout(embedding))
