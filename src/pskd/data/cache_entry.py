"""A cache entry is untrusted input: anyone who can write to the cache folder can plant one. Before anything is
inflated its members are read from the zip directory (stored uncompressed, as np.savez writes them, and within
the file's size and limits.FILE_BYTES["cache"]); once read, its metadata's types and sizes, labels in range,
numbers finite and array shapes consistent are checked. Anything else is an Unreadable, which pskd.data.cache
reports as "unreadable; rebuilding it".
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np

from pskd.arrays import stream_header
from pskd.bounded import LimitError, loads_json
from pskd.data.clip import SKELETON, DatasetInfo
from pskd.data.layouts import dataset_layout
from pskd.data.prepared import Prepared
from pskd.errors import UserError
from pskd.limits import CACHE_META_BYTES, NAME_CHARS, file_bytes, shown

MAX_MEMBERS = 1_000  # arrays in one entry: a stream and a length per stream, and five more
MAX_NUMBER = 10**9  # subjects, trials and scenes are integers of at most nine digits (as a manifest's are)
# DatasetInfo's fields: their type, and the type of their items (lists) or values (mappings)
INFO_FIELDS = {"name": (str, None), "class_names": (list, str), "streams": (list, str), "rates": (dict, (int, float)),
               "layout": ((str, type(None)), None), "units": (dict, str), "layout_spec": ((dict, type(None)), None),
               "notes": (list, str), "devices": (dict, str), "subject_names": (dict, str), "left_out": (list, str)}


class Unreadable(ValueError):
    """A cache entry that is not one pskd wrote (the message says what is wrong with it)."""


def check_members(path: Path) -> dict[str, zipfile.ZipInfo]:
    """The entry's members by array name, from the zip directory alone (nothing is inflated)."""
    size, limit = path.stat().st_size, file_bytes("cache")
    if size > limit:
        raise Unreadable(f"{shown(size)}, more than the {shown(limit)} allowed")
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise Unreadable(f"{len(infos)} members")
    if any(i.compress_type != zipfile.ZIP_STORED or i.file_size != i.compress_size for i in infos):
        raise Unreadable("a compressed member (pskd stores its arrays uncompressed)")
    if sum(i.file_size for i in infos) > size:
        raise Unreadable("its members claim more bytes than the file holds")
    members = {i.filename.removesuffix(".npy"): i for i in infos}
    if "meta" not in members or members["meta"].file_size > CACHE_META_BYTES:
        raise Unreadable(f"no metadata, or more than {shown(CACHE_META_BYTES)} of it")
    with zipfile.ZipFile(path) as archive:
        for name, info in members.items():
            with archive.open(info) as handle:  # the header only: its shape must account for the member's size
                try:
                    stream_header(handle, info.file_size)
                except ValueError as err:
                    raise Unreadable(f"member {name}: {err}") from None
    return members


def read_meta(raw: np.ndarray) -> tuple[DatasetInfo, list[str]]:
    """The dataset info and clip ids of an entry's metadata, their types and sizes checked."""
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise Unreadable("its metadata is not JSON text")
    try:
        meta = loads_json(raw.tobytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, LimitError) as err:
        raise Unreadable(f"its metadata is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("info"), dict) or not _all(meta.get("clip_ids"), str):
        raise Unreadable("its metadata lacks the dataset info or the clip ids")
    info = meta["info"]
    if set(info) - set(INFO_FIELDS) or not {"name", "class_names", "streams", "rates"} <= set(info):
        raise Unreadable("its dataset info has other fields than pskd writes")
    for name, (kind, items) in INFO_FIELDS.items():
        if name in info and not (isinstance(info[name], kind) and (items is None or _all(info[name], items))):
            raise Unreadable(f"its dataset info has a wrong {name}")
    if any(len(n) > NAME_CHARS for n in info["class_names"] + info["streams"]) or not info["class_names"]:
        raise Unreadable("its class or stream names are empty or too long")
    return DatasetInfo(**info), meta["clip_ids"]


def _all(value, kind) -> bool:
    """Whether every item of a list (or every key and value of a mapping) has the given type."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and isinstance(v, kind) and not isinstance(v, bool) for k, v in value.items())
    return isinstance(value, list) and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)


def check_prepared(prepared: Prepared, lengths: dict[str, int] | None) -> None:
    """Labels, subjects and arrays consistent with one another and with the preprocessing's clip lengths."""
    info, count = prepared.info, len(prepared.clip_ids)
    for name in ("labels", "subjects", "trials", "scenes"):
        values = getattr(prepared, name)
        if values is None or values.dtype.kind != "i" or values.shape != (count,):
            raise Unreadable(f"{name} are not {count} integers")
        if len(values) and np.abs(values).max() >= MAX_NUMBER:
            raise Unreadable(f"{name} out of range")
    if len(prepared.labels) and not (-1 <= prepared.labels.min() and prepared.labels.max() < info.num_classes):
        raise Unreadable(f"labels outside the {info.num_classes} classes")
    if set(prepared.streams) != set(info.streams) or set(prepared.source_lengths) != set(info.streams):
        raise Unreadable("its arrays are not the streams its dataset info names")
    for stream in info.streams:
        rate = info.rates.get(stream)
        if rate is None or not (math.isfinite(rate) and rate > 0):
            raise Unreadable(f"the rate of {stream} is not a positive number")
    for stream, array in prepared.streams.items():
        _check_stream(prepared, stream, array, count, lengths)


def _check_stream(prepared: Prepared, stream: str, array: np.ndarray, count: int, lengths: dict | None) -> None:
    length = prepared.source_lengths[stream]
    if length.dtype.kind != "i" or length.shape != (count,) or (count and length.min() < 1):
        raise Unreadable(f"source lengths of {stream} are not {count} positive integers")
    expected = None if lengths is None else lengths.get(stream)
    if array.dtype != np.float32 or array.ndim < 3 or array.shape[0] != count or \
            (expected is not None and array.shape[1] != expected):
        raise Unreadable(f"{stream} has shape {array.shape} of {array.dtype}, not [{count}, {expected or 'T'}, ...]")
    if not np.isfinite(array).all():
        raise Unreadable(f"{stream} holds NaN or infinite values")
    if stream == SKELETON:
        try:
            layout = dataset_layout(prepared.info.layout, prepared.info.layout_spec)
        except (UserError, KeyError, TypeError, ValueError, AttributeError):
            raise Unreadable("its skeleton layout is not one pskd writes") from None
        joints = array.shape[2] if array.ndim == 4 else -1
        if layout is not None and not _layout_fits(layout, joints):
            raise Unreadable(f"its skeleton layout does not fit the {joints} joints of the skeleton")


def _layout_fits(layout, joints: int) -> bool:
    if layout.num_joints != joints or not all(len(bone) == 2 for bone in layout.bones):
        return False
    indices = [i for bone in layout.bones for i in bone] + [layout.center] + [i for _, i in layout.roles]
    return all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < joints for i in indices)
