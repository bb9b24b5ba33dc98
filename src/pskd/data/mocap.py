"""Motion capture readers: Berkeley-MHAD's optical marker files and BVH skeletons (with forward kinematics).

Optical data (`Mocap/OpticalData/moc_sSS_aAA_rRR.txt`): one line per frame at 480 Hz, whitespace-separated,
43 markers x (x, y, z) in millimetres (a marker not seen is written 0 0 0), then the frame index and a Unix
timestamp in seconds: 131 columns.

BVH (`Mocap/SkeletalData/skl_sSS_aAA_rRR.bvh`): the standard format, a joint hierarchy (ROOT / JOINT / End
Site, OFFSET, CHANNELS) and MOTION frames; joint positions come from forward kinematics, in the file's unit
(millimetres for Berkeley-MHAD), returned in metres.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pskd.errors import DataError

MARKERS = 43
OPTICAL_COLUMNS = 3 * MARKERS + 2
MM = 1e-3


def read_optical(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(markers [T, 43, 3] in metres with occlusions filled by interpolation over time, timestamps [T])."""
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise DataError(f"{path}: not a numeric motion-capture file ({str(err).splitlines()[0][:80]})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    if values.shape[1] != OPTICAL_COLUMNS:
        raise DataError(f"{path}: {values.shape[1]} columns, expected {OPTICAL_COLUMNS} (43 markers x 3, frame, time)")
    if len(values) < 2:
        raise DataError(f"{path}: {len(values)} frame(s), expected at least 2")
    if not np.isfinite(values).all():
        raise DataError(f"{path}: NaN or infinite values")
    times = values[:, -1]
    if np.any(np.diff(times) <= 0):
        raise DataError(f"{path}: the timestamps do not increase")
    markers = values[:, : 3 * MARKERS].reshape(-1, MARKERS, 3) * MM
    return fill_occlusions(markers, np.all(markers == 0, axis=2)), times  # a marker not seen is written 0 0 0


def fill_occlusions(markers: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """Linear interpolation over time of each marker's hidden frames (held at the ends; 0 if never seen)."""
    out = markers.copy()
    frames = np.arange(len(markers))
    for m in range(markers.shape[1]):
        seen = ~hidden[:, m]
        if not seen.any():
            out[:, m] = 0.0
        elif not seen.all():
            for axis in range(3):
                out[:, m, axis] = np.interp(frames, frames[seen], markers[seen, m, axis])
    return out.astype(np.float32)


@dataclass
class Bvh:
    joints: list[str]
    parents: list[int]  # -1 for the root
    offsets: np.ndarray  # [J, 3]
    channels: list[list[str]]  # per joint, e.g. ["Xposition", ..., "Zrotation", "Xrotation", "Yrotation"]
    motion: np.ndarray  # [frames, total channels]
    frame_time: float

    def positions(self, scale: float = MM) -> np.ndarray:
        """[frames, J, 3] joint positions by forward kinematics (rotations applied in the listed order)."""
        frames = len(self.motion)
        world_rot = np.zeros((frames, len(self.joints), 3, 3))
        world_pos = np.zeros((frames, len(self.joints), 3))
        column = 0
        for j, names in enumerate(self.channels):
            values = self.motion[:, column : column + len(names)]
            column += len(names)
            local_pos = np.broadcast_to(self.offsets[j], (frames, 3)).copy()
            rotation = np.broadcast_to(np.eye(3), (frames, 3, 3)).copy()
            for k, name in enumerate(names):
                axis = "XYZ".index(name[0].upper())
                if name.lower().endswith("position"):
                    local_pos[:, axis] = values[:, k]
                else:
                    rotation = rotation @ _axis_rotation(axis, np.radians(values[:, k]))
            parent = self.parents[j]
            if parent < 0:
                world_rot[:, j], world_pos[:, j] = rotation, local_pos
            else:
                world_rot[:, j] = world_rot[:, parent] @ rotation
                world_pos[:, j] = world_pos[:, parent] + np.einsum("fij,fj->fi", world_rot[:, parent], local_pos)
        return (world_pos * scale).astype(np.float32)

    def bones(self) -> list[tuple[int, int]]:
        return [(j, p) for j, p in enumerate(self.parents) if p >= 0]


def _axis_rotation(axis: int, angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    out = np.zeros((len(angle), 3, 3))
    i, k = [(1, 2), (2, 0), (0, 1)][axis]
    out[:, axis, axis] = 1
    out[:, i, i], out[:, i, k], out[:, k, i], out[:, k, k] = c, -s, s, c
    return out


def read_bvh(path: Path) -> Bvh:
    try:
        tokens = path.read_text(encoding="utf-8").split()
    except (UnicodeDecodeError, OSError) as err:
        raise DataError(f"{path}: not a readable BVH text file ({err.__class__.__name__})") from None
    joints, parents, offsets, channels, stack = [], [], [], [], []
    i, pending = 0, None
    try:
        if tokens[0] != "HIERARCHY":
            raise DataError(f"{path}: a BVH file starts with HIERARCHY")
        i = 1
        while tokens[i] != "MOTION":
            word = tokens[i]
            if word in ("ROOT", "JOINT"):
                pending = ("joint", tokens[i + 1])
                i += 2
            elif word == "End":
                pending = ("end", None)
                i += 2
            elif word == "{":
                if pending is None:
                    raise DataError(f"{path}: '{{' without ROOT, JOINT or End Site")
                kind, name = pending
                if kind == "joint":
                    joints.append(name)
                    parents.append(stack[-1] if stack else -1)
                    offsets.append([0.0, 0.0, 0.0])
                    channels.append([])
                    stack.append(len(joints) - 1)
                else:
                    stack.append(None)
                pending = None
                i += 1
            elif word == "}":
                stack.pop()
                i += 1
            elif word == "OFFSET":
                if stack and stack[-1] is not None:
                    offsets[stack[-1]] = [float(v) for v in tokens[i + 1 : i + 4]]
                i += 4
            elif word == "CHANNELS":
                count = int(tokens[i + 1])
                channels[stack[-1]] = tokens[i + 2 : i + 2 + count]
                i += 2 + count
            else:
                raise DataError(f"{path}: unexpected '{word}' in the hierarchy")
        frames = int(tokens[tokens.index("Frames:", i) + 1])
        frame_time = float(tokens[tokens.index("Time:", i) + 1])
        start = tokens.index("Time:", i) + 2
        width = sum(len(c) for c in channels)
        numbers = np.array(tokens[start:], dtype=np.float64)
    except (IndexError, ValueError):
        raise DataError(f"{path}: not a valid BVH file") from None
    if not joints or stack:
        raise DataError(f"{path}: an incomplete joint hierarchy")
    if width == 0 or len(numbers) != frames * width:
        raise DataError(f"{path}: {len(numbers)} motion values, expected {frames} frames x {width} channels")
    if frames < 2 or frame_time <= 0 or not np.isfinite(numbers).all():
        raise DataError(f"{path}: expected at least 2 finite frames and a positive frame time")
    return Bvh(joints, parents, np.array(offsets), channels, numbers.reshape(frames, width), frame_time)
