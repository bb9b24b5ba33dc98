"""Reading `.npy` files that nobody vouches for: the header is checked against the file's size and a limit before
anything is allocated, and only numeric arrays are accepted (no pickles). numpy only, so the torch-free deploy
path can use it too."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pskd.limits import FILE_BYTES

MAX_ARRAY_BYTES = FILE_BYTES["recording"]  # a recording or a clip larger than this is refused before reading


def npy_header(path: Path, max_bytes: int | None = None) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, data offset) of a .npy file; ValueError with the reason when it is not a plain
    numeric .npy whose header agrees with its size, or (with max_bytes) when its data would take more. Nothing but
    the header is read."""
    try:
        with open(path, "rb") as handle:
            return stream_header(handle, Path(path).stat().st_size, max_bytes)
    except OSError as err:
        raise ValueError(f"not a readable .npy file ({str(err).splitlines()[0][:80]})") from None


def stream_header(handle, size: int, max_bytes: int | None = None) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """npy_header for an open binary stream of `size` bytes positioned at its start (a file, or a member of a
    .npz archive read without inflating more than its header)."""
    try:
        version = np.lib.format.read_magic(handle)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(handle)
        offset = handle.tell()
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"not a readable .npy file ({str(err).splitlines()[0][:80]})") from None
    if dtype.kind not in "iuf" or dtype.hasobject:
        raise ValueError(f"dtype {dtype} is not numeric")
    needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if max_bytes is not None and needed > max_bytes:
        raise ValueError(f"shape {shape} of {dtype} needs {needed / 1e9:.1f} GB, more than the "
                         f"{max_bytes / 1e9:.1f} GB allowed")
    actual = size - offset
    if actual != needed:
        raise ValueError(f"its header says shape {shape} of {dtype} ({needed} bytes), the file holds {actual}")
    return shape, fortran, dtype, offset


def load_npy(path: Path, max_bytes: int = MAX_ARRAY_BYTES) -> np.ndarray:
    """The array in `path`; ValueError with the reason when the file is not a plain numeric .npy whose header
    agrees with its size, or when it would take more than max_bytes."""
    npy_header(path, max_bytes)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"not a readable .npy file ({str(err).splitlines()[0][:80]})") from None
