"""A trained student and the card that travels with it: everything prediction needs, and nothing pickled.

The card holds the class names, the stream(s) and their channels, the sampling rate and unit the model was
trained on, the number of samples per clip and the window duration a clip covered (the median duration of the
training clips, each of which was resampled to `seq_len` samples). The input standardisation lives inside the
model as buffers, so it is part of the weights and of the exported graph.

Checkpoints are read with `torch.load(weights_only=True)`: tensors and plain values only, no code runs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pskd.data.clip import SKELETON
from pskd.data.layouts import get_layout
from pskd.errors import ConfigError, DataError, UserError
from pskd.models.zoo import InputSpec, StreamModel, build_model

CARD_KEY = "pskd_card"  # the ONNX metadata key holding the card as JSON


@dataclass
class ModelCard:
    model: str
    options: dict
    streams: list[str]
    channels: int  # input channels, the streams' channels concatenated in order
    seq_len: int  # samples per clip given to the network
    rate_hz: float  # the rate of the recordings the model was trained on
    window_s: float  # duration a clip covered (median over training clips)
    units: str  # "g" for accelerometers
    class_names: list[str]
    dataset: str = ""
    method: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict, source: str) -> "ModelCard":
        try:
            card = cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})
        except TypeError as err:
            raise DataError(f"{source}: its model card is incomplete ({err})") from None
        checks = [
            (isinstance(card.class_names, list) and len(card.class_names) >= 2, "class_names"),
            (isinstance(card.streams, list) and bool(card.streams), "streams"),
            (isinstance(card.channels, int) and card.channels > 0, "channels"),
            (isinstance(card.seq_len, int) and card.seq_len >= 2, "seq_len"),
            (isinstance(card.rate_hz, (int, float)) and card.rate_hz > 0, "rate_hz"),
            (isinstance(card.window_s, (int, float)) and card.window_s > 0, "window_s"),
        ]
        bad = [name for ok, name in checks if not ok]
        if bad:
            raise DataError(f"{source}: invalid model card field(s) {bad}")
        return card

    @classmethod
    def from_checkpoint_meta(cls, meta: dict, source: str) -> "ModelCard":
        """The card of a run's checkpoint (runs from before the card existed lack the window: it is refused)."""
        streams = meta.get("streams") or []
        if SKELETON in streams:
            raise UserError(f"{source}: the model reads the skeleton; only accelerometer students can be deployed")
        if "window_s" not in meta or "channels" not in meta:
            raise DataError(f"{source}: this checkpoint predates model cards (no window_s/channels); train it again")
        rates = {meta["rates"][s] for s in streams}
        if len(rates) != 1:
            raise DataError(f"{source}: the student's streams have different rates {sorted(rates)}")
        units = {meta["units"][s] for s in streams}
        return cls.from_dict({
            **meta, "channels": int(sum(meta["channels"][s] for s in streams)), "rate_hz": float(rates.pop()),
            "units": units.pop() if len(units) == 1 else "mixed",
        }, source)


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


def read_checkpoint(path: Path) -> tuple[dict, dict]:
    """(state dict, meta) of a checkpoint written by pskd, read without unpickling any code."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a foreign pickle, a truncated or tampered file: refused, whatever the cause
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: not a safe pskd checkpoint ({reason[:160]})") from None
    if not (isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict) and isinstance(blob.get("meta"), dict)):
        raise DataError(f"{path}: not a pskd checkpoint (expected state_dict and meta)")
    return blob["state_dict"], blob["meta"]


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
        layout=get_layout(meta["layout"]) if meta.get("layout") else None,
        mean={s: np.zeros(int(meta["channels"][s])) for s in card.streams},
        std={s: np.ones(int(meta["channels"][s])) for s in card.streams},
    )
    try:
        student = build_model(card.model, card.streams, card.options, spec, where=str(path))
        student.load_state_dict(state)
    except (ConfigError, RuntimeError) as err:
        raise DataError(f"{path}: weights do not fit a {card.model} on {stream} "
                        f"({str(err).splitlines()[0][:160]})") from None
    return DeployedStudent(student).eval(), card
