"""A user's own paired recordings, in a documented folder format (no code needed).

    DIR/manifest.csv     one row per clip
    DIR/layout.json      optional: the skeleton's joints and edges (without it, an adaptive graph is learned)
    DIR/...              one array file per stream of each clip (.npy, or .csv without a header)

manifest.csv columns:
    clip_id, label, subject        required; label is a class name (empty: an unlabelled paired clip, which
                                   distillation and self-training learn from), subject an integer or a name
    session, trial                 optional integers (trial is what trial-based protocols use)
    <stream>, <stream>_rate        for each stream: the file (relative to DIR) and its sampling rate in Hz
    <stream>_start, <stream>_stop  optional: keep only these seconds of the stream's file (from its first sample;
                                   empty: its start or end), for a lab that logged one long session per stream

A stream named `skeleton` holds [frames, joints, 3] (.npy) or [frames, 3 x joints] (.csv, x y z per joint in
order); any other stream (accelerometer, gyroscope, ...) holds [samples, channels] with channels a multiple of 3.
Every clip has every stream. Class names are sorted alphabetically to give class indices. layout.json is
{"joints": [...], "edges": [[a, b], ...], "center": a, "hip": a, "spine": a, "shoulder": a}; edges and landmarks
name joints or give 0-based indices.

The suffixes _rate, _start and _stop are reserved. The streams of one clip were recorded together but may have been
cropped apart: the longest may last data.folder.max_duration_ratio times the shortest (after cropping).

Every problem is reported with its row (the header is row 1), not only the first. With data.folder.on_problem:
skip, rows with a problem are left out and named (DatasetInfo.left_out); a header problem is always an error.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from pskd import limits
from pskd.bounded import LimitError, loads_json, read_data_text, read_text
from pskd.data.clip import ACCELEROMETER, SKELETON, Clip, DatasetInfo, find_root, natural_key, summary
from pskd.data.folder_streams import (
    DEFAULT_DURATION_RATIO,
    LIKELY_WRONG_RATIO,
    RATE,
    START,
    STOP,
    durations_disagree,
    read_stream,
)
from pskd.data.labels import UNLABELLED
from pskd.data.layouts import Layout, adaptive_layout, layout_from_json
from pskd.data.protocols import scarce_classes
from pskd.data.registry import DatasetOptions, register_dataset
from pskd.errors import ConfigError, DataError

NAME = "folder"
MANIFEST = "manifest.csv"
LAYOUT = "layout.json"
FIXED = ("clip_id", "label", "subject", "session", "trial")
REQUIRED = ("clip_id", "label", "subject")
RESERVED_SUFFIXES = (RATE, START, STOP)
SHOWN = 3  # problems quoted in the one-line error (pskd data check lists them all)


@dataclass
class Problem:
    """What is wrong with one row of the manifest (the header is row 1)."""

    row: int
    text: str
    clip_id: str = ""
    ratio: float | None = None  # the duration ratio, when the duration rule is what refuses the row

    def __str__(self) -> str:
        return f"row {self.row}: {self.text}"

    def as_dict(self) -> dict:
        return {"row": self.row, "clip_id": self.clip_id, "problem": self.text, "duration_ratio": self.ratio}


class ManifestError(DataError):
    """Several problems at once; `problems` holds one line each (str(Problem))."""

    def __init__(self, source: Path, problems: list, hint: str = ""):
        self.problems = [str(p) for p in problems]
        shown = "; ".join(self.problems[:SHOWN]) + ("; ..." if len(self.problems) > SHOWN else "")
        super().__init__(f"{source}: {len(self.problems)} problem(s): {shown}" + (f"; {hint}" if hint else ""))


class FolderOptions(DatasetOptions):
    """data.folder: how rows are read (on_problem, max_duration_ratio), and the protocols' settings:
    leave_subjects_out (test_subjects) or kfold over subjects (folds, fold)."""

    test_subjects: list[int | str] = []  # numbers, or the names the manifest gives
    folds: int = Field(5, ge=2, le=1000)
    fold: int = Field(0, ge=0)
    # error: any problem row stops the dataset (every one listed); skip: problem rows are left out and listed
    on_problem: Literal["error", "skip"] = "error"
    # the longest stream of a clip may last at most this many times its shortest (after cropping)
    max_duration_ratio: float = Field(DEFAULT_DURATION_RATIO, ge=1.0, le=1e6)


def resolve_root(data_dir: str | Path) -> Path:
    root = find_root(data_dir, NAME, "folder", lambda folder: (folder / MANIFEST).is_file())
    if not (root / MANIFEST).is_file():
        raise DataError(f"{root}: no {MANIFEST} (see docs/datasets.md: 'Your own recordings')")
    return root


def _own_file(root: Path, name: str) -> Path:
    """root/name, refused when a symbolic link takes it out of the folder (as a stream file is)."""
    path = root / name
    if not path.resolve().is_relative_to(root.resolve()):
        raise DataError(f"{path}: resolves outside the folder (through a symbolic link); copy the file into it")
    return path


def _layout(root: Path) -> tuple[Layout | None, str | None]:
    path = root / LAYOUT
    if not path.is_file():
        return None, None
    try:
        data = loads_json(read_text(_own_file(root, LAYOUT), limits.LAYOUT_BYTES))
    except LimitError as err:
        raise DataError(f"{path}: {err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    try:
        return layout_from_json(data, str(path)), str(path)
    except ConfigError as err:
        raise DataError(str(err)) from None


@dataclass
class Reading:
    """A manifest read row by row: the rows that load, every problem, and what the header declared."""

    manifest: Path
    streams: list[str]
    layout: Layout | None
    layout_source: str | None
    records: list[tuple[int, dict, dict, dict]]  # (row, cells, arrays, rates) of every row without a problem
    problems: list[Problem]
    class_names: list[str]  # every label named by a row, loaded or not
    rows: int  # data rows (blank lines not counted)
    channels: dict[str, tuple]

    @property
    def refused_rows(self) -> list[int]:
        return sorted({p.row for p in self.problems})

    def hint(self) -> str:
        """What would load the rest: leaving the problem rows out, or a larger duration ratio for rows that only
        the duration rule refuses at a ratio a separate cropping can explain (below LIKELY_WRONG_RATIO)."""
        refused = self.refused_rows
        parts = [f"with data.folder.on_problem: skip, {self.rows - len(refused)} of {self.rows} rows load"]
        ratios = [p.ratio for p in self.problems if p.ratio is not None and p.ratio < LIKELY_WRONG_RATIO]
        if ratios:
            needed = math.ceil(max(ratios) * 100) / 100
            whom = "every row" if len(ratios) == len(refused) else f"{len(ratios)} of these rows"
            parts.append(f"data.folder.max_duration_ratio: {needed:g} accepts {whom}")
        return "; ".join(parts) + f" (pskd data check {NAME} lists every problem)"


def _rows(manifest: Path, text: str) -> Iterator[list[str]]:
    """The manifest's rows as the csv module reads them, one at a time; a DataError for a cell longer than
    limits.MANIFEST_FIELD_CHARS (the row numbered as the problems are: the header is row 1)."""
    too_long = f"a field longer than {limits.MANIFEST_FIELD_CHARS} characters"
    number = 0
    try:
        for number, row in enumerate(csv.reader(text.splitlines()), start=1):
            if any(len(cell) > limits.MANIFEST_FIELD_CHARS for cell in row):
                raise DataError(f"{manifest}: row {number}: {too_long}")
            yield row
    except csv.Error as err:  # the csv module's own field limit (128 KiB) is one of these
        why = too_long if "field limit" in str(err) else f"not CSV ({err})"
        raise DataError(f"{manifest}: row {number + 1}: {why}") from None


def _header(manifest: Path, first: list[str] | None) -> tuple[list[str], list[str]]:
    """The header's columns and the stream columns it declares; a ManifestError for a header that cannot work.
    Linear in the number of columns, which is bounded by limits.MANIFEST_COLUMNS."""
    if not first or not any(cell.strip() for cell in first):
        raise DataError(f"{manifest}: empty (expected a header row: clip_id,label,subject,<stream>,<stream>_rate)")
    if len(first) > limits.MANIFEST_COLUMNS:
        raise DataError(f"{manifest}: the header has {len(first)} columns, more than the {limits.MANIFEST_COLUMNS} "
                        "allowed")
    header = [cell.strip() for cell in first]
    columns = set(header)
    problems: list[Problem] = []
    streams = [c for c in header if c not in FIXED and not c.endswith(RESERVED_SUFFIXES)]
    declared = set(streams)
    missing = [c for c in REQUIRED if c not in columns] + [f"{s}{RATE}" for s in streams if f"{s}{RATE}" not in columns]
    strays = [c for c in header if c.endswith(RESERVED_SUFFIXES) and _stream_of(c) not in declared]
    if len(columns) != len(header):
        problems.append(Problem(1, "a column name repeats"))
    problems += [Problem(1, f"missing column '{c}'") for c in missing]
    problems += [Problem(1, f"column '{c}' has no stream column") for c in strays]
    if not streams:
        problems.append(Problem(1, "no stream column (e.g. accelerometer with accelerometer_rate)"))
    if problems:
        raise ManifestError(manifest, problems)
    return header, streams


def _stream_of(column: str) -> str:
    for suffix in RESERVED_SUFFIXES:
        if column.endswith(suffix):
            return column[: -len(suffix)]
    return column


def read_manifest(root: Path, options: FolderOptions) -> Reading:
    """Every row of the manifest read and checked; header problems are a ManifestError at once."""
    manifest = root / MANIFEST
    try:
        text = read_data_text(_own_file(root, MANIFEST), "manifest", encoding="utf-8-sig")
    except LimitError as err:
        raise DataError(f"{manifest}: {err}") from None
    except UnicodeDecodeError:
        raise DataError(f"{manifest}: not a UTF-8 text file") from None
    rows = _rows(manifest, text)
    header, streams = _header(manifest, next(rows, None))
    layout, layout_source = _layout(root)
    column = {name: i for i, name in enumerate(header)}
    reading = Reading(manifest, streams, layout, layout_source, [], [], [], 0, {})
    seen: dict[str, int] = {}
    labels: set[str] = set()
    for number, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        reading.rows += 1
        if len(row) != len(header):
            reading.problems.append(Problem(number, f"{len(row)} fields, the header has {len(header)}"))
            continue
        cell = {name: row[i].strip() for name, i in column.items()}
        if cell["label"]:
            labels.add(cell["label"])
        found = _read_row(root, number, cell, streams, layout, seen, reading.channels, options)
        if isinstance(found, list):
            reading.problems += found
        else:
            reading.records.append((number, cell, *found))
    reading.class_names = sorted(labels)
    return reading


def _read_row(root: Path, number: int, cell: dict, streams: list[str], layout: Layout | None, seen: dict,
              channels: dict, options: FolderOptions) -> list[Problem] | tuple[dict, dict]:
    """The arrays and rates of one row, or its problems."""
    clip_id = cell["clip_id"]
    problems = []

    def problem(text: str, ratio: float | None = None) -> None:
        problems.append(Problem(number, text, clip_id, ratio))

    if not clip_id:
        problem("empty clip_id")
    elif clip_id in seen:
        problem(f"clip_id '{clip_id}' repeats row {seen[clip_id]}")
    else:
        seen[clip_id] = number
    if not cell["subject"]:
        problem("empty subject")
    for name in ("session", "trial"):
        if name in cell and cell[name] and not is_integer(cell[name]):
            problem(f"{name} '{cell[name]}' is not an integer")
    arrays, rates = {}, {}
    for stream in streams:
        found = read_stream(root, stream, cell, layout, channels)
        if isinstance(found, str):
            problem(found)
        else:
            arrays[stream], rates[stream] = found
    if problems or len(arrays) != len(streams):
        return problems
    mismatch = durations_disagree(arrays, rates, options.max_duration_ratio)
    if mismatch:
        problem(*mismatch)
        return problems
    return arrays, rates


def load(data_dir: str | Path, options: FolderOptions | None = None) -> tuple[DatasetInfo, list[Clip]]:
    """The clips of a folder dataset. A problem row stops it (on_problem: error, every problem listed), or is left
    out and named in DatasetInfo.left_out (on_problem: skip)."""
    options = options or FolderOptions()
    root = resolve_root(data_dir)
    reading = read_manifest(root, options)
    if reading.problems and options.on_problem == "error":
        raise ManifestError(reading.manifest, reading.problems, reading.hint())
    return build_dataset(reading)


def build_dataset(reading: Reading) -> tuple[DatasetInfo, list[Clip]]:
    """DatasetInfo and clips from the rows that loaded; the rows left out are named in info.left_out."""
    manifest, records, streams, layout = reading.manifest, reading.records, reading.streams, reading.layout
    if not records:
        what = f"every one of its {reading.rows} rows has a problem" if reading.rows else "no clips"
        raise DataError(f"{manifest}: {what}" + (f" (first: {reading.problems[0]})" if reading.problems else ""))
    names = reading.class_names
    if len({cell["label"] for _, cell, _, _ in records if cell["label"]}) < 2 or len(names) < 2:
        found = f"a single class '{names[0]}'" if len(names) == 1 else "no labelled clip"
        left = f" among the {len(records)} rows that load" if reading.problems else ""
        raise DataError(f"{manifest}: {found}{left}; at least two classes are needed")
    subject_names = sorted({cell["subject"] for _, cell, _, _ in records}, key=natural_key)  # s2 before s10
    subject_id = subject_numbering(subject_names, manifest)
    numeric = all(is_integer(name) for name in subject_names)
    clips = [
        Clip(clip_id=cell["clip_id"], label=names.index(cell["label"]) if cell["label"] else UNLABELLED,
             subject=subject_id[cell["subject"]],
             trial=int(cell["trial"]) if cell.get("trial") else 1, streams=arrays, rates=rates)
        for _, cell, arrays, rates in records
    ]
    rates = {s: float(np.median([c.rates[s] for c in clips])) for s in streams}
    if SKELETON in streams and layout is None:
        layout = adaptive_layout(reading.channels[SKELETON][0])
    notes = [] if numeric else ["subjects numbered by name: " + ", ".join(f"{s}={subject_id[s]}"
                                                                          for s in subject_names)]
    spec = layout.to_json() if layout is not None and SKELETON in streams else None
    info = DatasetInfo(
        name=NAME, class_names=names, streams=streams, rates=rates,
        units={s: "g" for s in streams if s == ACCELEROMETER},
        layout=spec["name"] if spec else None, layout_spec=spec, notes=notes,
        subject_names={} if numeric else {str(number): name for name, number in subject_id.items()},
        left_out=[str(p) for p in reading.problems],
    )
    if reading.layout_source and SKELETON not in streams:
        info.notes.append(f"{reading.layout_source} is not used: there is no skeleton stream")
    info.notes += identical_recordings(clips)
    return info, clips


INTEGER = re.compile(r"-?[0-9]{1,9}")  # plain ASCII digits, within any integer type's range


def is_integer(text: str) -> bool:
    """Whether a manifest cell is an integer: ASCII digits only ('²' or '٣' are names), at most nine of them."""
    return INTEGER.fullmatch(text) is not None


def subject_numbering(names: list[str], manifest: Path) -> dict[str, int]:
    """Subjects all given as integers keep their numbers; otherwise every subject is a name, numbered 1, 2, ...
    in the order given (build_dataset gives them in natural order: s2 before s10). Two integers that are the same
    number ('7' and '007') are refused rather than merged."""
    if not all(is_integer(name) for name in names):
        return {name: i + 1 for i, name in enumerate(names)}
    by_number: dict[int, list[str]] = {}
    for name in names:
        by_number.setdefault(int(name), []).append(name)
    for number, spellings in by_number.items():
        if len(spellings) > 1:
            raise DataError(f"{manifest}: subjects {', '.join(repr(s) for s in spellings)} are the same number "
                            f"{number}; spell each subject one way")
    return {name: int(name) for name in names}


def identical_recordings(clips: list[Clip]) -> list[str]:
    """Notes naming clips whose recording of a stream is identical to another clip's (a copy under another id)."""
    notes = []
    for stream in clips[0].streams if clips else []:
        groups: dict[bytes, list[str]] = {}
        for clip in clips:
            array = np.ascontiguousarray(clip.streams[stream])
            key = hashlib.sha256(array.tobytes() + str(array.shape).encode()).digest()
            groups.setdefault(key, []).append(clip.clip_id)
        copies = [ids for ids in groups.values() if len(ids) > 1]
        if copies:
            shown = "; ".join(" = ".join(ids[:4]) + (" ..." if len(ids) > 4 else "") for ids in copies[:5])
            notes.append(f"{sum(len(ids) for ids in copies)} clips share an identical {stream} recording with "
                         f"another clip ({len(copies)} group(s)): {shown}{'; ...' if len(copies) > 5 else ''}")
    return notes


def summarize(root: Path, options: FolderOptions, protocol: str | None = None) -> dict:
    """What `pskd data check folder` prints: the rows that load, and every problem with what would accept it.
    With a protocol of this dataset (and its settings), also the classes with too few training clips."""
    reading = read_manifest(root, options)
    refused = bool(reading.problems) and options.on_problem == "error"
    try:
        info, clips = build_dataset(reading)
    except DataError as err:
        if not reading.problems:
            raise
        raise ManifestError(reading.manifest, reading.problems, f"no dataset is left without them ({err})") from None
    summary_of = {
        **summary(NAME, root, info, clips),
        "status": f"REFUSED ({len(reading.refused_rows)} of {reading.rows} rows have a problem)" if refused
        else (f"OK ({len(reading.refused_rows)} of {reading.rows} rows left out)" if reading.problems else "OK"),
        "missing": [],
        "missing_note": "every row has every stream",
        "sensor_placement": (f"skeleton layout: {info.layout} ({len(info.layout_spec['joints'])} joints, "
                             f"{len(info.layout_spec['bones'])} bones)") if info.layout_spec else "",
        "notes": info.notes,
        "labels": label_counts(clips),
        "rows": reading.rows,
        "problems": [p.as_dict() for p in reading.problems],
        "refused": refused,
        "hint": reading.hint() if reading.problems else "",
    }
    summary_of["too_few"], summary_of["too_few_note"] = _too_few(info, clips, options, protocol)
    return summary_of


def _too_few(info: DatasetInfo, clips: list[Clip], options: FolderOptions, protocol: str | None) -> tuple[list, str]:
    """Classes with fewer than two labelled training clips under the protocol, or why they cannot be counted."""
    rules = {"leave_subjects_out": given_test_subjects, "kfold": subject_fold}
    if protocol not in rules:
        return [], ("training clips per class are counted once a protocol is given (--set "
                    "data.protocol=leave_subjects_out --set data.folder.test_subjects=[...], or kfold)")
    subjects = np.array([c.subject for c in clips])
    try:
        training = np.flatnonzero(rules[protocol](subjects, np.array([c.trial for c in clips]),
                                                  options=_protocol_options(options, info)))
    except ConfigError as err:
        return [], f"training clips per class are not counted: {err}"
    labels = np.array([c.label for c in clips])
    return scarce_classes(labels, training, info.class_names), f"counted on the training subjects of {protocol}"


def label_counts(clips: list[Clip]) -> dict[str, dict[str, int]]:
    """Per subject: how many clips are labelled and how many are unlabelled paired clips."""
    counts: dict[str, dict[str, int]] = {}
    for clip in sorted(clips, key=lambda c: c.subject):
        row = counts.setdefault(str(clip.subject), {"labelled": 0, "unlabelled": 0})
        row["unlabelled" if clip.label == UNLABELLED else "labelled"] += 1
    return counts


def given_test_subjects(subjects: np.ndarray, trials: np.ndarray, options: dict, **_) -> np.ndarray:
    """Leave the subjects `data.folder.test_subjects` out for testing."""
    test_subjects = options.get("test_subjects")
    if not test_subjects:
        raise ConfigError("protocol leave_subjects_out needs data.folder.test_subjects")
    unknown = sorted(set(test_subjects) - set(int(s) for s in subjects))
    if unknown:
        raise ConfigError(f"data.folder.test_subjects {unknown} are not subjects of this dataset")
    return ~np.isin(subjects, list(test_subjects))


def subject_fold(subjects: np.ndarray, trials: np.ndarray, options: dict, **_) -> np.ndarray:
    """k folds over the sorted subjects (contiguous groups); fold `fold` is the test part."""
    folds, fold = options.get("folds", 5), options.get("fold", 0)
    ordered = np.unique(subjects)
    if not 2 <= folds <= len(ordered):
        raise ConfigError(f"data.folder.folds {folds}: needs 2 to {len(ordered)} (the number of subjects)")
    if not 0 <= fold < folds:
        raise ConfigError(f"data.folder.fold {fold}: must be 0 to {folds - 1}")
    return ~np.isin(subjects, np.array_split(ordered, folds)[fold])


def subject_numbers(given: list, info: DatasetInfo) -> list[int]:
    """Subjects given by number or by the name the manifest gives them, as numbers."""
    numbers = {name: int(number) for number, name in info.subject_names.items()}
    unknown = [s for s in given if isinstance(s, str) and s not in numbers and not is_integer(s)]
    if unknown:
        known = ", ".join(sorted(numbers, key=natural_key)) or "none: this dataset numbers its subjects"
        raise ConfigError(f"data.folder.test_subjects: {unknown} are not subjects of this dataset (names: {known})")
    return [numbers[s] if isinstance(s, str) and s in numbers else int(s) for s in given]


def _protocol_options(options: FolderOptions, info: DatasetInfo) -> dict:
    return {**options.model_dump(), "test_subjects": subject_numbers(options.test_subjects, info)}


def _fingerprint(options: FolderOptions, root: Path) -> str:
    """What changes the clips: how rows are read (a protocol's test subjects do not)."""
    return f"{options.on_problem}-{options.max_duration_ratio!r}"


@register_dataset(NAME, protocols={"leave_subjects_out": given_test_subjects, "kfold": subject_fold},
                  options=FolderOptions, resolve_root=resolve_root,
                  summarize=lambda options, root, protocol=None: summarize(root, options, protocol),
                  fingerprint=_fingerprint, protocol_options=_protocol_options)
def _registered(options: FolderOptions, root: Path) -> tuple[DatasetInfo, list[Clip]]:
    return load(root, options)
