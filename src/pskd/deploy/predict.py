"""Recognise actions in a raw accelerometer recording of any length and rate: a file, or a live stream on
standard input, through the same online path (deploy.stream), so that memory does not grow with the recording.

Input: CSV (with or without a header row; a column named t, time, time_s, timestamp or seconds gives the times in
seconds, and the rate is estimated from them unless --rate is given) or `.npy` ([samples, channels]).
Output: a row per window as soon as it is classified, a row per segment when it ends (CSV or JSON lines; '-' is
standard output, flushed line by line), optionally a timeline picture.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pskd.deploy.card import ModelCard
from pskd.deploy.sources import Chunk, open_source, unit_scale
from pskd.deploy.stream import Settings, StreamPredictor, Summary, check_settings
from pskd.deploy.timeline import Timeline, draw, read_truth, score_segments
from pskd.errors import DataError, UserError
from pskd.fileio import StagedText
from pskd.overwrite import refuse_link

__all__ = ["Prediction", "Recording", "RowWriter", "open_classifier", "predict_recording", "predict_stream",
           "read_recording", "score_segments"]


@dataclass
class Recording:
    signal: np.ndarray  # [samples, channels] float64, in the model's unit
    rate: float | None  # None: from the times, else the model's
    source: str
    times: np.ndarray | None = None

    def chunks(self):
        yield Chunk(self.signal, self.times, np.arange(1, len(self.signal) + 1))

    @property
    def has_times(self) -> bool:
        return self.times is not None


def read_recording(path: Path, card: ModelCard, units: str | None = None) -> Recording:
    """A whole recording file in memory (for the Python API and tests; `pskd predict` streams instead)."""
    source = open_source(path, card.channels, unit_scale(units, card.units))
    chunks = list(source.chunks())
    times = np.concatenate([c.times for c in chunks]) if source.has_times else None
    return Recording(np.concatenate([c.values for c in chunks]), None, str(path), times)


@dataclass
class Prediction:
    summary: Summary
    windows: list[dict] = field(default_factory=list)
    probabilities: list[np.ndarray] = field(default_factory=list)
    segments: list[dict] = field(default_factory=list)


def predict_recording(recording: Recording, card: ModelCard, classify, window_s: float | None = None,
                      hop_s: float = 0.5, smooth_windows: int | None = None,
                      min_segment_s: float | None = None) -> Prediction:
    """classify(clips [B, seq_len, C] float32) -> probabilities [B, classes]. Everything is kept in memory."""
    result = Prediction(Summary())
    settings = Settings(recording.rate, window_s, hop_s, smooth_windows, min_segment_s)

    def window(row, probabilities):
        result.windows.append(row)
        result.probabilities.append(probabilities)

    predictor = StreamPredictor(card, classify, settings, window, result.segments.append, recording.source)
    result.summary = predictor.run(recording)
    return result


class RowWriter:
    """Rows to a .csv or .jsonl file (under a temporary name, renamed when complete) or to standard output as
    JSON lines, each flushed at once."""

    def __init__(self, target: Path | str, stdout=None):
        self.stdout = str(target) == "-"
        self.path = None if self.stdout else Path(target)
        self.csv = None
        if self.stdout:
            self.handle = stdout or sys.stdout
            return
        if self.path.suffix.lower() not in (".csv", ".jsonl", ".json"):
            raise UserError(f"{self.path}: choose a .csv or .jsonl file name")
        self.staged = StagedText(self.path)  # the user's umask, under a temporary name until complete
        self.handle = self.staged.handle
        self.is_csv = self.path.suffix.lower() == ".csv"

    def write(self, row: dict) -> None:
        if not self.stdout and self.is_csv:
            if self.csv is None:
                self.csv = csv.DictWriter(self.handle, fieldnames=list(row))
                self.csv.writeheader()
            self.csv.writerow(row)
            return
        self.handle.write(json.dumps(row) + "\n")
        if self.stdout:
            self.handle.flush()

    def close(self, keep: bool) -> None:
        if self.stdout:
            return
        if keep:
            self.staged.commit()
        else:
            self.staged.discard()


def close_writers(writers, keep: bool) -> None:
    """Commit (keep) or discard every writer's file. When one cannot be committed (a folder is where it goes),
    the others are discarded too, and its error is raised: no temporary file is left behind."""
    failed = None
    for writer in writers:
        try:
            writer.close(keep=keep and failed is None)
        except BaseException as err:  # every writer is closed, whichever fails
            failed = failed or err
    if failed is not None:
        raise failed


def open_classifier(path: Path, threads: int = 1):
    """(card, classify) for an exported .onnx (ONNX Runtime) or .tflite model (LiteRT), or a run directory / .pt
    checkpoint (PyTorch, read with weights_only). classify(clips) returns class probabilities."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        from pskd.deploy.runtime import INPUT, PROBABILITIES, onnx_card, ort_session, require_onnx

        require_onnx()
        if not path.is_file():
            raise DataError(f"{path}: no such model file")
        card = onnx_card(path)
        session = ort_session(path, threads=threads)
        return card, lambda clips: session.run([PROBABILITIES], {INPUT: clips})[0]
    if path.suffix.lower() == ".tflite":
        from pskd.deploy.litert import open_tflite

        return open_tflite(path, threads)
    import torch

    from pskd.deploy.student import load_student

    torch.set_num_threads(threads)
    model, card = load_student(path)

    def classify(clips: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(clips))[1].numpy()

    return card, classify


@dataclass
class Outputs:
    """Where `pskd predict` writes: per-window rows, segment rows, a picture, and what is echoed."""

    windows: Path | None = None
    segments: Path | None = None
    plot: Path | None = None
    truth: Path | None = None


def check_outputs(model: Path, source: str, outputs: Outputs) -> None:
    """Before any work: no output over the input, the model (or inside the run directory that is the model), the
    truth or another output, nor through a link; a picture must be a .png."""
    taken = {Path(model).resolve(): "the model"}
    if source != "-":
        taken[Path(source).resolve()] = "the input"
    if outputs.truth is not None:
        taken[Path(outputs.truth).resolve()] = "the truth file (--truth)"
    for option, target in (("--out", outputs.windows), ("--segments", outputs.segments), ("--plot", outputs.plot)):
        if target is None or str(target) == "-":
            continue
        refuse_link(target, option)
        if target.resolve() in taken:
            raise UserError(f"{option} {target}: that is {taken[target.resolve()]}; choose another file")
        if Path(model).is_dir() and target.resolve().is_relative_to(Path(model).resolve()):
            raise UserError(f"{option} {target}: that is inside the run directory {model}, the model; choose "
                            "another file")
        if not target.parent.is_dir():
            raise UserError(f"{option} {target}: no such folder {target.parent}")
        taken[target.resolve()] = f"the same file as {option}"
    if outputs.plot is not None and outputs.plot.suffix.lower() != ".png":
        raise UserError(f"--plot {outputs.plot}: choose a .png file name")


def predict_stream(model: Path, source_path: str, settings: Settings, outputs: Outputs, units: str | None = None,
                   threads: int = 1, echo=print, stdin=None, stdout=None) -> Summary:
    """`pskd predict`: streams the input through the model into the outputs; returns the summary."""
    check_outputs(model, source_path, outputs)
    tic = time.perf_counter()
    card, classify = open_classifier(model, threads)
    check_settings(settings, card)
    source = open_source(source_path, card.channels, unit_scale(units, card.units), stdin or sys.stdin.buffer)
    truth = read_truth(outputs.truth, card.class_names) if outputs.truth is not None else None
    timeline = Timeline(card.channels) if outputs.plot is not None or truth is not None else None
    writers: dict[str, RowWriter] = {}
    try:
        for key, target in (("windows", outputs.windows), ("segments", outputs.segments)):
            if target is not None:
                writers[key] = RowWriter(target, stdout)
    except BaseException:
        close_writers(writers.values(), keep=False)  # the temporary file of one made before goes
        raise
    console = not any(w.stdout for w in writers.values())
    say = echo if console else (lambda text: print(text, file=sys.stderr, flush=True))
    if "segments" not in writers:
        say("start_s\tend_s\tlabel\tconfidence")

    def on_window(row, probabilities):
        if "windows" in writers:
            writers["windows"].write(row)
        if timeline is not None:
            timeline.window(row, probabilities)

    def on_segment(segment):
        if "segments" in writers:
            writers["segments"].write(segment)
        else:
            say(f"{segment['start_s']:.2f}\t{segment['end_s']:.2f}\t{segment['label']}\t{segment['confidence']:.3f}")
        if timeline is not None:
            timeline.segment(segment)

    name = "standard input" if source_path == "-" else str(source_path)
    predictor = StreamPredictor(card, classify, settings, on_window, on_segment, name,
                                timeline.samples if timeline is not None else None)
    done = False
    try:
        summary = predictor.run(source)
        done = True
    finally:
        close_writers(writers.values(), keep=done)
    plan = summary.plan
    say(f"{name}: {summary.duration_s:.1f} s at {plan.rate:g} Hz (rate from {plan.rate_from}), {summary.windows} "
        f"windows of {plan.window_s:.2f} s every {plan.hop_s:g} s, {summary.segments} segments, "
        f"{time.perf_counter() - tic:.2f} s")
    if timeline is not None:
        _picture(timeline, card, outputs, truth, name, say)
    return summary


def _picture(timeline: Timeline, card: ModelCard, outputs: Outputs, truth, name: str, say) -> None:
    if truth is not None:
        score, _ = score_segments(timeline.segments, truth, card.class_names)
        say(f"time recognised correctly: {100 * score:.1f} % (against {outputs.truth})")
    if outputs.plot is not None:
        draw(timeline, card.class_names, outputs.plot, f"{name} ({card.model}, {card.dataset or 'pskd'})", truth)
        say(f"timeline: {outputs.plot}")
