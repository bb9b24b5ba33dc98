"""Recognising actions in a stream of samples, online, with memory bounded whatever the stream's length.

A rolling buffer holds one window (plus what one read brought). Each window of the window's duration, every hop,
is resampled to the model's clip length exactly as a training clip was (transforms.resample: a zero-phase
low-pass when shortening, then linear interpolation), classified, and its row handed on at once. The per-window
probabilities are then averaged over a centred run of `smooth` windows (a look-ahead of smooth // 2 windows),
and a segment changes label only once the new label has lasted `min_segment` seconds (a look-ahead of that many
windows); each segment is handed on when it ends. The last window is flush with the end of the stream.

Files and standard input go through the same path, so their outputs are identical.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pskd import numeric
from pskd.deploy.card import ModelCard
from pskd.deploy.sources import Chunk
from pskd.errors import DataError, UserError

MAX_SMOOTH = 101  # windows averaged at most
MAX_MIN_SEGMENT_S = 300.0
RATE_ESTIMATE_STEPS = 64  # a time column's rate is the median of its first steps


@dataclass(frozen=True)
class Settings:
    """What the user asked for; None means the model's (or a time column's) value."""

    rate: float | None = None
    window_s: float | None = None
    hop_s: float = 0.5
    smooth: int | None = None
    min_segment_s: float | None = None


def check_settings(settings: Settings, card: ModelCard) -> None:
    """Every option's range, before any work; one UserError naming the option."""
    if settings.rate is not None:
        check_rate(settings.rate, card, "--rate")
    window = card.window_s if settings.window_s is None else settings.window_s
    w_low, w_high = card.window_s / 4, card.window_s * 4
    if not (math.isfinite(window) and w_low <= window <= w_high):
        raise UserError(f"--window {window:g}: expected {w_low:.3g} to {w_high:.3g} s (a quarter to four times the "
                        f"model's {card.window_s:.3g} s clips)")
    hop_low = 1 / (settings.rate or card.rate_hz * 32)
    if not (math.isfinite(settings.hop_s) and hop_low <= settings.hop_s <= window):
        raise UserError(f"--hop {settings.hop_s:g}: expected one sample ({hop_low:.3g} s) to one window "
                        f"({window:.3g} s)")
    if settings.smooth is not None and not (1 <= settings.smooth <= MAX_SMOOTH and settings.smooth % 2 == 1):
        raise UserError(f"--smooth {settings.smooth}: expected an odd number of windows from 1 to {MAX_SMOOTH}")
    m = settings.min_segment_s
    if m is not None and not (math.isfinite(m) and 0 <= m <= MAX_MIN_SEGMENT_S):
        raise UserError(f"--min-segment {m:g}: expected 0 to {MAX_MIN_SEGMENT_S:g} s")


def check_rate(rate: float, card: ModelCard, option: str) -> None:
    low, high = card.rate_hz / 8, card.rate_hz * 32
    if not (math.isfinite(rate) and low <= rate <= high):
        raise UserError(f"{option} {rate:g}: expected {low:g} to {high:g} Hz (an eighth to 32 times the model's "
                        f"{card.rate_hz:g} Hz)")


@dataclass(frozen=True)
class Plan:
    """Settings resolved against the model and the stream's rate: sizes in samples and windows."""

    rate: float
    rate_from: str
    window: int
    hop: int
    smooth: int
    min_windows: int

    @property
    def hop_s(self) -> float:
        return self.hop / self.rate

    @property
    def window_s(self) -> float:
        return self.window / self.rate


def make_plan(settings: Settings, card: ModelCard, rate: float, rate_from: str) -> Plan:
    window_s = card.window_s if settings.window_s is None else settings.window_s
    window = max(2, round(window_s * rate))
    hop = min(window, max(1, round(settings.hop_s * rate)))
    hop_s = hop / rate
    smooth = settings.smooth if settings.smooth is not None else min(MAX_SMOOTH, max(1, round(window_s / hop_s / 2)) | 1)
    min_s = window_s / 2 if settings.min_segment_s is None else settings.min_segment_s
    return Plan(rate, rate_from, window, hop, smooth, max(1, math.ceil(min_s / hop_s - 1e-9)))


def resample_windows(windows: np.ndarray, seq_len: int) -> np.ndarray:
    """[W, window, C] -> [W, seq_len, C] float32, each window as transforms.resample treats a training clip."""
    return numeric.linear(numeric.antialias(windows, seq_len, axis=1), seq_len, axis=1).astype(np.float32)


class Windower:
    """A rolling buffer: samples in, complete windows out (their first sample's index, the samples, the times of
    their first and last sample). Keeps at most one window plus the samples of one push."""

    def __init__(self, window: int, hop: int, channels: int):
        self.window, self.hop = window, hop
        self.values = np.zeros((0, channels))
        self.times = np.zeros(0)
        self.offset = 0  # stream index of values[0]
        self.next_start = 0
        self.total = 0
        self.last_emitted_end = 0

    def push(self, values: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.values = np.concatenate([self.values, values])
        self.times = np.concatenate([self.times, times])
        self.total += len(values)
        starts = np.arange(self.next_start, self.total - self.window + 1, self.hop)
        out = self._take(starts)
        if len(starts):
            self.next_start = int(starts[-1]) + self.hop
            self.last_emitted_end = int(starts[-1]) + self.window
        keep_from = min(self.next_start, self.total - self.window)
        if keep_from > self.offset:
            self.values, self.times = self.values[keep_from - self.offset :], self.times[keep_from - self.offset :]
            self.offset = keep_from
        return out

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The last window, flush with the end of the stream, when the hops stopped short of it."""
        if self.total < self.window or self.last_emitted_end == self.total:
            return self._take(np.zeros(0, np.int64))
        self.last_emitted_end = self.total
        return self._take(np.array([self.total - self.window]))

    def _take(self, starts: np.ndarray):
        local = starts - self.offset
        index = local[:, None] + np.arange(self.window)[None, :]
        bounds = np.stack([self.times[local], self.times[local + self.window - 1]], axis=1) if len(starts) else \
            np.zeros((0, 2))
        return starts, self.values[index], bounds


class Smoother:
    """Centred moving average over `width` windows, online: each window is final `width // 2` windows later (the
    average shrinks at the ends of the stream)."""

    def __init__(self, width: int):
        self.k = width // 2
        self.recent: deque = deque(maxlen=2 * self.k + 1)
        self.count = 0
        self.done = 0  # windows already smoothed

    def push(self, probabilities: np.ndarray) -> list[tuple[int, np.ndarray]]:
        out = []
        for row in probabilities:
            self.recent.append(row)
            self.count += 1
            if self.count - 1 - self.done >= self.k:
                out.append(self._final(self.done))
        return out

    def finish(self) -> list[tuple[int, np.ndarray]]:
        return [self._final(i) for i in range(self.done, self.count)]

    def _final(self, i: int) -> tuple[int, np.ndarray]:
        first = self.count - len(self.recent)  # stream index of recent[0]
        lo, hi = max(i - self.k, first), min(i + self.k, self.count - 1)
        rows = [self.recent[j - first] for j in range(lo, hi + 1)]
        self.done = i + 1
        return i, np.mean(rows, axis=0)


@dataclass
class _Votes:
    """Windows given to one segment: their summed smoothed probabilities."""

    label: int
    start_s: float
    total: np.ndarray
    windows: int = 0

    def add(self, vector: np.ndarray) -> None:
        self.total = self.total + vector
        self.windows += 1


class Segmenter:
    """Segments from smoothed windows, online: the label changes once a new label has held `min_windows` windows in a
    row; the segment then ends where that run began. Shorter runs belong to the segment around them (those before
    any label has held belong to the first segment)."""

    def __init__(self, min_windows: int, hop_s: float, names: list[str], start_s: float = 0.0):
        self.min_windows, self.hop_s, self.names = min_windows, hop_s, names
        self.current = _Votes(-1, start_s, np.zeros(len(names)))  # label -1: no label has held yet
        self.run: list[tuple[float, np.ndarray]] = []  # (centre_s, vector) of the candidate run
        self.run_label = -1

    def push(self, centre_s: float, vector: np.ndarray) -> list[dict]:
        label = int(vector.argmax())
        if label == self.current.label:
            self._absorb_run()
            self.current.add(vector)
            return []
        if label != self.run_label:
            self._absorb_run()
            self.run_label = label
        self.run.append((centre_s, vector))
        return self._switch() if len(self.run) >= self.min_windows else []

    def finish(self, end_s: float) -> list[dict]:
        self._absorb_run()
        if self.current.windows == 0:
            return []
        if self.current.label < 0:  # nothing ever held: the label with the most votes
            self.current.label = int(self.current.total.argmax())
        return [self._close(end_s)]

    def _switch(self) -> list[dict]:
        boundary = self.run[0][0] - self.hop_s / 2
        first = self.current.label < 0
        closed = [] if first else [self._close(boundary)]
        votes = self.current if first else _Votes(self.run_label, boundary, np.zeros(len(self.names)))
        votes.label = self.run_label
        for _, vector in self.run:
            votes.add(vector)
        self.current, self.run, self.run_label = votes, [], -1
        return closed

    def _absorb_run(self) -> None:
        for _, vector in self.run:
            self.current.add(vector)
        self.run, self.run_label = [], -1

    def _close(self, end_s: float) -> dict:
        segment = self.current
        confidence = float(segment.total[segment.label] / max(1, segment.windows))
        return {"label": self.names[segment.label], "start_s": round(segment.start_s, 3),
                "end_s": round(end_s, 3), "confidence": round(confidence, 4)}


@dataclass
class Summary:
    plan: Plan | None = None
    samples: int = 0
    windows: int = 0
    segments: int = 0
    duration_s: float = 0.0


def window_row(index: int, bounds: tuple[float, float], probabilities: np.ndarray, names: list[str]) -> dict:
    best = int(probabilities.argmax())
    return {"window": index, "start_s": round(bounds[0], 3), "end_s": round(bounds[1], 3), "label": names[best],
            "confidence": round(float(probabilities[best]), 4),
            **{f"p_{name}": round(float(p), 4) for name, p in zip(names, probabilities)}}


class StreamPredictor:
    """Feeds chunks of samples through windows, the classifier, the smoother and the segmenter; hands each window
    row to on_window as soon as it is classified and each segment to on_segment when it ends."""

    def __init__(self, card: ModelCard, classify: Callable[[np.ndarray], np.ndarray], settings: Settings,
                 on_window: Callable[[dict, np.ndarray], None], on_segment: Callable[[dict], None],
                 source_name: str = "the recording", on_samples: Callable | None = None):
        check_settings(settings, card)
        self.card, self.classify, self.settings = card, classify, settings
        self.on_window, self.on_segment, self.on_samples, self.name = on_window, on_segment, on_samples, source_name
        self.summary = Summary()
        self.pending: list[Chunk] = []  # chunks held back until a time column's rate is known
        self.first_time: float | None = None
        self.windower = self.smoother = self.segmenter = None
        self.centres: deque = deque()

    def run(self, source) -> Summary:
        """Everything a source (sources.CsvSource, NpySource or any object with chunks() and has_times) holds."""
        for chunk in source.chunks():
            self.push(chunk, source.has_times)
        return self.finish(source.has_times)

    def push(self, chunk: Chunk, timed: bool) -> None:
        self.summary.samples += len(chunk.values)
        if self.first_time is None:
            self.first_time = float(chunk.times[0]) if chunk.times is not None else 0.0
        if self.windower is None:
            self.pending.append(chunk)
            if timed and self.settings.rate is None and sum(len(c.values) for c in self.pending) <= RATE_ESTIMATE_STEPS:
                return
            self._start(timed)
            return
        self._feed(chunk)

    def _start(self, timed: bool) -> None:
        if self.settings.rate is not None:
            rate, rate_from = self.settings.rate, "--rate"
        elif timed:
            times = np.concatenate([c.times for c in self.pending])[: RATE_ESTIMATE_STEPS + 1]
            if len(times) < 2:
                raise DataError(f"{self.name}: one sample only")
            rate, rate_from = 1.0 / float(np.median(np.diff(times))), "timestamps"
            check_rate(rate, self.card, f"{self.name}: its time column implies a rate of")
        else:
            rate, rate_from = self.card.rate_hz, "model"
        self.plan = make_plan(self.settings, self.card, rate, rate_from)
        self.summary.plan = self.plan
        self.windower = Windower(self.plan.window, self.plan.hop, self.card.channels)
        self.smoother = Smoother(self.plan.smooth)
        self.segmenter = Segmenter(self.plan.min_windows, self.plan.hop_s, self.card.class_names)
        pending, self.pending = self.pending, []
        for chunk in pending:
            self._feed(chunk)

    def _times(self, chunk: Chunk) -> np.ndarray:
        if chunk.times is not None:
            return chunk.times - self.first_time
        first = self.windower.total
        return np.arange(first, first + len(chunk.values)) / self.plan.rate

    def _feed(self, chunk: Chunk) -> None:
        times = self._times(chunk)
        if self.on_samples is not None:
            self.on_samples(times, chunk.values)
        self._windows(*self.windower.push(chunk.values, times))

    def _windows(self, starts: np.ndarray, windows: np.ndarray, bounds: np.ndarray) -> None:
        if not len(starts):
            return
        clips = resample_windows(windows, self.card.seq_len)
        step = 1 / self.plan.rate
        if not np.isfinite(clips).all():  # the low-pass can overshoot float32's range next to such values
            start = float(bounds[np.flatnonzero(~np.isfinite(clips).reshape(len(clips), -1).all(1))[0]][0])
            raise DataError(f"{self.name}: the window from {start:.2f} s holds values beyond float32's range")
        probabilities = np.asarray(self.classify(clips), dtype=np.float64)
        if not np.isfinite(probabilities).all():
            start = float(bounds[np.flatnonzero(~np.isfinite(probabilities).all(1))[0]][0])
            raise DataError(f"{self.name}: the model's output is NaN or infinite for the window from {start:.2f} s "
                            "(values too large for the model: check --units and the recording)")
        for bound, row in zip(bounds, probabilities):
            span = (float(bound[0]), float(bound[1]) + step)
            self.on_window(window_row(self.summary.windows, span, row, self.card.class_names), row)
            self.centres.append(sum(span) / 2)
            self.summary.windows += 1
        self._segments(self.smoother.push(probabilities))

    def _segments(self, smoothed: list[tuple[int, np.ndarray]]) -> None:
        for _, vector in smoothed:
            for segment in self.segmenter.push(self.centres.popleft(), vector):
                self._emit(segment)

    def _emit(self, segment: dict) -> None:
        self.summary.segments += 1
        self.on_segment(segment)

    def finish(self, timed: bool) -> Summary:
        if self.windower is None:
            if not self.pending:
                raise DataError(f"{self.name}: the recording is empty")
            self._start(timed)
        self._windows(*self.windower.finish())
        end = self.windower.times[-1] + 1 / self.plan.rate if len(self.windower.times) else 0.0
        self.summary.duration_s = float(end)
        if self.summary.windows == 0:
            raise DataError(f"{self.name}: {end:.2f} s of data, shorter than one {self.plan.window_s:.3g} s window")
        self._segments(self.smoother.finish())
        for segment in self.segmenter.finish(round(float(end), 3)):
            self._emit(segment)
        return self.summary
