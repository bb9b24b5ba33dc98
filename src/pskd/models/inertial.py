"""Accelerometer networks. Signature (c_in, num_classes, seq_len); input [batch, channels, time];
forward returns (embedding, logits)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pskd.data.transforms import gasf
from pskd.models.zoo import register_model


class ResidualBlock(nn.Module):
    """Two convolutions with batch norm and a shortcut (a 1x1 convolution where the shape changes), in 1-D or 2-D."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, dims: int = 1):
        super().__init__()
        conv, norm = (nn.Conv1d, nn.BatchNorm1d) if dims == 1 else (nn.Conv2d, nn.BatchNorm2d)
        pad = kernel // 2
        self.conv1 = conv(c_in, c_out, kernel, stride=stride, padding=pad, bias=False)
        self.bn1 = norm(c_out)
        self.conv2 = conv(c_out, c_out, kernel, padding=pad, bias=False)
        self.bn2 = norm(c_out)
        self.shortcut = (
            nn.Identity()
            if c_in == c_out and stride == 1
            else nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=False), norm(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class SeparableBlock(nn.Module):
    """ResidualBlock's shape with depthwise-separable convolutions (a depthwise kernel over time per channel, then
    a 1x1 mixing of channels): several times fewer weights and operations for the same widths and kernel."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__()
        pad = kernel // 2
        self.body = nn.Sequential(
            nn.Conv1d(c_in, c_in, kernel, stride=stride, padding=pad, groups=c_in, bias=False),
            nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out), nn.ReLU(),
            nn.Conv1d(c_out, c_out, kernel, padding=pad, groups=c_out, bias=False),
            nn.Conv1d(c_out, c_out, 1, bias=False), nn.BatchNorm1d(c_out),
        )
        self.shortcut = (
            nn.Identity()
            if c_in == c_out and stride == 1
            else nn.Sequential(nn.AvgPool1d(stride, ceil_mode=True) if stride > 1 else nn.Identity(),
                               nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


def _check_integers(**values) -> None:
    """Each value None, an integer, or (widths) a list of integers; ValueError naming the first that is not."""
    for name, value in values.items():
        if name == "widths":
            items = value if isinstance(value, (list, tuple)) else [None]
        else:
            items = [value]
        if value is not None and not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            kind = "a list of integers" if name == "widths" else "an integer"
            raise ValueError(f"{name}: expected {kind}, got {value!r}")


# Sizes of the compact student (27 classes, 3 channels, 128 samples; counted by `pskd bench`): tiny 9.6 k
# parameters and 0.43 MFLOPs per clip (a microcontroller-class watch), small 23 k and 1.1 MFLOPs, default 87.5 k
# and 4.2 MFLOPs. The tiny one has depthwise-separable blocks and less dropout, chosen on validation
# (benchmarks/tiny_student.py; UTD-MHAD, full labels, seeds 0-2: 91.4 % against 86.1 % for plain blocks of 8.9 k).
PRESETS: dict[str, dict] = {
    "tiny": {"widths": (16, 24, 32), "kernel": 9, "embedding_dim": 32, "separable": True, "dropout": 0.1},
    "small": {"widths": (16, 24, 32), "kernel": 5, "embedding_dim": 48},
    "default": {"widths": (32, 48, 64), "kernel": 5, "embedding_dim": 96},
}


@register_model("compact_cnn", kind="inertial")
class CompactCNN(nn.Module):
    """The default watch student: a small residual 1-D CNN over the resampled raw signal.

    A stem convolution, one strided residual block per width, then average and max pooling over time
    concatenated, a linear embedding layer with ReLU, dropout and the classifier. `preset` (tiny, small, default)
    gives widths, kernel and embedding size; any of them given explicitly overrides the preset's.
    """

    def __init__(
        self,
        c_in: int,
        num_classes: int,
        seq_len: int,
        preset: str = "default",
        widths: tuple[int, ...] | None = None,
        kernel: int | None = None,
        embedding_dim: int | None = None,
        dropout: float | None = None,
        separable: bool = False,
    ):
        super().__init__()
        if preset not in PRESETS:
            raise ValueError(f"preset '{preset}' is not one of {', '.join(PRESETS)}")
        _check_integers(widths=widths, kernel=kernel, embedding_dim=embedding_dim)
        widths = tuple(widths) if widths is not None else PRESETS[preset]["widths"]
        kernel = kernel if kernel is not None else PRESETS[preset]["kernel"]
        embedding_dim = embedding_dim if embedding_dim is not None else PRESETS[preset]["embedding_dim"]
        separable = separable or PRESETS[preset].get("separable", False)  # true: depthwise-separable blocks
        dropout = dropout if dropout is not None else PRESETS[preset].get("dropout", 0.3)
        if not widths or min(widths) < 1 or kernel < 1 or embedding_dim < 1 or not 0 <= dropout < 1:
            raise ValueError("widths, kernel and embedding_dim must be at least 1 and dropout in [0, 1)")
        self.seq_len = seq_len
        self.stem = nn.Sequential(
            nn.Conv1d(c_in, widths[0], 7, padding=3, bias=False), nn.BatchNorm1d(widths[0]), nn.ReLU()
        )
        blocks, previous = [], widths[0]
        for width in widths:
            blocks.append(SeparableBlock(previous, width, kernel, 2) if separable
                          else ResidualBlock(previous, width, kernel, stride=2))
            previous = width
        self.blocks = nn.Sequential(*blocks)
        self.embedding = nn.Sequential(nn.Linear(2 * previous, embedding_dim), nn.ReLU())
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(embedding_dim, num_classes)
        self.embedding_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.blocks(self.stem(x))
        pooled = torch.cat([features.mean(dim=-1), features.amax(dim=-1)], dim=1)
        embedding = self.embedding(pooled)
        return embedding, self.classifier(self.dropout(embedding))


@register_model("gaf_resnet18", kind="inertial")
class GafResNet18(nn.Module):
    """VSKD's student: each axis as a Gramian Angular Summation Field image, stacked as channels, resized to
    image_size x image_size, through a ResNet-18 (512-d pooled feature), a 300-d embedding with ReLU, then the
    classifier. About 11.3 M parameters and 1.8 GFLOPs per clip at 224 x 224."""

    def __init__(
        self,
        c_in: int,
        num_classes: int,
        seq_len: int,
        image_size: int = 224,
        embedding_dim: int = 300,
        widths: tuple[int, ...] = (64, 128, 256, 512),
    ):
        super().__init__()
        self.image_size = image_size
        self.stem = nn.Sequential(
            nn.Conv2d(c_in, widths[0], 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages, previous = [], widths[0]
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages += [ResidualBlock(previous, width, 3, stride, dims=2), ResidualBlock(width, width, 3, 1, dims=2)]
            previous = width
        self.stages = nn.Sequential(*stages)
        self.embedding = nn.Sequential(nn.Linear(previous, embedding_dim), nn.ReLU())
        self.classifier = nn.Linear(embedding_dim, num_classes)
        self.embedding_dim = embedding_dim

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        image = gasf(x)
        if image.shape[-1] != self.image_size:
            image = F.interpolate(image, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return image

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.stages(self.stem(self.encode(x)))
        embedding = self.embedding(features.mean(dim=(-2, -1)))
        return embedding, self.classifier(embedding)
