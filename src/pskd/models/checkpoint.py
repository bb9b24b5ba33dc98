"""Reading a checkpoint written by pskd without unpickling any code (`torch.load(weights_only=True)`): tensors
and plain values only. A foreign pickle, a truncated or tampered file is refused, whatever the cause."""

from __future__ import annotations

from pathlib import Path

import torch

from pskd.errors import DataError


def read_checkpoint(path: Path) -> tuple[dict, dict]:
    """(state dict, meta) of a checkpoint written by pskd."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a foreign pickle, a truncated or tampered file: refused, whatever the cause
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: not a safe pskd checkpoint ({reason[:160]})") from None
    if not (isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict) and isinstance(blob.get("meta"), dict)):
        raise DataError(f"{path}: not a pskd checkpoint (expected state_dict and meta)")
    return blob["state_dict"], blob["meta"]
