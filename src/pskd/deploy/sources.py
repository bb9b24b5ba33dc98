"""Where a recording's samples come from: CSV text (a file or standard input) or a `.npy` file, read in bounded
chunks so that memory does not grow with the recording's length.

CSV: one sample a line, with or without a header row; a column named t, time, time_s, timestamp or seconds gives
each sample's time in seconds. Each chunk is what one read returned (at most 64 KiB), so a live stream is passed
on as soon as its lines arrive. numpy only: the torch-free deploy path uses it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from pskd.arrays import npy_header
from pskd.errors import DataError, UserError
from pskd.limits import FLOAT32_MAX
from pskd.numeric import is_number

G = 9.80665
UNITS = ("g", "m/s2")
TIME_COLUMNS = ("t", "time", "time_s", "timestamp", "seconds")
MAX_LINE = 4096  # characters in one CSV line: a longer one is refused, not buffered
READ_BYTES = 1 << 16
NPY_ROWS = 4096


@dataclass
class Chunk:
    values: np.ndarray  # [n, channels] float64, in the model's unit
    times: np.ndarray | None = None  # [n] seconds, from a time column
    lines: np.ndarray | None = None  # [n] where each sample is in the source: its line (CSV) or row (.npy), from 1


def unit_scale(units: str | None, model_units: str) -> float:
    """The factor that brings a recording in `units` to the model's unit."""
    if units is not None and units not in UNITS:
        raise UserError(f"--units {units}: expected one of {', '.join(UNITS)}")
    if units is None or units == model_units or model_units not in UNITS:
        return 1.0
    return G if (units, model_units) == ("g", "m/s2") else 1 / G


class CsvSource:
    """Samples from CSV text: a file at `path`, or bytes read from `handle` (standard input's buffer)."""

    def __init__(self, name: str, channels: int, scale: float = 1.0, path: Path | None = None,
                 handle: BinaryIO | None = None):
        self.name, self.channels, self.scale, self.path, self.handle = name, channels, scale, path, handle
        self.width: int | None = None  # columns, known from the first non-blank line
        self.time_column: int | None = None
        self.line = 0  # lines read so far
        self.samples = 0
        self.last_time = -math.inf

    @property
    def has_times(self) -> bool:
        return self.time_column is not None

    def chunks(self) -> Iterator[Chunk]:
        with self.path.open("rb") if self.path is not None else nullcontext(self.handle) as handle:
            read = handle.read1 if hasattr(handle, "read1") else handle.read
            rest = b""
            while data := read(READ_BYTES):
                if self.line == 0 and not rest and data.startswith(b"\xef\xbb\xbf"):
                    data = data[3:]
                lines = (rest + data).split(b"\n")
                rest = lines.pop()
                if len(rest) > MAX_LINE:
                    raise DataError(f"{self.name}: line {self.line + len(lines) + 1} is longer than {MAX_LINE} "
                                    "characters")
                if (chunk := self._parse(lines)) is not None:
                    yield chunk
            if (chunk := self._parse([rest])) is not None:
                yield chunk
        if self.width is None:
            raise DataError(f"{self.name}: the recording is empty")
        if self.samples == 0:
            raise DataError(f"{self.name}: a header row but no data")

    def _cells(self, lines: list[bytes]) -> tuple[list[bytes], list[int]]:
        """The data lines' cells, flat, and their line numbers; checks line lengths and column counts."""
        cells: list[bytes] = []
        numbers: list[int] = []
        for raw in lines:
            self.line += 1
            if len(raw) > MAX_LINE:
                raise DataError(f"{self.name}: line {self.line} is longer than {MAX_LINE} characters")
            text = raw.strip()
            if not text or (self.width is None and self._is_header(text)):
                continue
            row = text.split(b",")
            if len(row) != self.width:
                raise DataError(f"{self.name}: line {self.line} has {len(row)} columns, expected {self.width}")
            cells.extend(row)
            numbers.append(self.line)
        self.samples += len(numbers)
        return cells, numbers

    def _is_header(self, text: bytes) -> bool:
        """Decides the number of columns and the time column from the first non-blank line; True for a header."""
        try:
            row = text.decode("utf-8").split(",")
        except UnicodeDecodeError:
            raise DataError(f"{self.name}: line {self.line} is not UTF-8 text (expected CSV or .npy)") from None
        self.width = len(row)
        header = not all(is_number(cell) for cell in row)
        if header:
            timed = [i for i, cell in enumerate(row) if cell.strip().lower() in TIME_COLUMNS]
            self.time_column = timed[0] if timed else None
        data_columns = self.width - self.has_times
        if data_columns != self.channels:
            raise DataError(f"{self.name}: {data_columns} data columns, but the model reads {self.channels}; a time "
                            f"column must be named one of {', '.join(TIME_COLUMNS)}")
        return header

    def _parse(self, lines: list[bytes]) -> Chunk | None:
        cells, numbers = self._cells(lines)
        if not numbers:
            return None
        try:
            table = np.array(cells, dtype=np.float64).reshape(len(numbers), self.width)
        except ValueError:
            self._explain(cells, numbers)
            raise
        times = None
        if self.time_column is not None:
            times = table[:, self.time_column]
            table = np.delete(table, self.time_column, axis=1)
        lines_arr = np.asarray(numbers)
        table = table * self.scale if self.scale != 1.0 else table
        _check_finite(self.name, table, lines_arr, "line")
        if times is not None:
            self._check_times(times, lines_arr)
        return Chunk(table, times, lines_arr)

    def _explain(self, cells: list[bytes], numbers: list[int]) -> None:
        for k, cell in enumerate(cells):
            if not is_number(cell.decode("utf-8", "replace")):
                shown = cell.decode("utf-8", "replace").strip()[:20]
                raise DataError(f"{self.name}: line {numbers[k // self.width]}, column {k % self.width + 1}: "
                                f"'{shown}' is not a number")

    def _check_times(self, times: np.ndarray, lines: np.ndarray) -> None:
        steps = np.diff(np.concatenate([[self.last_time], times]))
        bad = np.flatnonzero(~(steps > 0) | ~np.isfinite(times))
        if len(bad):
            raise DataError(f"{self.name}: line {lines[bad[0]]}: the time column is not strictly increasing")
        self.last_time = float(times[-1])


def _check_finite(name: str, values: np.ndarray, where: np.ndarray, what: str) -> None:
    """Every value finite, and still finite once converted to the model's float32 (in the model's unit)."""
    bad = ~(np.abs(values) <= FLOAT32_MAX)  # NaN compares false
    if bad.any():
        row = int(np.argwhere(bad)[0, 0])
        if np.isfinite(values[row]).all():
            raise DataError(f"{name}: {what} {where[row]}: a value beyond float32's range (±{FLOAT32_MAX:.3g}), "
                            "infinite once converted for the model")
        raise DataError(f"{name}: {what} {where[row]}: a value is NaN or infinite (fill or cut gaps before "
                        "predicting)")


class NpySource:
    """Samples from a `.npy` file [samples, channels], read a few thousand rows at a time."""

    has_times = False

    def __init__(self, path: Path, channels: int, scale: float = 1.0):
        self.path, self.scale = Path(path), scale
        try:
            self.shape, fortran, self.dtype, self.offset = npy_header(self.path)
        except ValueError as err:
            raise DataError(f"{self.path}: {err}") from None
        if len(self.shape) != 2 or self.shape[1] != channels:
            raise DataError(f"{self.path}: shape {self.shape}, expected [samples, {channels}]")
        if fortran and self.shape[0] > 1 and channels > 1:
            raise DataError(f"{self.path}: stored column-major; save it with np.save(path, np.ascontiguousarray(a))")
        if self.shape[0] == 0:
            raise DataError(f"{self.path}: the recording is empty")

    def chunks(self) -> Iterator[Chunk]:
        rows, channels = self.shape
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            for first in range(0, rows, NPY_ROWS):
                count = min(NPY_ROWS, rows - first)
                data = handle.read(count * channels * self.dtype.itemsize)
                values = np.frombuffer(data, dtype=self.dtype).reshape(count, channels).astype(np.float64)
                values = values * self.scale if self.scale != 1.0 else values
                where = np.arange(first + 1, first + count + 1)
                _check_finite(str(self.path), values, where, "sample")
                yield Chunk(values, None, where)


def open_source(path: str | Path, channels: int, scale: float, stdin: BinaryIO | None = None):
    """A source for `path`: '-' is standard input (CSV), a .npy suffix a .npy file, anything else CSV text."""
    if str(path) == "-":
        return CsvSource("standard input", channels, scale, handle=stdin)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        return NpySource(path, channels, scale)
    return CsvSource(str(path), channels, scale, path=path)
