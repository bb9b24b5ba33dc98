"""Recognise actions in a raw accelerometer recording of any length and rate.

The recording is resampled to the model's rate, low-passed once for the model's clip length, and cut into
windows of the model's clip duration (or --window) every --hop seconds; each window is resampled to the model's
clip length exactly as training clips were, and classified. The per-window probabilities are then smoothed over
neighbouring windows and the labels merged into segments (an action with its start and end time); segments
shorter than a minimum duration are absorbed by their neighbours.

Input files: `.npy` ([samples, channels]) or CSV, with or without a header row. A CSV column named t, time,
time_s or timestamp (seconds) gives the timestamps; the rate is then estimated from them unless --rate is given.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import scipy.signal

from pskd.arrays import load_npy
from pskd.deploy.card import ModelCard
from pskd.errors import DataError, UserError

G = 9.80665
UNITS = ("g", "m/s2")
TIME_COLUMNS = ("t", "time", "time_s", "timestamp", "seconds")


@dataclass
class Recording:
    signal: np.ndarray  # [samples, channels] float64, in the model's unit
    rate: float
    source: str
    rate_from: str  # "--rate", "timestamps" or "model"

    @property
    def duration(self) -> float:
        return len(self.signal) / self.rate


def _parse_csv(path: Path) -> tuple[list[str] | None, np.ndarray]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file (expected CSV or .npy)") from None
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"{path}: the file is empty")

    def numeric(cell: str) -> bool:
        try:
            float(cell)
            return True
        except ValueError:
            return False

    header = None
    if not all(numeric(cell) for cell in rows[0]):
        header, rows = [cell.strip().lower() for cell in rows[0]], rows[1:]
        if not rows:
            raise DataError(f"{path}: a header row but no data")
    width = len(header) if header else len(rows[0])
    values = np.empty((len(rows), width))
    first_line = 2 if header else 1
    for i, row in enumerate(rows):
        if len(row) != width:
            raise DataError(f"{path}: line {i + first_line} has {len(row)} columns, expected {width}")
        for j, cell in enumerate(row):
            try:
                values[i, j] = float(cell)
            except ValueError:
                raise DataError(f"{path}: line {i + first_line}, column {j + 1}: '{cell.strip()[:20]}' "
                                "is not a number") from None
    return header, values


def read_recording(path: Path, card: ModelCard, rate: float | None = None, units: str | None = None) -> Recording:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise UserError(f"--rate {rate:g}: the sampling rate must be a positive number of Hz")
    if units is not None and units not in UNITS:
        raise UserError(f"--units {units}: expected one of {', '.join(UNITS)}")
    times = None
    if path.suffix.lower() == ".npy":
        try:
            values = load_npy(path)
        except ValueError as err:
            raise DataError(f"{path}: {err}") from None
        if values.ndim != 2:
            raise DataError(f"{path}: shape {values.shape}, expected [samples, {card.channels}]")
        values = values.astype(np.float64)
        if values.shape[0] == 0:
            raise DataError(f"{path}: the recording is empty")
    else:
        header, values = _parse_csv(path)
        if header:
            timed = [i for i, name in enumerate(header) if name in TIME_COLUMNS]
            if timed:
                times = values[:, timed[0]]
                values = np.delete(values, timed[0], axis=1)
    if values.shape[1] != card.channels:
        raise DataError(f"{path}: {values.shape[1]} data columns, but the model reads {card.channels} "
                        f"({', '.join(card.streams)}); a time column must be named one of {', '.join(TIME_COLUMNS)}")
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argwhere(bad)[0, 0])
        raise DataError(f"{path}: sample {row + 1} is NaN or infinite (fill or cut gaps before predicting)")
    rate_from = "--rate"
    if rate is None and times is not None:
        steps = np.diff(times)
        if len(steps) == 0 or not np.all(np.isfinite(steps)) or np.any(steps <= 0):
            raise DataError(f"{path}: the time column is not strictly increasing")
        rate, rate_from = 1.0 / float(np.median(steps)), "timestamps"
    elif rate is None:
        rate, rate_from = card.rate_hz, "model"
    unit = units or card.units
    if unit != card.units and card.units in UNITS:
        values = values * (G if (unit, card.units) == ("g", "m/s2") else 1 / G)
    return Recording(values, float(rate), str(path), rate_from)


def to_rate(signal: np.ndarray, rate: float, target: float) -> np.ndarray:
    """Polyphase resampling (with its anti-aliasing filter) from `rate` to `target` Hz."""
    if abs(rate - target) < 1e-6 * target:
        return signal
    ratio = Fraction(target / rate).limit_denominator(1000)
    return scipy.signal.resample_poly(signal, ratio.numerator, ratio.denominator, axis=0, padtype="line")


def cut_windows(signal: np.ndarray, window: int, hop: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows of `window` samples every `hop` samples (the last one flush with the end), each resampled to
    `seq_len` samples the way training clips were (low-pass when shortening, then linear interpolation):
    ([W, seq_len, C] float32, the start sample of each window)."""
    n = len(signal)
    starts = np.arange(0, n - window + 1, hop)
    if starts[-1] + window < n:
        starts = np.append(starts, n - window)
    if seq_len < window and window > 15:  # the same filter transforms.resample applies, once for the whole signal
        b, a = scipy.signal.butter(4, 0.9 * (seq_len - 1) / (window - 1))
        signal = scipy.signal.filtfilt(b, a, signal, axis=0, padlen=min(15, n - 1))
    position = np.linspace(0.0, 1.0, seq_len) * (window - 1)
    left = np.minimum(np.floor(position).astype(np.int64), window - 2)
    weight = (position - left)[None, :, None]
    index = starts[:, None] + left[None, :]
    clips = signal[index] * (1.0 - weight) + signal[index + 1] * weight
    return clips.astype(np.float32), starts


def smooth(probabilities: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over `width` windows (shrinking at the ends)."""
    if width <= 1:
        return probabilities
    kernel = np.ones(width)
    total = scipy.signal.convolve(probabilities, kernel[:, None], mode="same")
    count = scipy.signal.convolve(np.ones(len(probabilities)), kernel, mode="same")
    return total / count[:, None]


def segments(labels: np.ndarray, centres: np.ndarray, hop_s: float, duration: float, min_s: float) -> list[dict]:
    """Runs of one label as (label index, start, end); runs shorter than min_s are merged into a neighbour."""
    runs = []
    for i, label in enumerate(labels):
        if runs and runs[-1][0] == label:
            runs[-1][2] = i
        else:
            runs.append([int(label), i, i])

    def span(run):
        return (centres[run[2]] - centres[run[1]]) + hop_s

    changed = True
    while changed and len(runs) > 1:
        changed = False
        shortest = min(range(len(runs)), key=lambda k: span(runs[k]))
        if span(runs[shortest]) < min_s:
            k = shortest
            # absorbed by the longer neighbour
            neighbours = [j for j in (k - 1, k + 1) if 0 <= j < len(runs)]
            into = max(neighbours, key=lambda j: span(runs[j]))
            runs[into][1], runs[into][2] = min(runs[into][1], runs[k][1]), max(runs[into][2], runs[k][2])
            del runs[k]
            merged = []
            for run in runs:
                if merged and merged[-1][0] == run[0]:
                    merged[-1][2] = run[2]
                else:
                    merged.append(run)
            runs, changed = merged, True
    out = []  # the segments tile the recording: each starts where the one before ends, the last ends with it
    for k, (label, _, last) in enumerate(runs):
        start = out[-1]["end_s"] if out else 0.0
        end = duration if k == len(runs) - 1 else float(centres[last] + hop_s / 2)
        out.append({"label": label, "start_s": round(max(0.0, start), 3), "end_s": round(min(duration, end), 3)})
    return out


@dataclass
class Prediction:
    card: ModelCard
    recording: Recording
    start_s: np.ndarray  # [W]
    end_s: np.ndarray
    probabilities: np.ndarray  # [W, classes]
    smoothed: np.ndarray
    segments: list[dict]  # label name, start_s, end_s, mean confidence

    def window_rows(self) -> list[dict]:
        names = self.card.class_names
        raw, smoothed = self.probabilities.argmax(1), self.smoothed.argmax(1)
        return [{"window": i, "start_s": round(float(self.start_s[i]), 3), "end_s": round(float(self.end_s[i]), 3),
                 "label": names[raw[i]], "confidence": round(float(self.probabilities[i, raw[i]]), 4),
                 "smoothed_label": names[smoothed[i]],
                 **{f"p_{name}": round(float(p), 4) for name, p in zip(names, self.probabilities[i])}}
                for i in range(len(self.start_s))]


def predict_recording(recording: Recording, card: ModelCard, classify, window_s: float | None = None,
                      hop_s: float = 0.5, smooth_windows: int | None = None, min_segment_s: float | None = None,
                      batch: int = 1024) -> Prediction:
    """classify(clips [B, seq_len, C] float32) -> probabilities [B, classes]."""
    window_s = card.window_s if window_s is None else window_s
    for name, value in (("--window", window_s), ("--hop", hop_s)):
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"{name} {value:g}: must be a positive number of seconds")
    signal = to_rate(recording.signal, recording.rate, card.rate_hz)
    window = max(2, round(window_s * card.rate_hz))
    hop = max(1, round(hop_s * card.rate_hz))
    if len(signal) < window:
        raise DataError(f"{recording.source}: {recording.duration:.2f} s of data, shorter than one "
                        f"{window_s:g} s window")
    clips, starts = cut_windows(signal, window, hop, card.seq_len)
    probabilities = np.concatenate([classify(clips[i : i + batch]) for i in range(0, len(clips), batch)])
    hop_actual = hop / card.rate_hz
    width = smooth_windows if smooth_windows is not None else max(1, round(window_s / hop_actual / 2)) | 1
    smoothed = smooth(probabilities, width)
    start_s = starts / card.rate_hz
    end_s = start_s + window / card.rate_hz
    centres = (start_s + end_s) / 2
    duration = len(signal) / card.rate_hz
    min_s = window_s / 2 if min_segment_s is None else min_segment_s
    found = segments(smoothed.argmax(1), centres, hop_actual, duration, min_s)
    for segment in found:
        inside = (centres >= segment["start_s"]) & (centres <= segment["end_s"])
        segment["confidence"] = round(float(smoothed[inside, segment["label"]].mean()) if inside.any() else 0.0, 4)
        segment["label"] = card.class_names[segment["label"]]
    return Prediction(card, recording, start_s, end_s, probabilities, smoothed, found)


def score_segments(found: list[dict], truth: list[tuple[int, float, float]], names: list[str],
                   step: float = 0.05) -> tuple[float, list[int]]:
    """Recognised segments against known ones (class index, start s, end s), on a grid of `step` seconds:
    (the fraction of the time labelled right, the class covering most of each true segment, -1 for none)."""
    grid = np.arange(0.0, truth[-1][2], step)
    expected = np.zeros(len(grid), int)
    for action, start, end in truth:
        expected[(grid >= start) & (grid < end)] = action
    got = np.full(len(grid), -1)
    for segment in found:
        got[(grid >= segment["start_s"]) & (grid < segment["end_s"])] = names.index(segment["label"])
    majority = [int(np.bincount(got[(grid >= start) & (grid < end)] + 1).argmax()) - 1 for _, start, end in truth]
    return float((got == expected).mean()), majority


def write_rows(rows: list[dict], path: Path) -> None:
    """CSV or JSON lines, by the file's suffix (.csv, .jsonl / .json); written whole or not at all."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".json"):
        raise UserError(f"{path}: choose a .csv or .jsonl file name")
    tmp = path.with_name(path.name + ".incomplete")
    try:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            if suffix == ".csv":
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["label"])
                writer.writeheader()
                writer.writerows(rows)
            else:
                for row in rows:
                    handle.write(json.dumps(row) + "\n")
        tmp.replace(path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write ({err.strerror})") from None


def open_classifier(path: Path, threads: int = 1):
    """(card, classify) for an exported .onnx model (ONNX Runtime), or a run directory / .pt checkpoint (PyTorch,
    read with weights_only). classify(clips) returns class probabilities."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        from pskd.deploy.runtime import INPUT, PROBABILITIES, onnx_card, ort_session, require_onnx

        require_onnx()
        if not path.is_file():
            raise DataError(f"{path}: no such model file")
        card = onnx_card(path)
        session = ort_session(path, threads=threads)
        return card, lambda clips: session.run([PROBABILITIES], {INPUT: clips})[0]
    import torch

    from pskd.deploy.student import load_student

    torch.set_num_threads(threads)
    model, card = load_student(path)

    def classify(clips: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(clips))[1].numpy()

    return card, classify
