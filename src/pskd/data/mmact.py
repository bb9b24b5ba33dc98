"""MMAct (Kong et al., ICCV 2019): smartwatch and phone inertial sensors, and 2-D COCO-17 keypoints per camera.

Released layout:
    acc_watch_clip/subjectN/sceneN/sessionN/<action>.csv     timestamp, x, y, z (no header); also acc_phone_clip,
    gyro_clip, orientation_clip in the same shape
    trimmed_pose.zip (or its extracted pose/ folder):
        pose/<split>/<subset>/subjectN/camN/sceneN/sessionN/<action>.json
        {frame: {"person1": [x, y, score] x 17, "person2": ...}, ...}

A clip is one (subject, scene, session, action). The watch accelerometer is the student's `accelerometer`
stream; the phone accelerometer (`phone_accelerometer`), the gyroscope and the orientation sensor are further
streams when present for every clip; the keypoints of one camera (`data.mmact.camera`) are the `skeleton`
stream, as (x, y, 0) per COCO-17 joint: the first person of each frame. A keypoint seen with a score below
`MIN_SCORE` keeps its last confident position. Timestamps may be numbers (seconds or milliseconds) or
date-times; a stream's rate is the number of samples over its duration. Class names are the sorted action
names. Protocols: cross_subject (subjects 1-16 train, 17-20 test) and cross_scene (scene 2 is the test scene).
"""

from __future__ import annotations

import contextlib
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath

import numpy as np
from pydantic import Field

from pskd.bounded import LimitError, loads_json
from pskd.data.clip import ACCELEROMETER, GYROSCOPE, SKELETON, Clip, DatasetInfo, find_root, summary
from pskd.data.layouts import COCO17
from pskd.data.registry import DatasetOptions, register_dataset
from pskd.errors import ConfigError, DataError

NAME = "mmact"
SENSORS = {"acc_watch": ACCELEROMETER, "acc_phone": "phone_accelerometer", "gyro": GYROSCOPE,
           "orientation": "orientation"}
# the unit each vector stream is worn on (the gyroscope is the phone's); orientation angles are not a vector
DEVICES = {ACCELEROMETER: "watch", "phone_accelerometer": "phone", GYROSCOPE: "phone"}
MIN_SCORE = 0.1
_KEY = re.compile(r"subject(\d+)/scene(\d+)/session(\d+)/([^/]+)\.(csv|json)$")
_CAMERA = re.compile(r"/cam(\d+)/")

Key = tuple[int, int, int, str]  # subject, scene, session, action


@dataclass
class Scan:
    root: Path
    sensors: dict[str, dict[Key, Path]] = field(default_factory=dict)
    poses: dict[Key, str] = field(default_factory=dict)  # member name in the zip, or a path
    pose_source: Path | None = None
    skipped: list[str] = field(default_factory=list)


def resolve_root(data_dir: str | Path) -> Path:
    root = find_root(data_dir, NAME, "MMAct folder", lambda folder: (folder / "acc_watch_clip").is_dir())
    if not (root / "acc_watch_clip").is_dir():
        raise DataError(f"{root}: not an MMAct folder: missing acc_watch_clip/")
    return root


def _key(relative: str) -> Key | None:
    match = _KEY.search(relative)
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3)), match.group(4)


def scan(data_dir: str | Path, camera: int = 1) -> Scan:
    root = resolve_root(data_dir)
    found = Scan(root=root)
    for sensor in SENSORS:
        folder = root / f"{sensor}_clip"
        if not folder.is_dir():
            continue
        table = found.sensors.setdefault(sensor, {})
        for path in sorted(folder.rglob("*.csv")):
            key = _key(path.relative_to(folder).as_posix())
            if key is None:
                found.skipped.append(f"{path.relative_to(root)} (not subjectN/sceneN/sessionN/<action>.csv)")
                continue
            table[key] = path
    members: list[str] = []
    if (root / "trimmed_pose.zip").is_file():
        found.pose_source = root / "trimmed_pose.zip"
        try:
            with zipfile.ZipFile(found.pose_source) as archive:
                members = [m for m in archive.namelist() if m.endswith(".json")]
        except zipfile.BadZipFile:
            raise DataError(f"{found.pose_source}: not a zip archive") from None
    elif (root / "pose").is_dir():
        found.pose_source = root
        members = [p.relative_to(root).as_posix() for p in sorted((root / "pose").rglob("*.json"))]
    for member in members:
        cam = _CAMERA.search("/" + member)
        key = _key(_CAMERA.sub("/", "/" + member))  # .../subjectN/camN/sceneN/... -> .../subjectN/sceneN/...
        if key is None or cam is None:
            found.skipped.append(f"{member} (not .../subjectN/camN/sceneN/sessionN/<action>.json)")
            continue
        if int(cam.group(1)) == camera:
            found.poses[key] = member
    return found


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text.strip().replace("/", "-")).timestamp()


def read_sensor(path: Path) -> tuple[np.ndarray, float]:
    """([samples, 3], rate in Hz) of one sensor CSV: timestamp, x, y, z."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (UnicodeDecodeError, OSError) as err:
        raise DataError(f"{path}: not a readable text file ({err.__class__.__name__})") from None
    if len(lines) < 2:
        raise DataError(f"{path}: {len(lines)} samples, expected at least 2")
    times, values = [], []
    for number, line in enumerate(lines, 1):
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 4:
            raise DataError(f"{path}: line {number} has {len(cells)} columns, expected 4 (timestamp, x, y, z)")
        try:
            times.append(_seconds(cells[0]))
            values.append([float(c) for c in cells[1:]])
        except ValueError:
            raise DataError(f"{path}: line {number} holds a value that is not a number or a time") from None
    samples, stamps = np.array(values, dtype=np.float64), np.array(times)
    if not np.isfinite(samples).all():
        raise DataError(f"{path}: NaN or infinite values")
    duration = stamps[-1] - stamps[0]
    if duration <= 0 or np.any(np.diff(stamps) < 0):
        raise DataError(f"{path}: the timestamps do not increase")
    if np.median(np.diff(stamps)) > 1.0:  # more than a second between samples: these are milliseconds
        duration /= 1e3
    return samples.astype(np.float32), (len(samples) - 1) / duration


def parse_pose(text: str, source: str) -> np.ndarray:
    """[frames, 17, 3]: (x, y, 0) of the first person listed in each frame, frames in numeric order."""
    try:
        frames = loads_json(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{source}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except LimitError as err:
        raise DataError(f"{source}: {err}") from None
    if not isinstance(frames, dict) or not frames:
        raise DataError(f"{source}: expected an object keyed by frame")
    try:
        order = sorted(frames, key=lambda k: int(re.sub(r"\D", "", k) or 0))
    except ValueError:
        order = sorted(frames)
    out, last = [], np.zeros((17, 2))
    for frame in order:
        people = frames[frame]
        if not isinstance(people, dict) or not people:
            raise DataError(f"{source}: frame {frame} holds no person")
        person = people[sorted(people)[0]]
        values = np.asarray(person, dtype=np.float64) if isinstance(person, list) else None
        if values is None or values.shape != (51,) or not np.isfinite(values).all():
            raise DataError(f"{source}: frame {frame}: expected 51 numbers (17 keypoints x (x, y, score))")
        points = values.reshape(17, 3)
        seen = points[:, 2] >= MIN_SCORE
        last = np.where(seen[:, None], points[:, :2], last)
        out.append(np.column_stack([last, np.zeros(17)]))
    if len(out) < 2:
        raise DataError(f"{source}: {len(out)} frame(s), expected at least 2")
    return np.asarray(out, dtype=np.float32)


@contextlib.contextmanager
def _pose_reader(found: Scan) -> Iterator[Callable[[str], np.ndarray]]:
    """read(member) -> keypoints, with the zip archive opened once for every clip."""
    if found.pose_source is not None and found.pose_source.suffix == ".zip":
        with zipfile.ZipFile(found.pose_source) as archive:
            yield lambda member: parse_pose(archive.read(member).decode("utf-8"), f"{found.pose_source}:{member}")
    else:
        yield lambda member: parse_pose((found.root / PurePosixPath(member)).read_text(encoding="utf-8"), member)


def load(data_dir: str | Path, camera: int = 1) -> tuple[DatasetInfo, list[Clip]]:
    found = scan(data_dir, camera)
    watch = found.sensors.get("acc_watch", {})
    if not watch:
        raise DataError(f"{found.root}: no watch accelerometer clips under acc_watch_clip/")
    keys = sorted(watch)
    # streams every clip has; a stream some clips lack is left out, and said so
    notes = [f"skipped {item}" for item in found.skipped]
    sensors = []
    for sensor, table in found.sensors.items():
        lacking = [k for k in keys if k not in table]
        if not lacking:
            sensors.append(sensor)
        else:
            notes.append(f"{sensor} left out: {len(lacking)} of {len(keys)} clips lack it")
    with_pose = bool(found.poses) and all(k in found.poses for k in keys)
    if found.poses and not with_pose:
        notes.append(f"camera {camera} keypoints left out: {sum(k not in found.poses for k in keys)} clips lack them")
    actions = sorted({k[3] for k in keys})
    clips = []
    with _pose_reader(found) as read_pose:
        for key in keys:
            streams, rates = {}, {}
            for sensor in sensors:
                streams[SENSORS[sensor]], rates[SENSORS[sensor]] = read_sensor(found.sensors[sensor][key])
            if with_pose:
                streams[SKELETON] = read_pose(found.poses[key])
                rates[SKELETON] = 30.0  # MMAct's cameras film at 30 frames a second
            subject, scene, session, action = key
            clips.append(Clip(clip_id=f"subject{subject}_scene{scene}_session{session}_{action}",
                              label=actions.index(action), subject=subject, trial=session, streams=streams,
                              rates=rates, scene=scene))
    names = [SENSORS[s] for s in sensors] + ([SKELETON] if with_pose else [])
    info = DatasetInfo(
        name=NAME, class_names=actions, streams=names,
        rates={n: float(np.median([c.rates[n] for c in clips])) for n in names},
        layout=COCO17.name if with_pose else None,
        units={ACCELEROMETER: "m/s2", "phone_accelerometer": "m/s2"}, notes=notes,
        devices={n: DEVICES[n] for n in names if n in DEVICES},
    )
    return info, clips


def summarize(data_dir: str | Path, camera: int = 1) -> dict:
    info, clips = load(data_dir, camera)
    return {
        **summary(NAME, resolve_root(data_dir), info, clips),
        "missing": [], "missing_note": "clips are those of the watch accelerometer",
        "sensor_placement": f"scenes {sorted({c.scene for c in clips})}; keypoints of camera {camera}",
        "notes": [n for n in info.notes if not n.startswith("skipped ")],
    }


class MmactOptions(DatasetOptions):
    """data.mmact: the camera whose keypoints are the skeleton stream."""

    camera: int = Field(1, ge=1, le=4)


def first_sixteen_subjects(subjects: np.ndarray, trials: np.ndarray, **_) -> np.ndarray:
    """MMAct cross-subject: subjects 1-16 train, 17-20 test."""
    return subjects <= 16


def not_scene_two(subjects: np.ndarray, trials: np.ndarray, scenes: np.ndarray | None = None, **_) -> np.ndarray:
    """MMAct cross-scene: scene 2 is the test scene."""
    if scenes is None:
        raise ConfigError("the cross_scene protocol needs each clip's scene")
    return scenes != 2


@register_dataset(NAME, protocols={"cross_subject": first_sixteen_subjects, "cross_scene": not_scene_two},
                  options=MmactOptions, resolve_root=resolve_root,
                  summarize=lambda options, root, protocol=None: summarize(root, options.camera))
def _registered(options: MmactOptions, root: Path) -> tuple[DatasetInfo, list[Clip]]:
    return load(root, options.camera)
