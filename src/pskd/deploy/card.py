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

from pskd.bounded import LimitError, loads_json
from pskd.errors import DataError, UserError
from pskd.limits import CARD_BYTES, CARD_FIELDS

SKELETON = "skeleton"  # pskd.data.clip.SKELETON, without importing the data package

CARD_KEY = "pskd_card"  # the ONNX metadata key holding the card as JSON


MAX_CARD_BYTES = CARD_BYTES  # a card is a few kB; a larger one is refused before it is parsed
LIMITS = CARD_FIELDS


def _text(value, limit: int = LIMITS["text"]) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit


def _number(value, low: float, high: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low < value <= high


def card_checks(card: "ModelCard") -> dict[str, bool]:
    """Each field of a card: within its type and bounds?"""
    names, streams = card.class_names, card.streams
    return {
        "model": _text(card.model), "options": isinstance(card.options, dict),
        "class_names": isinstance(names, list) and 2 <= len(names) <= LIMITS["classes"]
        and all(_text(n) for n in names) and len(set(names)) == len(names),
        "streams": isinstance(streams, list) and 1 <= len(streams) <= LIMITS["streams"]
        and all(_text(s) for s in streams),
        "channels": isinstance(card.channels, int) and 0 < card.channels <= LIMITS["channels"],
        "seq_len": isinstance(card.seq_len, int) and 2 <= card.seq_len <= LIMITS["seq_len"],
        "rate_hz": _number(card.rate_hz, 0, LIMITS["rate_hz"]),
        "window_s": _number(card.window_s, 0, LIMITS["window_s"]),
        "units": _text(card.units, 20), "dataset": isinstance(card.dataset, str), "method": isinstance(card.method, str),
    }


def parse_card(text, source: str) -> dict:
    """A card's JSON, with limits on its size and nesting (a hostile file may hold anything)."""
    if not isinstance(text, str) or len(text) > MAX_CARD_BYTES:
        raise DataError(f"{source}: its pskd card is not a JSON text of at most {MAX_CARD_BYTES} bytes")
    try:
        values = loads_json(text)
    except json.JSONDecodeError:
        raise DataError(f"{source}: its pskd card is not valid JSON") from None
    except LimitError as err:
        raise DataError(f"{source}: its pskd card is not valid JSON within the limits ({err})") from None
    if not isinstance(values, dict):
        raise DataError(f"{source}: its pskd card is not a JSON object")
    return values


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
        bad = [name for name, ok in card_checks(card).items() if not ok]
        if bad:
            raise DataError(f"{source}: invalid model card field(s) {bad}")
        return card

    def check_shapes(self, seq_len: int | None, channels: int | None, outputs: int | None, source: str) -> None:
        """The card against the model it describes (None: a dimension the model leaves free)."""
        for field, card_value, model_value in (("seq_len", self.seq_len, seq_len), ("channels", self.channels, channels),
                                               ("class_names", self.num_classes, outputs)):
            if model_value is not None and model_value != card_value:
                raise DataError(f"{source}: its model card says {field} {card_value}, the model has {model_value}")

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
