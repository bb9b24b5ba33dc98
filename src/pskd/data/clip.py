"""The unit of data: one recording with every stream that was captured of it."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pskd.errors import DataError

SKELETON = "skeleton"
ACCELEROMETER = "accelerometer"
GYROSCOPE = "gyroscope"
WATCH_DEVICES = {ACCELEROMETER: "watch", GYROSCOPE: "watch"}


def natural_key(text) -> tuple:
    """A sort key that orders numbers as numbers: '2' before '10', 's2' before 's10' (the runs of ASCII digits
    compare as integers, the text between them case-insensitively)."""
    parts = re.split(r"([0-9]+)", str(text))
    return tuple((int(part), part) if i % 2 else (part.casefold(), part) for i, part in enumerate(parts))


@dataclass
class Clip:
    """Both modalities of one recording.

    streams maps a stream name to its samples: the skeleton as [T, joints, 3] (metres), the accelerometer as
    [T, 3] (g), the gyroscope as [T, 3] (deg/s). Streams of the same clip need not share a length or a rate:
    they were sampled by different devices and cropped separately, so each is resampled on its own.
    """

    clip_id: str
    label: int
    subject: int
    trial: int
    streams: dict[str, np.ndarray]
    rates: dict[str, float]  # samples per second of each stream
    scene: int = 1  # where it was recorded (MMAct's cross-scene protocol); 1 for single-scene datasets

    def duration(self, stream: str) -> float:
        return len(self.streams[stream]) / self.rates[stream]


@dataclass
class DatasetInfo:
    """What a loader knows about its source, independent of any split."""

    name: str
    class_names: list[str]
    streams: list[str]  # the stream names every clip carries
    rates: dict[str, float]  # nominal sampling rate of each stream
    layout: str | None = None  # skeleton graph layout name, when there is a skeleton
    units: dict[str, str] = field(default_factory=dict)  # physical unit of each inertial stream ("g", "deg/s")
    layout_spec: dict | None = None  # a layout carried by the dataset itself (Layout.to_json), e.g. layout.json
    notes: list[str] = field(default_factory=list)  # what the loader skipped or noticed, to be shown to a user
    # the body-worn unit of each vector stream (xyz triples); streams of one unit share its frame, so augmentation
    # rotates them together, and streams of different units independently. Empty: the watch's accelerometer
    # and gyroscope. A stream on no unit (orientation angles, say) is not rotated.
    devices: dict[str, str] = field(default_factory=dict)
    # a subject's name where the source names subjects (str(number) -> name); numbered 1, 2, ... by name
    # in natural order (s2 before s10)
    subject_names: dict[str, str] = field(default_factory=dict)
    # rows or recordings the loader left out, each with its reason (a folder dataset with on_problem: skip)
    left_out: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subject_name(self, number: int) -> str:
        return self.subject_names.get(str(int(number)), str(int(number)))


def skipped_notes(info: DatasetInfo) -> list[str]:
    """The files a loader skipped (its notes that start with "skipped "), without that prefix."""
    return [note.removeprefix("skipped ") for note in info.notes if note.startswith("skipped ")]


def find_root(data_dir: str | Path, name: str, what: str, holds: Callable[[Path], bool]) -> Path:
    """A dataset's folder: `data_dir` itself, or `data_dir/<name>` when only that one holds(). A DataError when
    `data_dir` is absent or not a folder ("<what> not found"); whether the folder found is complete is the
    caller's to check, so that it can say what is missing."""
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise DataError(f"{root}: {what} not found")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    if not holds(root) and holds(root / name):
        root = root / name
    return root


def summary(name: str, root, info: DatasetInfo, clips: list[Clip], labels: dict[str, str] | None = None) -> dict:
    """What every dataset's `pskd data check` shows first: counts, subjects, trials, the skipped files, and per
    stream its rate and the range and median of its lengths. labels: display name -> stream (default: each
    stream under its own name)."""
    labels = labels or {stream: stream for stream in info.streams}
    modalities = {}
    for label, stream in labels.items():
        lengths = [len(c.streams[stream]) for c in clips]
        seconds = [c.duration(stream) for c in clips]
        modalities[label] = {"rate_hz": info.rates[stream], "min_length": int(min(lengths)),
                             "max_length": int(max(lengths)), "median_length": float(np.median(lengths)),
                             "duration_s": {"min": float(min(seconds)), "median": float(np.median(seconds)),
                                            "max": float(max(seconds))}}
    per_class = {name: 0 for name in info.class_names}
    per_subject: dict[str, int] = {}
    for clip in clips:
        if 0 <= clip.label < len(info.class_names):
            per_class[info.class_names[clip.label]] += 1
        key = info.subject_name(clip.subject)
        per_subject[key] = per_subject.get(key, 0) + 1
    return {
        "dataset": name, "root": str(root), "clips": len(clips), "classes": info.num_classes,
        "subjects": sorted({c.subject for c in clips}), "trials": sorted({c.trial for c in clips}),
        "modalities": modalities, "skipped": skipped_notes(info), "clips_per_class": per_class,
        "clips_per_subject": dict(sorted(per_subject.items(), key=lambda item: natural_key(item[0]))),
    }

