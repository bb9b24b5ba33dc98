"""The stream files of a folder dataset's rows: read (.npy or header-less .csv, bounded, in float32), shaped,
cropped as the manifest's <stream>_start and <stream>_stop say, and checked that a clip's streams last alike."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from pskd import limits
from pskd.arrays import load_npy
from pskd.data.clip import SKELETON
from pskd.data.layouts import Layout

# column suffixes that belong to a stream column: its rate, and where to crop it (seconds from its first sample)
RATE, START, STOP = "_rate", "_start", "_stop"
# Streams of one trial cropped by hand one by one last differently (UTD-MHAD's by about 1.6x); a wrong rate or a
# wrong file usually gives 10x or more. Between the two it is the user's call: data.folder.max_duration_ratio.
DEFAULT_DURATION_RATIO = 5.0
LIKELY_WRONG_RATIO = 10.0


def read_array(path: Path) -> np.ndarray:
    """A numeric array from .npy or a header-less .csv; ValueError with the reason otherwise."""
    suffix = path.suffix.lower()
    limit = limits.file_bytes("recording")
    if suffix == ".npy":
        return _as_float32(load_npy(path, max_bytes=limit))
    if suffix == ".csv":
        if path.stat().st_size > limit:
            raise ValueError(f"{limits.shown(path.stat().st_size)}, more than the {limits.shown(limit)} allowed "
                             f"(set {limits.FILE_MB_VARIABLE} to raise it)")
        try:
            array = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
        except ValueError as err:
            raise ValueError(f"not a numeric CSV without header ({str(err).splitlines()[0][:80]})") from None
        return _as_float32(array)
    raise ValueError("expected a .npy or .csv file")


def _as_float32(array: np.ndarray) -> np.ndarray:
    """The array in float32; ValueError when a finite value does not fit (it would become infinite)."""
    with np.errstate(over="ignore"):
        cast = array.astype(np.float32)
    if array.dtype.itemsize > 4 and not np.isfinite(cast).all() and np.isfinite(array).all():
        raise ValueError(f"values beyond float32's range (±{limits.FLOAT32_MAX:.3g}), infinite once converted")
    return cast


def read_stream(root: Path, stream: str, cell: dict, layout: Layout | None,
                 channels: dict) -> str | tuple[np.ndarray, float]:
    """One stream of a row, cropped as its row says: (samples, rate), or what is wrong with it."""
    rate_text = cell[f"{stream}{RATE}"]
    try:
        rate = float(rate_text)
        if not math.isfinite(rate) or rate <= 0:
            raise ValueError
    except ValueError:
        return f"{stream}{RATE} '{rate_text}' is not a positive number of Hz"
    if rate > limits.MAX_RATE_HZ:
        return f"{stream}{RATE} {rate:g} Hz is more than the {limits.MAX_RATE_HZ:g} Hz allowed"
    name = cell[stream]
    if not name:
        return f"no {stream} file"
    path = root / name
    if not path.resolve().is_relative_to(root.resolve()):
        return f"{stream} file '{name}' {_outside(root, name)}"
    if not path.is_file():
        return f"{stream} file '{name}' not found"
    try:
        array = read_array(path)
    except ValueError as err:
        return f"{name}: {err}"
    array, problem = _shape(stream, array, layout)
    if problem:
        return f"{name}: {problem}"
    if not np.isfinite(array).all():
        return f"{name}: NaN or infinite values"
    array = crop(stream, array, rate, cell.get(f"{stream}{START}", ""), cell.get(f"{stream}{STOP}", ""))
    if isinstance(array, str):
        return array
    width = array.shape[1:]
    if channels.setdefault(stream, width) != width:
        return f"{name}: shape {array.shape}, other clips have [T, {', '.join(map(str, channels[stream]))}]"
    return array, rate


def crop(stream: str, array: np.ndarray, rate: float, start_text: str, stop_text: str) -> np.ndarray | str:
    """The samples between <stream>_start and <stream>_stop (seconds from the file's first sample; empty: the
    recording's own start or end), or what is wrong with the crop."""
    if not start_text and not stop_text:
        return array
    length = len(array) / rate
    values = {}
    for suffix, text, default in ((START, start_text, 0.0), (STOP, stop_text, length)):
        try:
            values[suffix] = float(text) if text else default
            if not math.isfinite(values[suffix]):
                raise ValueError
        except ValueError:
            return f"{stream}{suffix} '{text}' is not a number of seconds"
    start, stop = values[START], values[STOP]
    if start >= stop:
        return f"{stream}{START} {start:g} s is not before {stream}{STOP} {stop:g} s"
    tolerance = 0.5 / rate  # half a sample: a stop written as the recording's rounded length is inside it
    if start < 0 or start >= length or stop > length + tolerance:
        return (f"{stream} crop {start:g}-{stop:g} s is outside the recording (0-{length:.2f} s: {len(array)} "
                f"samples at {rate:g} Hz)")
    first, last = math.ceil(start * rate - 1e-6), min(len(array), math.floor(stop * rate + 1e-6) + 1)
    if last - first < 2:
        return f"{stream} crop {start:g}-{stop:g} s keeps {max(0, last - first)} sample(s), at least 2 are needed"
    return array[first:last]


def durations_disagree(arrays: dict[str, np.ndarray], rates: dict[str, float],
                       limit: float = DEFAULT_DURATION_RATIO) -> tuple[str, float] | None:
    """(what is wrong, the ratio) when the streams of one clip last too differently to be one recording."""
    seconds = {stream: len(array) / rates[stream] for stream, array in arrays.items()}
    shortest, longest = min(seconds, key=seconds.get), max(seconds, key=seconds.get)
    ratio = seconds[longest] / seconds[shortest]
    if ratio <= limit:
        return None
    if ratio >= LIKELY_WRONG_RATIO:
        why = "likely a wrong file or rate"
    else:
        why = "a wrong file or rate, or streams cropped separately: then raise the ratio"
    return (f"{shortest} lasts {seconds[shortest]:.2f} s and {longest} {seconds[longest]:.2f} s ({ratio:.2f}x; "
            f"data.folder.max_duration_ratio is {limit:g}): {why}", ratio)


def _outside(root: Path, relative: str) -> str:
    """Why a manifest's path is refused: it names a place outside the folder, or a link inside takes it there."""
    lexical = Path(os.path.normpath(root / relative))
    if lexical.is_relative_to(Path(os.path.normpath(root))):
        return "resolves outside the folder (through a symbolic link)"
    return "is outside the folder"


def _shape(stream: str, array: np.ndarray, layout: Layout | None) -> tuple[np.ndarray, str | None]:
    if stream == SKELETON:
        if array.ndim == 2 and array.shape[1] % 3 == 0:
            array = array.reshape(len(array), -1, 3)
        if array.ndim != 3 or array.shape[2] != 3:
            return array, f"shape {array.shape}, expected [frames, joints, 3] (or [frames, 3 x joints] in CSV)"
        if layout is not None and array.shape[1] != layout.num_joints:
            return array, f"{array.shape[1]} joints, layout.json has {layout.num_joints}"
    elif array.ndim != 2 or array.shape[1] % 3:
        return array, f"shape {array.shape}, expected [samples, channels] with x y z per sensor"
    if len(array) < 2:
        return array, f"{len(array)} samples, expected at least 2"
    return array, None
