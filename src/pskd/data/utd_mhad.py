"""UTD-MHAD (Chen, Jafari, Kehtarnavaz, ICIP 2015): Kinect v1 skeleton and wrist/thigh inertial sensor.

Layout, as the official Skeleton.zip and Inertial.zip extract to:
    Skeleton/aA_sS_tT_skeleton.mat   variable d_skel, (20, 3, T), 30 Hz
    Inertial/aA_sS_tT_inertial.mat   variable d_iner, (T, 6): accelerometer xyz in g, gyroscope xyz in deg/s, 50 Hz
27 actions x 8 subjects x 4 trials, minus three sequences absent from the official release.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io

from pskd.data.clip import ACCELEROMETER, GYROSCOPE, SKELETON, Clip, DatasetInfo, find_root, summary
from pskd.data.protocols import first_half_trials, odd_even_subjects
from pskd.data.registry import register_dataset
from pskd.errors import DataError

NAME = "utd_mhad"
SKELETON_RATE = 30.0
INERTIAL_RATE = 50.0
NUM_JOINTS = 20
ACTIONS = 27
SUBJECTS = 8
TRIALS = 4
# Absent from the official release; every other (action, subject, trial) must be present.
KNOWN_MISSING = {(8, 1, 4), (23, 6, 4), (27, 8, 4)}
CLASS_NAMES = [
    "right arm swipe to the left", "right arm swipe to the right", "right hand wave", "two hand front clap",
    "right arm throw", "cross arms in the chest", "basketball shoot", "right hand draw x",
    "right hand draw circle (clockwise)", "right hand draw circle (counter clockwise)", "draw triangle",
    "bowling (right hand)", "front boxing", "baseball swing from right", "tennis right hand forehand swing",
    "arm curl (two arms)", "tennis serve", "two hand push", "right hand knock on door",
    "right hand catch an object", "right hand pick up and throw", "jogging in place", "walking in place",
    "sit to stand", "stand to sit", "forward lunge (left foot forward)", "squat (two arms stretch out)",
]
WRIST_ACTIONS = range(1, 22)  # the sensor is on the right thigh for actions 22-27
_PATTERN = re.compile(r"^a(\d+)_s(\d+)_t(\d+)_(skeleton|inertial)\.mat$")
_IGNORED = {"Skeleton_joint_order.txt"}


@dataclass
class Scan:
    """The files found under a UTD-MHAD root, before any of them is read."""

    root: Path
    skeleton: dict[tuple[int, int, int], Path] = field(default_factory=dict)
    inertial: dict[tuple[int, int, int], Path] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def keys(self) -> list[tuple[int, int, int]]:
        return sorted(set(self.skeleton) | set(self.inertial))

    def missing(self) -> dict[str, list[tuple[int, int, int]]]:
        expected = {
            (a, s, t)
            for a in range(1, ACTIONS + 1)
            for s in range(1, SUBJECTS + 1)
            for t in range(1, TRIALS + 1)
        } - KNOWN_MISSING
        return {
            SKELETON: sorted(expected - set(self.skeleton)),
            "inertial": sorted(expected - set(self.inertial)),
        }


def clip_name(key: tuple[int, int, int]) -> str:
    return "a{}_s{}_t{}".format(*key)


def resolve_root(data_dir: str | Path) -> Path:
    """Accept either the UTD-MHAD folder itself or a data root that holds it as `utd_mhad/`."""
    root = find_root(data_dir, NAME, "UTD-MHAD folder", lambda folder: (folder / "Skeleton").is_dir())
    absent = [sub for sub in ("Skeleton", "Inertial") if not (root / sub).is_dir()]
    if absent:
        raise DataError(f"{root}: not a UTD-MHAD folder: missing {' and '.join(s + '/' for s in absent)}")
    return root


def scan(data_dir: str | Path) -> Scan:
    root = resolve_root(data_dir)
    found = Scan(root=root)
    for sub, kind, table in (("Skeleton", "skeleton", found.skeleton), ("Inertial", "inertial", found.inertial)):
        for path in sorted((root / sub).iterdir()):
            match = _PATTERN.match(path.name)
            if path.name in _IGNORED:
                continue
            if not match or match.group(4) != kind or not path.is_file():
                found.skipped.append(f"{sub}/{path.name} (not named aA_sS_tT_{kind}.mat)")
                continue
            key = (int(match.group(1)), int(match.group(2)), int(match.group(3)))
            if not (1 <= key[0] <= ACTIONS and 1 <= key[1] <= SUBJECTS and 1 <= key[2] <= TRIALS):
                found.skipped.append(f"{sub}/{path.name} (action, subject or trial out of range)")
                continue
            if key in table:  # a1_s1_t1 and a01_s1_t1 name the same clip: neither is chosen silently
                raise DataError(f"{path}: the same clip as {table[key].name} ({clip_name(key)}); remove one")
            table[key] = path
    return found


def _read_variable(path: Path, variable: str) -> np.ndarray:
    try:
        contents = scipy.io.loadmat(str(path), variable_names=[variable])
    except Exception as err:  # scipy raises ValueError, TypeError, MatReadError, OSError for broken files
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: not a readable MAT file ({reason})") from None
    if variable not in contents:
        raise DataError(f"{path}: no variable '{variable}' in this MAT file")
    value = contents[variable]
    if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.number):
        raise DataError(f"{path}: '{variable}' is not a numeric array")
    return value.astype(np.float32)


def read_skeleton(path: Path) -> np.ndarray:
    """Return the skeleton as [T, 20, 3]."""
    raw = _read_variable(path, "d_skel")
    if raw.ndim != 3 or raw.shape[0] != NUM_JOINTS or raw.shape[1] != 3:
        raise DataError(f"{path}: 'd_skel' has shape {raw.shape}, expected (20, 3, T)")
    if raw.shape[2] < 2:
        raise DataError(f"{path}: 'd_skel' has {raw.shape[2]} frames, expected at least 2")
    if not np.isfinite(raw).all():
        raise DataError(f"{path}: 'd_skel' holds NaN or infinite values")
    return np.ascontiguousarray(raw.transpose(2, 0, 1))


def read_inertial(path: Path) -> np.ndarray:
    """Return the inertial samples as [T, 6]: accelerometer xyz (g), gyroscope xyz (deg/s)."""
    raw = _read_variable(path, "d_iner")
    if raw.ndim != 2 or raw.shape[1] != 6:
        raise DataError(f"{path}: 'd_iner' has shape {raw.shape}, expected (T, 6)")
    if raw.shape[0] < 2:
        raise DataError(f"{path}: 'd_iner' has {raw.shape[0]} samples, expected at least 2")
    if not np.isfinite(raw).all():
        raise DataError(f"{path}: 'd_iner' holds NaN or infinite values")
    return np.ascontiguousarray(raw)


def check_complete(found: Scan) -> None:
    missing = found.missing()
    problems = [
        f"{len(keys)} {kind} file(s) missing ({', '.join(clip_name(k) for k in keys[:5])}"
        + (", ..." if len(keys) > 5 else "")
        + ")"
        for kind, keys in missing.items()
        if keys
    ]
    if problems:
        raise DataError(f"{found.root}: incomplete UTD-MHAD copy: " + "; ".join(problems))


# On the official release the skeleton covers 0.37 to 0.70 of the inertial recording's duration; far outside
# that, the two files cannot be one recording.
PAIR_RATIO = (0.2, 2.0)


def check_pair(found: Scan, key: tuple[int, int, int], skeleton: np.ndarray, inertial: np.ndarray) -> None:
    skeleton_s, inertial_s = len(skeleton) / SKELETON_RATE, len(inertial) / INERTIAL_RATE
    if not PAIR_RATIO[0] <= skeleton_s / inertial_s <= PAIR_RATIO[1]:
        raise DataError(f"{found.skeleton[key]}: {skeleton_s:.2f} s of skeleton against {inertial_s:.2f} s in "
                        f"{found.inertial[key].name}: not the same recording")


def load(data_dir: str | Path) -> tuple[DatasetInfo, list[Clip]]:
    """Read every clip; any missing, unpaired or malformed file is a DataError naming it."""
    found = scan(data_dir)
    check_complete(found)
    clips = []
    for key in found.keys:
        inertial = read_inertial(found.inertial[key])
        skeleton = read_skeleton(found.skeleton[key])
        check_pair(found, key, skeleton, inertial)
        clips.append(
            Clip(
                clip_id=clip_name(key),
                label=key[0] - 1,
                subject=key[1],
                trial=key[2],
                streams={
                    SKELETON: skeleton,
                    ACCELEROMETER: inertial[:, :3].copy(),
                    GYROSCOPE: inertial[:, 3:].copy(),
                },
                rates={SKELETON: SKELETON_RATE, ACCELEROMETER: INERTIAL_RATE, GYROSCOPE: INERTIAL_RATE},
            )
        )
    notes = [f"skipped {item}" for item in found.skipped]
    info = DatasetInfo(
        name=NAME,
        class_names=list(CLASS_NAMES),
        streams=[SKELETON, ACCELEROMETER, GYROSCOPE],
        rates={SKELETON: SKELETON_RATE, ACCELEROMETER: INERTIAL_RATE, GYROSCOPE: INERTIAL_RATE},
        layout="utd_kinect_v1",
        units={ACCELEROMETER: "g", GYROSCOPE: "deg/s"},
        notes=notes,
    )
    return info, clips


def summarize(data_dir: str | Path) -> dict:
    """Validate a copy and describe it: what `pskd data check utd_mhad` prints."""
    info, clips = load(data_dir)
    return {
        **summary(NAME, resolve_root(data_dir), info, clips),
        "missing": [clip_name(k) for k in sorted(KNOWN_MISSING)],
        "missing_note": "absent from the official release",
        "sensor_placement": "right wrist for actions 1-21, right thigh for actions 22-27",
    }


@register_dataset(NAME, protocols={"cross_subject": odd_even_subjects, "trial_split": first_half_trials},
                  resolve_root=resolve_root, summarize=lambda options, root, protocol=None: summarize(root))
def _registered(options, root: Path) -> tuple[DatasetInfo, list[Clip]]:
    return load(root)
