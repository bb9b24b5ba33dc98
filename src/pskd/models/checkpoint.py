"""Reading a checkpoint written by pskd without unpickling any code (`torch.load(weights_only=True)`): tensors
and plain values only. A foreign pickle, a truncated or tampered file is refused, whatever the cause."""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from pskd.errors import DataError
from pskd.limits import FILE_MB_VARIABLE, file_bytes, shown

MAX_MEMBERS = 100_000  # a state dict's tensors, each one member


def check_members(path: Path) -> None:
    """A checkpoint's zip members, before anything is unpacked: stored as torch.save stores them (a compressed
    member would inflate beyond the file's size), within limits.file_bytes("checkpoint") in all."""
    limit = file_bytes("checkpoint")
    try:
        if path.stat().st_size > limit:
            raise DataError(f"{path}: {shown(path.stat().st_size)}, more than the {shown(limit)} a checkpoint may be "
                            f"(set {FILE_MB_VARIABLE} to raise it)")
        if not zipfile.is_zipfile(path):
            return  # torch's legacy format: a pickle no larger than the file, refused below unless tensors only
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        raise DataError(f"{path}: not a readable checkpoint ({str(err)[:120]})") from None
    if len(members) > MAX_MEMBERS or any(m.compress_type != zipfile.ZIP_STORED for m in members):
        raise DataError(f"{path}: not a checkpoint pskd writes (compressed or too many members)")
    if sum(m.file_size for m in members) > limit:
        raise DataError(f"{path}: unpacks to more than the {shown(limit)} a checkpoint may hold")


def read_checkpoint(path: Path) -> tuple[dict, dict]:
    """(state dict, meta) of a checkpoint written by pskd."""
    check_members(path)
    try:
        with warnings.catch_warnings():  # torch's own notes on a legacy file are not the user's concern
            warnings.simplefilter("ignore")
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a foreign pickle, a truncated or tampered file: refused, whatever the cause
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        reason = reason.split(" Re-running `torch.load` with `weights_only`")[0]  # never advise an unsafe load
        raise DataError(f"{path}: not a safe pskd checkpoint ({reason[:160]})") from None
    if not (isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict) and isinstance(blob.get("meta"), dict)):
        raise DataError(f"{path}: not a pskd checkpoint (expected state_dict and meta)")
    return blob["state_dict"], blob["meta"]


def load_fitting(build: Callable[[], torch.nn.Module], state: dict, source: str) -> torch.nn.Module:
    """The model `build` makes, holding `state`: checked to have exactly the tensors of `state` on torch's meta
    device first (no memory), so that options a checkpoint's meta gives cannot allocate a model of any size."""
    check_fits(build, state, source)
    model = build()
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise DataError(f"{source}: its weights do not fit ({str(err).splitlines()[0][:160]})") from None
    return model


def check_fits(build: Callable[[], torch.nn.Module], state: dict, source: str) -> None:
    """Whether the model `build` makes has exactly the tensors of `state`, found by building it on torch's meta
    device (no memory)."""
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    except (TypeError, ValueError, RuntimeError, NotImplementedError) as err:
        raise DataError(f"{source}: its model cannot be built ({str(err).splitlines()[0][:160]})") from None
    found = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    if expected != found:
        differ = sorted(set(expected) ^ set(found)) or sorted(k for k in expected if expected[k] != found[k])
        raise DataError(f"{source}: its weights do not fit the model its meta describes (at {differ[:3]})")
