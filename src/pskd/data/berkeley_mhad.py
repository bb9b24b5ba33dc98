"""Berkeley MHAD (Ofli et al., WACV 2013): six wireless accelerometers (and, in the full release, optical motion
capture and a BVH skeleton, synchronised through Unix timestamps).

Accelerometer layout, as released:
    Accelerometer/Shimmer0K/acc_hKK_sSS_aAA_rRR.txt   ax ay az (g) and a Unix timestamp (s), whitespace-separated
12 subjects x 11 actions x 5 repetitions, minus sequences absent from the release. Placement (from motion
energy): h01 left wrist, h02 right wrist, h03 and h04 hips, h05 and h06 ankles.

Each sensor streams about 30 samples a second over Bluetooth, and its timestamps are arrival times (bursts of
packets 1 ms apart, then gaps). The samples themselves are evenly spaced, so a sensor's recording is taken as
uniform between its first and last timestamp. The six sensors are then cut to the time they all cover and
resampled onto one 30 Hz grid: the timestamps synchronise them, not the sample counts.

The watch is one sensor (`data.berkeley_mhad.watch`, default h02, the right wrist): it is the `accelerometer`
stream. The others are streams `acc_hKK`, the privileged modality teachers may read. When the motion capture is
there (`Mocap/OpticalData`, `Mocap/SkeletalData`, see pskd.data.mocap), the `skeleton` stream is the BVH
skeleton's joints (or, without BVH files, the 43 optical markers), put on the same grid through the optical
frames' Unix timestamps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pskd.data.clip import ACCELEROMETER, SKELETON, Clip, DatasetInfo, find_root, summary
from pskd.data.layouts import Layout
from pskd.data.mocap import read_bvh, read_optical
from pskd.data.registry import DatasetOptions, register_dataset
from pskd.errors import DataError
from pskd.numeric import is_number

NAME = "berkeley_mhad"
RATE = 30.0
SENSORS = [f"h{k:02d}" for k in range(1, 7)]
PLACEMENT = {"h01": "left wrist", "h02": "right wrist", "h03": "hip", "h04": "hip", "h05": "ankle", "h06": "ankle"}
SUBJECTS, ACTIONS, REPETITIONS = 12, 11, 5
KNOWN_MISSING = {(4, 8, 5)}  # (subject, action, repetition) absent from the official release
CLASS_NAMES = [
    "jumping in place", "jumping jacks", "bending (hands up all the way down)", "punching (boxing)",
    "waving two hands", "waving one hand (right)", "clapping hands", "throwing a ball", "sit down then stand up",
    "sit down", "stand up",
]
_PATTERN = re.compile(r"^acc_(h0[1-6])_s(\d+)_a(\d+)_r(\d+)\.txt$")
MIN_OVERLAP_S = 0.5
# A sensor's rate implied by its first and last timestamps: a recording off by more than RATE_NOTED is named in
# the notes (the released copy has 17 such files, 8.7 to 121 Hz, from late Bluetooth bursts); one off by more than
# RATE_REFUSED is refused, as an outlying timestamp would squeeze it into a sliver of the common grid.
RATE_NOTED, RATE_REFUSED = 1.5, 5.0


def stream_name(sensor: str, watch: str) -> str:
    return ACCELEROMETER if sensor == watch else f"acc_{sensor}"


def key_name(key: tuple[int, int, int]) -> str:
    return "s{:02d}_a{:02d}_r{:02d}".format(*key)


@dataclass
class Scan:
    root: Path
    files: dict[tuple[int, int, int], dict[str, Path]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    modalities: dict[str, bool] = field(default_factory=dict)


def resolve_root(data_dir: str | Path) -> Path:
    root = find_root(data_dir, NAME, "Berkeley-MHAD folder", lambda folder: (folder / "Accelerometer").is_dir())
    if not (root / "Accelerometer").is_dir():
        raise DataError(f"{root}: not a Berkeley-MHAD folder: missing Accelerometer/")
    return root


def scan(data_dir: str | Path) -> Scan:
    root = resolve_root(data_dir)
    found = Scan(root=root)
    for sensor in SENSORS:
        folder = root / "Accelerometer" / f"Shimmer{sensor[1:]}"
        if not folder.is_dir():
            raise DataError(f"{folder}: missing (the release has Shimmer01 to Shimmer06)")
        for path in sorted(folder.iterdir()):
            match = _PATTERN.match(path.name)
            if not match or match.group(1) != sensor or not path.is_file():
                found.skipped.append(f"{folder.name}/{path.name} (not named acc_{sensor}_sSS_aAA_rRR.txt)")
                continue
            key = (int(match.group(2)), int(match.group(3)), int(match.group(4)))
            if not (1 <= key[0] <= SUBJECTS and 1 <= key[1] <= ACTIONS and 1 <= key[2] <= REPETITIONS):
                found.skipped.append(f"{folder.name}/{path.name} (subject, action or repetition out of range)")
                continue
            per_key = found.files.setdefault(key, {})
            if sensor in per_key:
                raise DataError(f"{path}: the same recording as {per_key[sensor].name}; remove one")
            per_key[sensor] = path
    found.modalities = {
        "accelerometers": bool(found.files),
        "optical motion capture": (root / "Mocap" / "OpticalData").is_dir(),
        "bvh skeleton": (root / "Mocap" / "SkeletalData").is_dir(),
    }
    return found


def read_sensor(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(samples [T, 3] in g, timestamps [T] in s) of one accelerometer file."""
    try:
        text = path.read_text(encoding="ascii")
    except (UnicodeDecodeError, OSError) as err:
        raise DataError(f"{path}: not a readable text file ({err.__class__.__name__})") from None
    rows = [line.split() for line in text.splitlines() if line.strip()]
    if len(rows) < 2:
        raise DataError(f"{path}: {len(rows)} samples, expected at least 2")
    for number, row in enumerate(rows, 1):
        if len(row) != 4:
            raise DataError(f"{path}: line {number} has {len(row)} columns, expected 4 (ax ay az timestamp)")
    try:
        values = np.array(rows, dtype=np.float64)
    except ValueError:
        bad = next(n for n, row in enumerate(rows, 1) if not all(is_number(c) for c in row))
        raise DataError(f"{path}: line {bad} holds a value that is not a number") from None
    if not np.isfinite(values).all():
        bad = int(np.argwhere(~np.isfinite(values))[0, 0]) + 1
        raise DataError(f"{path}: line {bad} holds NaN or infinite values")
    times = values[:, 3]
    if np.any(np.diff(times) < 0):
        raise DataError(f"{path}: the timestamps go backwards")
    if times[-1] - times[0] <= 0:
        raise DataError(f"{path}: all samples have the same timestamp")
    implied = implied_rate(times)
    if not RATE / RATE_REFUSED <= implied <= RATE * RATE_REFUSED:
        raise DataError(f"{path}: {len(times)} samples over {times[-1] - times[0]:.2f} s of timestamps is "
                        f"{implied:.1f} Hz, not about {RATE:g} Hz: an outlying first or last timestamp would "
                        "stretch or flatten the recording")
    return values[:, :3].astype(np.float32), times


def implied_rate(times: np.ndarray) -> float:
    """The rate the samples have when spread evenly between the first and the last timestamp."""
    return (len(times) - 1) / (times[-1] - times[0])


def synchronise(recordings: dict[str, tuple[np.ndarray, np.ndarray]], where: str,
                even: tuple[str, ...] = tuple(SENSORS)) -> dict[str, np.ndarray]:
    """Every stream interpolated onto a common RATE grid over the interval all of them cover. The samples of the
    streams in `even` (the accelerometers) are taken as evenly spaced between their first and last timestamp;
    the others (motion capture) at their own timestamps."""
    start = max(times[0] for _, times in recordings.values())
    stop = min(times[-1] for _, times in recordings.values())
    if stop - start < MIN_OVERLAP_S:
        raise DataError(f"{where}: the streams overlap for {max(stop - start, 0):.2f} s only; not one recording")
    grid = start + np.arange(int(np.floor((stop - start) * RATE)) + 1) / RATE
    out = {}
    for name, (samples, times) in recordings.items():
        at = np.linspace(times[0], times[-1], len(samples)) if name in even else times
        flat = samples.reshape(len(samples), -1)
        columns = [np.interp(grid, at, flat[:, c]) for c in range(flat.shape[1])]
        out[name] = np.stack(columns, axis=1).reshape((len(grid),) + samples.shape[1:]).astype(np.float32)
    return out


def read_mocap(root: Path, key: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, list, list] | None:
    """(skeleton [T, J, 3] in metres, Unix timestamps [T], joint names, bones) of one recording, from the BVH
    skeleton when there is one (timed by the optical frames), else from the optical markers; None when neither
    file exists."""
    name = "s{:02d}_a{:02d}_r{:02d}".format(*key)
    optical = root / "Mocap" / "OpticalData" / f"moc_{name}.txt"
    skeletal = root / "Mocap" / "SkeletalData" / f"skl_{name}.bvh"
    markers, times = read_optical(optical) if optical.is_file() else (None, None)
    if skeletal.is_file():
        bvh = read_bvh(skeletal)
        positions = bvh.positions()
        if times is None:
            raise DataError(f"{skeletal}: no optical file {optical.name} to time it by (its Unix timestamps)")
        if len(positions) != len(times):
            raise DataError(f"{skeletal}: {len(positions)} frames, but {optical.name} has {len(times)}")
        return positions, times, bvh.joints, bvh.bones()
    if markers is not None:
        return markers, times, [f"marker{i + 1}" for i in range(markers.shape[1])], []
    return None


def _check_watch(watch: str) -> None:
    if watch not in SENSORS:
        raise DataError(f"watch sensor '{watch}' is not one of {', '.join(SENSORS)}")


def load(data_dir: str | Path, watch: str = "h02") -> tuple[DatasetInfo, list[Clip]]:
    _check_watch(watch)
    return _load_scanned(scan(data_dir), watch)


def _load_scanned(found: Scan, watch: str) -> tuple[DatasetInfo, list[Clip]]:
    """Read the recordings a scan found."""
    if not found.files:
        raise DataError(f"{found.root}: no accelerometer recordings found")
    clips, notes = [], [f"skipped {item}" for item in found.skipped]
    incomplete = {key: sorted(set(SENSORS) - set(files)) for key, files in found.files.items()
                  if set(files) != set(SENSORS)}
    if incomplete:
        first = sorted(incomplete)[0]
        raise DataError(f"{found.root}: {len(incomplete)} recording(s) lack sensors, e.g. {key_name(first)} has "
                        f"no {', '.join(incomplete[first])}")
    with_mocap = found.modalities["optical motion capture"] or found.modalities["bvh skeleton"]
    layout_joints, layout_bones, lacking_mocap = None, None, []
    renamed = {s: stream_name(s, watch) for s in SENSORS} | {SKELETON: SKELETON}  # recording's name -> stream
    for key in sorted(found.files):
        files = found.files[key]
        recordings = {s: read_sensor(files[s]) for s in SENSORS}
        rates = {s: implied_rate(times) for s, (_, times) in recordings.items()}
        notes += [f"{files[s].name}: timestamps imply {rate:.1f} Hz, not about {RATE:g} Hz; its samples are spread "
                  "over that span" for s, rate in rates.items() if not RATE / RATE_NOTED <= rate <= RATE * RATE_NOTED]
        mocap = read_mocap(found.root, key) if with_mocap else None
        if mocap is not None:
            skeleton, times, joints, bones = mocap
            if layout_joints is None:
                layout_joints, layout_bones = joints, bones
            elif joints != layout_joints:
                raise DataError(f"{found.root}: {key_name(key)}'s skeleton has other joints than the first one's")
            recordings[SKELETON] = (skeleton, times)
        elif with_mocap:
            lacking_mocap.append(key_name(key))
        streams = synchronise(recordings, f"{found.root}/{key_name(key)}")
        clips.append(Clip(
            clip_id=key_name(key), label=key[1] - 1, subject=key[0], trial=key[2],
            streams={renamed[s]: streams[s] for s in streams}, rates={renamed[s]: RATE for s in streams},
        ))
    if lacking_mocap and layout_joints is not None:
        raise DataError(f"{found.root}: motion capture is missing for {len(lacking_mocap)} recording(s), e.g. "
                        f"{lacking_mocap[0]}; every recording needs it, or none")
    expected = {(s, a, r) for s in range(1, SUBJECTS + 1) for a in range(1, ACTIONS + 1)
                for r in range(1, REPETITIONS + 1)}
    absent = sorted(expected - set(found.files))
    unexpected = [k for k in absent if k not in KNOWN_MISSING]
    if absent:
        notes.append(f"{len(absent)} recording(s) absent: {', '.join(key_name(k) for k in absent)} "
                     f"({len(absent) - len(unexpected)} also absent from the official release)")
    names = [renamed[s] for s in SENSORS]
    units = {n: "g" for n in names}
    spec = None
    if layout_joints is not None:
        names.append(SKELETON)
        layout = Layout(name="berkeley_mocap" if layout_bones else "berkeley_markers", joints=tuple(layout_joints),
                        bones=tuple(layout_bones), center=0)
        spec = layout.to_json()
    info = DatasetInfo(
        name=NAME, class_names=list(CLASS_NAMES), streams=names, rates={n: RATE for n in names}, units=units,
        layout=spec["name"] if spec else None, layout_spec=spec, notes=notes,
        devices={renamed[s]: s for s in SENSORS},  # six separate units, each in its own frame
    )
    return info, clips


def summarize(data_dir: str | Path, watch: str = "h02") -> dict:
    _check_watch(watch)
    found = scan(data_dir)
    info, clips = _load_scanned(found, watch)
    labels = {f"{stream_name(s, watch)} ({s}, {PLACEMENT[s]})": stream_name(s, watch) for s in SENSORS}
    if info.layout_spec:
        labels[f"skeleton ({info.layout}, {len(info.layout_spec['joints'])} joints)"] = SKELETON
    return {
        **summary(NAME, found.root, info, clips, labels),
        "found": found.modalities,
        "missing": [n for n in info.notes if "absent" in n],
        "missing_note": "recordings absent from this copy",
        "sensor_placement": f"watch = {watch} ({PLACEMENT[watch]}); the other five are streams acc_hKK",
    }


class BerkeleyOptions(DatasetOptions):
    """data.berkeley_mhad: which of the six accelerometers is the watch (the others are teacher streams acc_hKK)."""

    watch: Literal["h01", "h02", "h03", "h04", "h05", "h06"] = "h02"


def first_seven_subjects(subjects: np.ndarray, trials: np.ndarray, **_) -> np.ndarray:
    """Subjects 1-7 train, 8-12 test: Berkeley-MHAD's protocol (Ofli et al., as PSKD and VSKD use it)."""
    return subjects <= 7


@register_dataset(NAME, protocols={"cross_subject": first_seven_subjects}, options=BerkeleyOptions,
                  resolve_root=resolve_root, summarize=lambda options, root, protocol=None: summarize(root, options.watch))
def _registered(options: BerkeleyOptions, root: Path) -> tuple[DatasetInfo, list[Clip]]:
    return load(root, options.watch)
