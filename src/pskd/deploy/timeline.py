"""A recording and what was recognised in it, as a picture: the three axes, the segments as coloured bands labelled
by class, the per-window confidence below and, with the true segments, the fraction of time recognised right.

What is kept for the picture is bounded whatever the recording's length: the signal and the confidence are kept
as min/max envelopes of at most MAX_BINS bins (two neighbouring bins merge when there would be more).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from pskd.bounded import LimitError, loads_json
from pskd.errors import DataError
from pskd.limits import METADATA_BYTES

MAX_BINS = 4096
MAX_TRUTH_BYTES = METADATA_BYTES


class Envelope:
    """Min and max of each channel over bins of `size` consecutive samples, the size doubling as needed."""

    def __init__(self, channels: int):
        self.size = 1
        self.times = np.zeros(0)  # the first time of each bin
        self.low = np.zeros((0, channels))
        self.high = np.zeros((0, channels))
        self.last_count = 0  # samples in the last bin

    def push(self, times: np.ndarray, values: np.ndarray) -> None:
        values = values.reshape(len(values), -1)
        take = min(self.size - self.last_count, len(values)) if len(self.times) else 0
        if take:  # top up the last bin first
            self.low[-1] = np.minimum(self.low[-1], values[:take].min(axis=0))
            self.high[-1] = np.maximum(self.high[-1], values[:take].max(axis=0))
            self.last_count += take
        rest = values[take:]
        if len(rest):
            edges = np.arange(0, len(rest), self.size)
            self.times = np.concatenate([self.times, times[take:][edges]])
            self.low = np.concatenate([self.low, np.minimum.reduceat(rest, edges, axis=0)])
            self.high = np.concatenate([self.high, np.maximum.reduceat(rest, edges, axis=0)])
            self.last_count = len(rest) - int(edges[-1])
        while len(self.times) > MAX_BINS:
            self._halve()

    def _halve(self) -> None:
        pairs = len(self.times) - len(self.times) % 2
        low = np.minimum(self.low[:pairs:2], self.low[1:pairs:2])
        high = np.maximum(self.high[:pairs:2], self.high[1:pairs:2])
        if pairs == len(self.times):  # the last bin joined the full one before it
            self.last_count += self.size
        self.times = np.concatenate([self.times[:pairs:2], self.times[pairs:]])
        self.low, self.high = np.concatenate([low, self.low[pairs:]]), np.concatenate([high, self.high[pairs:]])
        self.size *= 2


class Timeline:
    """Collects what the picture needs while a stream is predicted (pass its methods as the stream's callbacks)."""

    def __init__(self, channels: int):
        self.signal = Envelope(channels)
        self.confidence = Envelope(1)
        self.segments: list[dict] = []

    def samples(self, times: np.ndarray, values: np.ndarray) -> None:
        self.signal.push(times, values)

    def window(self, row: dict, probabilities: np.ndarray) -> None:
        self.confidence.push(np.array([(row["start_s"] + row["end_s"]) / 2]), np.array([[row["confidence"]]]))

    def segment(self, segment: dict) -> None:
        self.segments.append(segment)  # one per min_segment at most: bounded by the recording, not its rate


def read_truth(path: Path, names: list[str]) -> list[tuple[int, float, float]]:
    """True segments (class index, start s, end s) from a .csv or .jsonl file with label, start_s and end_s, in
    the format `pskd predict --segments` writes; sorted, non-overlapping, labels among the model's classes."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--truth {path}: no such file")
    if path.stat().st_size > MAX_TRUTH_BYTES:
        raise DataError(f"--truth {path}: larger than {MAX_TRUTH_BYTES // 1024**2} MiB")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"--truth {path}: not UTF-8 text") from None
    if path.suffix.lower() == ".csv":
        try:
            rows = list(csv.DictReader(io.StringIO(text)))
        except csv.Error as err:  # a field beyond the csv module's limit, say
            raise DataError(f"--truth {path}: not CSV ({err})") from None
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(loads_json(line))
                except json.JSONDecodeError:
                    raise DataError(f"--truth {path}: line {number} is not JSON") from None
                except LimitError as err:
                    raise DataError(f"--truth {path}: line {number}: {err}") from None
    return _check_truth(rows, names, path)


def _check_truth(rows: list, names: list[str], path: Path) -> list[tuple[int, float, float]]:
    truth = []
    for number, row in enumerate(rows, 1):
        try:
            label, start, end = row["label"], float(row["start_s"]), float(row["end_s"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"--truth {path}: segment {number} needs label, start_s and end_s (numbers)") from None
        if label not in names:
            raise DataError(f"--truth {path}: segment {number}: '{str(label)[:40]}' is not one of the model's classes")
        if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
            raise DataError(f"--truth {path}: segment {number}: start_s must be >= 0 and before end_s")
        if truth and start < truth[-1][2] - 1e-9:
            raise DataError(f"--truth {path}: segment {number} starts before the one before it ends")
        truth.append((names.index(label), start, end))
    if not truth:
        raise DataError(f"--truth {path}: no segments")
    return truth


def overlaps(found: list[dict], truth: list[tuple[int, float, float]], names: list[str]) -> np.ndarray:
    """Seconds of each true segment covered by each class: [len(truth), classes]."""
    covered = np.zeros((len(truth), len(names)))
    j = 0
    for i, (_, start, end) in enumerate(truth):
        while j < len(found) and found[j]["end_s"] <= start:
            j += 1
        k = j
        while k < len(found) and found[k]["start_s"] < end:
            shared = min(end, found[k]["end_s"]) - max(start, found[k]["start_s"])
            covered[i, names.index(found[k]["label"])] += max(0.0, shared)
            k += 1
    return covered


def score_segments(found: list[dict], truth: list[tuple[int, float, float]], names: list[str]) -> tuple[float, list[int]]:
    """(The fraction of the true segments' time labelled with their class, the class covering most of each true
    segment or -1 for none)."""
    covered = overlaps(found, truth, names)
    total = sum(end - start for _, start, end in truth)
    right = sum(covered[i, label] for i, (label, _, _) in enumerate(truth))
    majority = [int(row.argmax()) if row.max() > 0 else -1 for row in covered]
    return float(right / total), majority


def draw(timeline: Timeline, names: list[str], path: Path, title: str,
         truth: list[tuple[int, float, float]] | None = None) -> float | None:
    """Writes the picture; returns the fraction of time recognised right when the truth is given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pskd.evaluate.report import save_figure

    colours = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    from matplotlib.ticker import MaxNLocator

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(14, 5.5), sharex=True, height_ratios=[3, 1], layout="constrained")
    env = timeline.signal
    for c, axis in enumerate("xyz"[: env.low.shape[1]] if env.low.shape[1] <= 3 else range(env.low.shape[1])):
        top.fill_between(env.times, env.low[:, c], env.high[:, c], step="post", alpha=0.55, lw=0.5,
                         label=f"{axis}", color=("#b2182b", "#1a9850", "#2166ac")[c % 3])
    low = float(env.low.min()) if len(env.low) else 0.0
    high = float(env.high.max()) if len(env.high) else 1.0
    height = (high - low) or 1.0
    _bands(top, timeline.segments, names, colours, low - 0.02 * height, high + 0.02 * height, "recognised")
    score = None
    if truth:
        rows = [{"label": names[k], "start_s": s, "end_s": e} for k, s, e in truth]
        _bands(top, rows, names, colours, high + 0.06 * height, high + 0.22 * height, "true", alpha=0.9)
        score, _ = score_segments(timeline.segments, truth, names)
        title += f"; time recognised correctly: {100 * score:.1f} %"
    top.set_ylabel("acceleration")
    # the acceleration scale only beside the signal, not beside the band of true segments above it
    top.set_yticks([t for t in MaxNLocator(nbins=6).tick_values(low, high) if low <= t <= high])
    top.set_ylim(low - 0.05 * height, high + (0.32 if truth else 0.05) * height)  # room for the true names
    top.legend(loc="lower left", bbox_to_anchor=(1.005, 0.0), fontsize=7, frameon=False)  # beside, not on, the signal
    top.set_title(title, fontsize=10)
    conf = timeline.confidence
    bottom.fill_between(conf.times, conf.low[:, 0], conf.high[:, 0], step="post", color="#1f77b4", alpha=0.5)
    bottom.set_ylim(0, 1.02)
    bottom.set_ylabel("confidence\n(window's label)", fontsize=8)
    bottom.set_xlabel("time (s)")
    save_figure(fig, path, 110)
    return score


def _bands(axes, segments: list[dict], names: list[str], colours, low: float, high: float, what: str,
           alpha: float = 0.25) -> None:
    from matplotlib.transforms import blended_transform_factory

    span = (segments[-1]["end_s"] - segments[0]["start_s"]) if segments else 1.0
    for segment in segments:
        colour = colours(names.index(segment["label"]) % colours.N)
        axes.fill_between([segment["start_s"], segment["end_s"]], low, high, color=colour, alpha=alpha, lw=0)
        if segment["end_s"] - segment["start_s"] > 0.03 * span:
            axes.text((segment["start_s"] + segment["end_s"]) / 2, high, segment["label"], ha="center",
                      va="bottom" if what == "true" else "top", fontsize=7, clip_on=True)
    if segments:  # the row's name in the right margin, level with its segments' names
        side = blended_transform_factory(axes.transAxes, axes.transData)
        axes.text(1.005, (low + high) / 2 if what == "true" else high, what, transform=side, ha="left",
                  va="center" if what == "true" else "top", fontsize=7)
