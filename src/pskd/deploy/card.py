"""A trained student and the card that travels with it: everything prediction needs, and nothing pickled.

The card holds the class names, the stream(s) and their channels, the sampling rate and unit the model was
trained on, the number of samples per clip and the window duration a clip covered (the median duration of the
training clips, each of which was resampled to `seq_len` samples). The input standardisation lives inside the
model as buffers, so it is part of the weights and of the exported graph.

This module does not import torch, so that predicting with an exported ONNX model starts quickly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from pskd.errors import DataError, UserError

SKELETON = "skeleton"  # pskd.data.clip.SKELETON, without importing the data package

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
