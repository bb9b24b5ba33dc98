"""A user's own paired recordings, in a documented folder format (no code needed).

    DIR/manifest.csv     one row per clip
    DIR/layout.json      optional: the skeleton's joints and edges (without it, an adaptive graph is learned)
    DIR/...              one array file per stream of each clip (.npy, or .csv without a header)

manifest.csv columns:
    clip_id, label, subject        required; label is a class name (empty: an unlabelled paired clip, which
                                   distillation and self-training learn from), subject an integer or a name
    session, trial                 optional integers (trial is what trial-based protocols use)
    <stream>, <stream>_rate        for each stream: the file (relative to DIR) and its sampling rate in Hz

A stream named `skeleton` holds [frames, joints, 3] (.npy) or [frames, 3 x joints] (.csv, x y z per joint in
order); any other stream (accelerometer, gyroscope, ...) holds [samples, channels] with channels a multiple of 3.
Every clip has every stream. Class names are sorted alphabetically to give class indices. layout.json is
{"joints": [...], "edges": [[a, b], ...], "center": a, "hip": a, "spine": a, "shoulder": a}; edges and landmarks
name joints or give 0-based indices.

Every problem is reported with its row (the header is row 1), not only the first.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
from pathlib import Path

import numpy as np
from pydantic import Field

from pskd.arrays import load_npy
from pskd.data.clip import ACCELEROMETER, SKELETON, Clip, DatasetInfo, find_root, summary
from pskd.data.labels import UNLABELLED
from pskd.data.layouts import Layout, adaptive_layout, layout_from_json
from pskd.data.registry import DatasetOptions, register_dataset
from pskd.errors import ConfigError, DataError

NAME = "folder"
MANIFEST = "manifest.csv"
LAYOUT = "layout.json"
FIXED = ("clip_id", "label", "subject", "session", "trial")
REQUIRED = ("clip_id", "label", "subject")
MAX_LISTED = 50


class ManifestError(DataError):
    """Several problems at once; `problems` holds one line each."""

    def __init__(self, source: Path, problems: list[str]):
        self.problems = problems
        shown = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
        super().__init__(f"{source}: {len(problems)} problem(s): {shown}")


def resolve_root(data_dir: str | Path) -> Path:
    root = find_root(data_dir, NAME, "folder", lambda folder: (folder / MANIFEST).is_file())
    if not (root / MANIFEST).is_file():
        raise DataError(f"{root}: no {MANIFEST} (see the README: 'Your own recordings')")
    return root


def read_array(path: Path) -> np.ndarray:
    """A numeric array from .npy or a header-less .csv; ValueError with the reason otherwise."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return load_npy(path).astype(np.float32)
    if suffix == ".csv":
        try:
            array = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
        except ValueError as err:
            raise ValueError(f"not a numeric CSV without header ({str(err).splitlines()[0][:80]})") from None
        return array.astype(np.float32)
    raise ValueError("expected a .npy or .csv file")


def _layout(root: Path) -> tuple[Layout | None, str | None]:
    path = root / LAYOUT
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    try:
        return layout_from_json(data, str(path)), str(path)
    except ConfigError as err:
        raise DataError(str(err)) from None


def load(data_dir: str | Path) -> tuple[DatasetInfo, list[Clip]]:
    root = resolve_root(data_dir)
    manifest = root / MANIFEST
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{manifest}: not a UTF-8 text file") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise DataError(f"{manifest}: empty (expected a header row: clip_id,label,subject,<stream>,<stream>_rate)")
    header = [cell.strip() for cell in rows[0]]
    problems: list[str] = []
    missing = [c for c in REQUIRED if c not in header]
    streams = [c for c in header if c not in FIXED and not c.endswith("_rate")]
    for stream in streams:
        if f"{stream}_rate" not in header:
            missing.append(f"{stream}_rate")
    strays = [c for c in header if c.endswith("_rate") and c[: -len("_rate")] not in streams]
    if len(set(header)) != len(header):
        problems.append("row 1: a column name repeats")
    if missing or strays or not streams:
        problems += [f"row 1: missing column '{c}'" for c in missing]
        problems += [f"row 1: column '{c}' has no stream column" for c in strays]
        if not streams:
            problems.append("row 1: no stream column (e.g. accelerometer with accelerometer_rate)")
        raise ManifestError(manifest, problems)
    layout, layout_source = _layout(root)
    column = {name: i for i, name in enumerate(header)}
    records, seen, channels = [], {}, {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            problems.append(f"row {number}: {len(row)} fields, the header has {len(header)}")
            continue
        cell = {name: row[i].strip() for name, i in column.items()}
        where = f"row {number}"
        if not cell["clip_id"]:
            problems.append(f"{where}: empty clip_id")
        elif cell["clip_id"] in seen:
            problems.append(f"{where}: clip_id '{cell['clip_id']}' repeats row {seen[cell['clip_id']]}")
        else:
            seen[cell["clip_id"]] = number
        if not cell["subject"]:
            problems.append(f"{where}: empty subject")
        for name in ("session", "trial"):
            if name in cell and cell[name] and not is_integer(cell[name]):
                problems.append(f"{where}: {name} '{cell[name]}' is not an integer")
        arrays, rates = {}, {}
        for stream in streams:
            try:
                rate = float(cell[f"{stream}_rate"])
                if not math.isfinite(rate) or rate <= 0:
                    raise ValueError
                rates[stream] = rate
            except ValueError:
                problems.append(f"{where}: {stream}_rate '{cell[f'{stream}_rate']}' is not a positive number of Hz")
            path = root / cell[stream]
            if not cell[stream]:
                problems.append(f"{where}: no {stream} file")
                continue
            if not path.resolve().is_relative_to(root.resolve()):
                problems.append(f"{where}: {stream} file '{cell[stream]}' {_outside(root, cell[stream])}")
                continue
            if not path.is_file():
                problems.append(f"{where}: {stream} file '{cell[stream]}' not found")
                continue
            try:
                array = read_array(path)
            except ValueError as err:
                problems.append(f"{where}: {cell[stream]}: {err}")
                continue
            array, problem = _shape(stream, array, layout)
            if problem:
                problems.append(f"{where}: {cell[stream]}: {problem}")
                continue
            if not np.isfinite(array).all():
                problems.append(f"{where}: {cell[stream]}: NaN or infinite values")
                continue
            width = array.shape[1:]
            if channels.setdefault(stream, width) != width:
                problems.append(f"{where}: {cell[stream]}: shape {array.shape}, other clips have "
                                f"[T, {', '.join(map(str, channels[stream]))}]")
                continue
            arrays[stream] = array
        if len(arrays) == len(streams) and len(rates) == len(streams):
            mismatch = durations_disagree(arrays, rates)
            if mismatch:
                problems.append(f"{where}: {mismatch}")
            else:
                records.append((number, cell, arrays, rates))
        if len(problems) > MAX_LISTED:
            problems.append(f"... stopped after {MAX_LISTED} problems")
            break
    if problems:
        raise ManifestError(manifest, problems)
    if not records:
        raise DataError(f"{manifest}: no clips")
    names = sorted({cell["label"] for _, cell, _, _ in records if cell["label"]})
    if len(names) < 2:
        found = f"a single class '{names[0]}'" if names else "no labelled clip"
        raise DataError(f"{manifest}: {found}; at least two classes are needed")
    subject_names = sorted({cell["subject"] for _, cell, _, _ in records})
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
        layout = adaptive_layout(channels[SKELETON][0])
    notes = [] if numeric else ["subjects numbered by name: " + ", ".join(f"{s}={subject_id[s]}"
                                                                          for s in subject_names)]
    spec = layout.to_json() if layout is not None and SKELETON in streams else None
    info = DatasetInfo(
        name=NAME, class_names=names, streams=streams, rates=rates,
        units={s: "g" for s in streams if s == ACCELEROMETER},
        layout=spec["name"] if spec else None, layout_spec=spec, notes=notes,
        subject_names={} if numeric else {str(number): name for name, number in subject_id.items()},
    )
    if layout_source and SKELETON not in streams:
        info.notes.append(f"{layout_source} is not used: there is no skeleton stream")
    info.notes += identical_recordings(clips)
    return info, clips


DURATION_RATIO = 2.0  # the streams of one clip record the same action: the longest at most twice the shortest


def durations_disagree(arrays: dict[str, np.ndarray], rates: dict[str, float]) -> str | None:
    """What is wrong when the streams of one clip last too differently to be one recording (a wrong file or rate)."""
    seconds = {stream: len(array) / rates[stream] for stream, array in arrays.items()}
    shortest, longest = min(seconds, key=seconds.get), max(seconds, key=seconds.get)
    if seconds[longest] <= DURATION_RATIO * seconds[shortest]:
        return None
    return (f"{shortest} lasts {seconds[shortest]:.2f} s and {longest} {seconds[longest]:.2f} s: not one recording "
            "(check the files and their rates)")


INTEGER = re.compile(r"-?[0-9]{1,9}")  # plain ASCII digits, within any integer type's range


def is_integer(text: str) -> bool:
    """Whether a manifest cell is an integer: ASCII digits only ('²' or '٣' are names), at most nine of them."""
    return INTEGER.fullmatch(text) is not None


def subject_numbering(names: list[str], manifest: Path) -> dict[str, int]:
    """Subjects all given as integers keep their numbers; otherwise every subject is a name, numbered 1, 2, ...
    in order. Two integers that are the same number ('7' and '007') are refused rather than merged."""
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


def summarize(data_dir: str | Path) -> dict:
    info, clips = load(data_dir)
    return {
        **summary(NAME, resolve_root(data_dir), info, clips),
        "missing": [],
        "missing_note": "every row has every stream",
        "sensor_placement": (f"skeleton layout: {info.layout} ({len(info.layout_spec['joints'])} joints, "
                             f"{len(info.layout_spec['bones'])} bones)") if info.layout_spec else "",
        "notes": info.notes,
        "labels": label_counts(clips),
    }


def label_counts(clips: list[Clip]) -> dict[str, dict[str, int]]:
    """Per subject: how many clips are labelled and how many are unlabelled paired clips."""
    counts: dict[str, dict[str, int]] = {}
    for clip in sorted(clips, key=lambda c: c.subject):
        row = counts.setdefault(str(clip.subject), {"labelled": 0, "unlabelled": 0})
        row["unlabelled" if clip.label == UNLABELLED else "labelled"] += 1
    return counts


class FolderOptions(DatasetOptions):
    """data.folder: its protocols, leave_subjects_out (test_subjects) or kfold over subjects (folds, fold)."""

    test_subjects: list[int | str] = []  # numbers, or the names the manifest gives
    folds: int = Field(5, ge=2, le=1000)
    fold: int = Field(0, ge=0)


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
        known = ", ".join(sorted(numbers)) or "none: this dataset numbers its subjects"
        raise ConfigError(f"data.folder.test_subjects: {unknown} are not subjects of this dataset (names: {known})")
    return [numbers[s] if isinstance(s, str) and s in numbers else int(s) for s in given]


def _protocol_options(options: FolderOptions, info: DatasetInfo) -> dict:
    return {**options.model_dump(), "test_subjects": subject_numbers(options.test_subjects, info)}


@register_dataset(NAME, protocols={"leave_subjects_out": given_test_subjects, "kfold": subject_fold},
                  options=FolderOptions, resolve_root=resolve_root, summarize=lambda options, root: summarize(root),
                  fingerprint=lambda options, root: "", protocol_options=_protocol_options)
def _registered(options: FolderOptions, root: Path) -> tuple[DatasetInfo, list[Clip]]:
    return load(root)  # the options choose a protocol's test subjects; the clips do not depend on them
