"""Skeleton layouts as data: joint names, bones (child, parent) and the centre joint.

One graph network serves every layout (pskd.models builds its adjacency from these tables).
"""

from __future__ import annotations

from dataclasses import dataclass

from pskd.errors import ConfigError


@dataclass(frozen=True)
class Layout:
    name: str
    joints: tuple[str, ...]
    bones: tuple[tuple[int, int], ...]  # (child, parent), 0-based; the tree is rooted at `center`
    center: int

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def index(self, joint: str) -> int:
        return self.joints.index(joint)


UTD_KINECT_V1 = Layout(
    name="utd_kinect_v1",
    joints=(
        "head", "shoulder_center", "spine", "hip_center",
        "left_shoulder", "left_elbow", "left_wrist", "left_hand",
        "right_shoulder", "right_elbow", "right_wrist", "right_hand",
        "left_hip", "left_knee", "left_ankle", "left_foot",
        "right_hip", "right_knee", "right_ankle", "right_foot",
    ),
    bones=(
        (0, 1), (1, 2), (3, 2),
        (4, 1), (5, 4), (6, 5), (7, 6),
        (8, 1), (9, 8), (10, 9), (11, 10),
        (12, 3), (13, 12), (14, 13), (15, 14),
        (16, 3), (17, 16), (18, 17), (19, 18),
    ),
    center=2,
)

LAYOUTS = {layout.name: layout for layout in (UTD_KINECT_V1,)}


def get_layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise ConfigError(f"unknown skeleton layout '{name}'; known: {', '.join(sorted(LAYOUTS))}")
    return LAYOUTS[name]
