"""A trained student loaded for deployment, without unpickling any code.

Checkpoints are read with `torch.load(weights_only=True)`: tensors and plain values only, no code runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from pskd.deploy.card import ModelCard
from pskd.errors import ConfigError, DataError
from pskd.models.checkpoint import load_fitting, read_checkpoint
from pskd.models.zoo import InputSpec, StreamModel, build_model, model_names
from pskd.plugins import unknown_model

__all__ = ["DeployedStudent", "checkpoint_path", "load_student", "read_checkpoint"]


class DeployedStudent(nn.Module):
    """The student as a device runs it: raw clips [B, seq_len, channels] in the card's unit (the streams'
    channels concatenated) -> (logits, probabilities). Standardisation is done inside."""

    def __init__(self, student: StreamModel):
        super().__init__()
        self.net = student.net
        self.register_buffer("mean", student.mean.clone())
        self.register_buffer("std", student.std.clone())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, logits = self.net((x.transpose(1, 2) - self.mean) / self.std)
        return logits, torch.softmax(logits, dim=1)


def checkpoint_path(path: Path) -> Path:
    """A run directory means its delivered student, checkpoints/best.pt."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "best.pt"
    if not path.is_file():
        raise DataError(f"{path}: no such checkpoint (give a run directory or a .pt file)")
    return path


def load_student(path: Path) -> tuple[DeployedStudent, ModelCard]:
    """The delivered student of a run (or a checkpoint file) in eval mode, with its card."""
    path = checkpoint_path(path)
    state, meta = read_checkpoint(path)
    card = ModelCard.from_checkpoint_meta(meta, str(path))
    stream = card.streams[0]
    spec = InputSpec(
        num_classes=card.num_classes,
        lengths={s: card.seq_len for s in card.streams},
        channels={s: int(meta["channels"][s]) for s in card.streams},
        layout=None,  # a deployed student reads inertial streams only
        mean={s: np.zeros(int(meta["channels"][s])) for s in card.streams},
        std={s: np.ones(int(meta["channels"][s])) for s in card.streams},
    )
    if card.model not in model_names():
        raise unknown_model(card.model, meta, str(path))

    def build() -> StreamModel:
        try:
            return build_model(card.model, card.streams, card.options, spec, where="student")
        except ConfigError as err:
            raise DataError(f"{path}: its {card.model} on {stream} cannot be built ({err})") from None

    student = load_fitting(build, state, f"{path} ({card.model} on {stream})")
    return DeployedStudent(student).eval(), card
