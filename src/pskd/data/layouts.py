"""Skeleton layouts as data: joint names, bones (child, parent) and the centre joint.

One graph network serves every layout (pskd.models builds its adjacency from these tables).
"""

from __future__ import annotations

from dataclasses import dataclass

from pskd.errors import ConfigError
from pskd.limits import LAYOUT_EDGES, LAYOUT_JOINTS, NAME_CHARS

ROLES = ("hip", "spine", "shoulder")  # body landmarks preprocessing uses, when a layout names them


@dataclass(frozen=True)
class Layout:
    name: str
    joints: tuple[str, ...]
    bones: tuple[tuple[int, int], ...]  # (child, parent), 0-based; the tree is rooted at `center`
    center: int
    roles: tuple[tuple[str, int], ...] = ()  # (role, joint index) for the ROLES this layout has

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def index(self, joint: str) -> int:
        return self.joints.index(joint)

    def role(self, name: str) -> int | None:
        return dict(self.roles).get(name)

    def to_json(self) -> dict:
        return {"name": self.name, "joints": list(self.joints), "bones": [list(b) for b in self.bones],
                "center": self.center, "roles": {k: v for k, v in self.roles}}


def adaptive_layout(num_joints: int) -> Layout:
    """No known edges: self links only, and the graph network learns the rest (its adaptive offset)."""
    return Layout(name=f"adaptive_{num_joints}", joints=tuple(f"j{i + 1}" for i in range(num_joints)), bones=(),
                  center=0)


def layout_from_json(data: object, source: str) -> Layout:
    """A layout from layout.json: {"joints": [names], "edges": [[a, b], ...] (names or 0-based indices),
    optional "center" (the root of the bone tree; default the first joint) and "hip", "spine", "shoulder"."""
    if not isinstance(data, dict) or not isinstance(data.get("joints"), list) or not data["joints"]:
        raise ConfigError(f"{source}: expected an object with a non-empty list 'joints'")
    if len(data["joints"]) > LAYOUT_JOINTS:
        raise ConfigError(f"{source}: {len(data['joints'])} joints, more than the {LAYOUT_JOINTS} allowed")
    if any(isinstance(j, (list, dict)) for j in data["joints"]):
        raise ConfigError(f"{source}: joints must be names, not lists or objects")
    joints = [str(j) for j in data["joints"]]
    if max(map(len, joints)) > NAME_CHARS:
        raise ConfigError(f"{source}: a joint name is longer than {NAME_CHARS} characters")
    if len(set(joints)) != len(joints):
        raise ConfigError(f"{source}: joint names repeat")
    position = {name: i for i, name in enumerate(joints)}

    def joint(value, what: str) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(joints):
            return value
        if isinstance(value, str) and value in position:
            return position[value]
        raise ConfigError(f"{source}: {what} {value!r} is not one of the {len(joints)} joints")

    edges = data.get("edges") or []
    if not isinstance(edges, list) or not all(isinstance(e, list) and len(e) == 2 for e in edges):
        raise ConfigError(f"{source}: 'edges' must be a list of [joint, joint] pairs")
    if len(edges) > LAYOUT_EDGES:
        raise ConfigError(f"{source}: {len(edges)} edges, more than the {LAYOUT_EDGES} allowed")
    # an edge listed twice (either way round) is one edge of the graph
    pairs = list(dict.fromkeys((joint(a, "edge end"), joint(b, "edge end")) for a, b in edges))
    center = joint(data.get("center", 0), "center")
    neighbours: dict[int, list[int]] = {i: [] for i in range(len(joints))}
    for a, b in pairs:
        if a == b:
            raise ConfigError(f"{source}: edge [{joints[a]}, {joints[a]}] joins a joint to itself")
        neighbours[a].append(b)
        neighbours[b].append(a)
    bones, seen, frontier = [], {center}, [center]
    while frontier:  # orient the edges away from the centre: (child, parent)
        following = []
        for parent in frontier:
            for child in neighbours[parent]:
                if child not in seen:
                    seen.add(child)
                    bones.append((child, parent))
                    following.append(child)
        frontier = following
    roles = tuple((role, joint(data[role], role)) for role in ROLES if role in data)
    return Layout(name=str(data.get("name", "custom")), joints=tuple(joints), bones=tuple(bones), center=center,
                  roles=roles)


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
    roles=(("hip", 3), ("spine", 2), ("shoulder", 1)),
)

COCO17 = Layout(
    name="coco17",
    joints=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
        "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee",
        "left_ankle", "right_ankle",
    ),
    # a tree rooted at the left hip: the two hips, each side's leg and arm, the shoulders, then the face
    bones=(
        (12, 11), (13, 11), (15, 13), (14, 12), (16, 14),
        (5, 11), (6, 12), (7, 5), (9, 7), (8, 6), (10, 8),
        (0, 5), (1, 0), (2, 0), (3, 1), (4, 2),
    ),
    center=11,
    roles=(("hip", 11), ("shoulder", 5)),
)

LAYOUTS = {layout.name: layout for layout in (UTD_KINECT_V1, COCO17)}


def dataset_layout(name: str | None, spec: dict | None = None) -> Layout | None:
    """A dataset's layout: a registered one by name, or one it carries (a folder dataset's layout.json)."""
    if spec is not None:
        return Layout(name=spec["name"], joints=tuple(spec["joints"]), bones=tuple(tuple(b) for b in spec["bones"]),
                      center=spec["center"], roles=tuple(spec["roles"].items()))
    return get_layout(name) if name else None


def get_layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise ConfigError(f"unknown skeleton layout '{name}'; known: {', '.join(sorted(LAYOUTS))}")
    return LAYOUTS[name]
