"""The embedded default dataset: synthetic actions with a physical link between skeleton and wrist sensor.

Each action is a trajectory of arm joint angles (shoulder flexion, abduction and rotation, elbow flexion,
forearm pronation) and, for some actions, of the body's root. Forward kinematics of a 20-joint Kinect-v1-like
body gives the skeleton. The watch on the right wrist measures specific force: the second derivative of the
wrist joint's trajectory minus gravity, expressed in a sensor frame that rotates with the forearm (plus a small
mounting tilt per subject), in g. So at rest with the arm hanging it reads 1 g along the forearm.

As in the real recordings, the two streams are sampled at different rates (skeleton 30 Hz, accelerometer 50 Hz)
and cropped independently (the sensor stream starts earlier and ends later), with sensor noise, bias, and
joint-position noise and saturation at +-8 g. Subjects differ in body size, tempo, amplitude, their own posture
for each action and the way the watch sits; trials differ by random variations and a watch that slides.
Everything is drawn from numpy generators seeded by (seed, subject, action, trial).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from pskd.data.clip import ACCELEROMETER, SKELETON, Clip, DatasetInfo
from pskd.data.layouts import UTD_KINECT_V1
from pskd.data.protocols import first_half_trials, odd_even_subjects
from pskd.data.registry import DatasetOptions, register_dataset

NAME = "synthetic"
GRAVITY = 9.81  # m/s^2
SIM_RATE = 200.0  # internal simulation rate
SKELETON_RATE = 30.0
ACCELEROMETER_RATE = 50.0
SATURATION = 8.0  # g: the range of a typical wrist-worn MEMS accelerometer
CLASS_NAMES = [
    "swipe left", "swipe right", "wave", "clap (two hands)", "throw",
    "draw circle (clockwise)", "draw circle (counter clockwise)", "punch", "arm curl (two arms)", "squat",
]
# Classes the watch cannot tell apart from another: the right arm (wearing the watch) moves exactly as in the base
# action, drawn from the same person's style, and only the left arm differs. A skeleton teacher separates such a
# pair; the wrist student cannot. (base action, name)
BLIND = [(2, "wave, left hand on the hip"), (7, "punch, left arm raised"), (0, "swipe left, left arm raised"),
         (5, "draw circle (clockwise), left arm raised")]
ANGLES = ("flex", "abd", "rot", "elbow", "pron")  # degrees; all zero is the arm hanging, palm facing the body


def _rx(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([o, z, z, z, c, -s, z, s, c], axis=-1).reshape(a.shape + (3, 3))


def _ry(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([c, z, s, z, o, z, -s, z, c], axis=-1).reshape(a.shape + (3, 3))


def _rz(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([c, -s, z, s, c, z, z, z, o], axis=-1).reshape(a.shape + (3, 3))


def arm_rotations(angles: dict[str, np.ndarray], side: int) -> tuple[np.ndarray, np.ndarray]:
    """Orientation of the upper arm and forearm ([T, 3, 3], columns = segment axes in the body frame).

    Body frame: x to the subject's right, y up, z forward. side = +1 for the right arm, -1 for the left (mirror).
    The segment's long axis is its local -y (pointing from the proximal to the distal joint at rest).
    """
    rad = {k: np.radians(v) for k, v in angles.items()}
    upper = _rz(side * rad["abd"]) @ _rx(-rad["flex"]) @ _ry(side * rad["rot"])
    forearm = upper @ _rx(-rad["elbow"]) @ _ry(side * rad["pron"])
    return upper, forearm


def _smootherstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * x * (x * (6 * x - 15) + 10)


def action_angles(action: int, u: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """Joint angles (degrees) of the right and left arm and the root's vertical drop (fraction of height).

    u is the normalised time within the action, in [0, 1]; the caller blends these with the rest pose.
    """
    if action >= len(CLASS_NAMES):  # a blind class: the base action, with the left arm held elsewhere
        base = BLIND[action - len(CLASS_NAMES)][0]
        right, left, drop = action_angles(base, u)
        held = _smootherstep(u / 0.2) * _smootherstep((1 - u) / 0.2)
        if base == 2:
            left.update(abd=left["abd"] + 40 * held, elbow=left["elbow"] + 100 * held, rot=left["rot"] - 60 * held)
        else:
            left.update(flex=left["flex"] + 150 * held, elbow=left["elbow"] + 10 * held)
        return right, left, drop
    zero = np.zeros_like(u)
    right = {k: zero.copy() for k in ANGLES}
    left = {k: zero.copy() for k in ANGLES}
    drop = zero.copy()
    sweep = _smootherstep((u - 0.15) / 0.7)
    if action == 0:  # swipe left: arm forward, sweeping from the right side across the body
        right.update(flex=80 + zero, abd=45 - 90 * sweep, elbow=15 + zero)
    elif action == 1:  # swipe right
        right.update(flex=80 + zero, abd=-45 + 90 * sweep, elbow=15 + zero)
    elif action == 2:  # wave: arm out to the side, forearm swinging
        right.update(flex=20 + zero, abd=75 + zero, rot=-60 + zero, elbow=90 + 35 * np.sin(2 * np.pi * 3 * u))
    elif action == 3:  # clap: both arms forward, opening and closing
        for arm in (right, left):
            arm.update(flex=75 + zero, abd=20 + 20 * np.cos(2 * np.pi * 3 * u), elbow=25 + zero)
    elif action == 4:  # throw: wind up overhead, then a fast release forward
        wind = _smootherstep(u / 0.5)
        release = _smootherstep((u - 0.5) / 0.15)
        right.update(
            flex=160 * wind - 120 * release,
            abd=20 * wind,
            elbow=110 * wind - 100 * release,
            rot=-40 * wind + 40 * release,
        )
    elif action in (5, 6):  # circles drawn in the frontal plane, clockwise or counter-clockwise
        turn = 2 * np.pi * 2 * u
        direction = 1 if action == 5 else -1
        right.update(flex=75 + 25 * np.sin(turn), abd=20 + direction * 25 * np.cos(turn), elbow=10 + zero)
    elif action == 7:  # punch: repeated fast elbow extension with the arm forward
        right.update(flex=80 + zero, elbow=65 + 65 * np.cos(2 * np.pi * 3 * u), pron=45 + zero)
    elif action == 8:  # arm curl with both arms, palms up
        for arm in (right, left):
            arm.update(flex=5 + zero, elbow=75 - 65 * np.cos(2 * np.pi * 2 * u), pron=90 + zero)
    elif action == 9:  # squat with both arms stretched forward
        depth = 0.5 - 0.5 * np.cos(2 * np.pi * u)
        drop = 0.2 * depth
        for arm in (right, left):
            arm.update(flex=90 * _smootherstep(u / 0.2) * _smootherstep((1 - u) / 0.2), elbow=5 + zero)
    else:
        raise ValueError(f"synthetic action {action} does not exist")
    return right, left, drop


def _leg(hip: np.ndarray, ankle: np.ndarray, thigh: float, shin: float) -> np.ndarray:
    """Knee position of a two-link leg bending forward (+z) in the sagittal plane."""
    span = ankle - hip
    distance = np.linalg.norm(span, axis=-1, keepdims=True).clip(1e-6, thigh + shin - 1e-6)
    along = (thigh**2 - shin**2 + distance**2) / (2 * distance)
    out = np.sqrt(np.clip(thigh**2 - along**2, 0, None))
    direction = span / np.linalg.norm(span, axis=-1, keepdims=True)
    forward = np.array([0.0, 0.0, 1.0])
    normal = forward - (direction @ forward)[..., None] * direction
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True).clip(1e-9)
    return hip + along * direction + out * normal


class Body:
    """One subject's body: segment lengths scale with height."""

    def __init__(self, height: float):
        s = height / 1.75
        self.scale = s
        self.upper_arm, self.forearm, self.hand = 0.30 * s, 0.26 * s, 0.08 * s
        self.thigh, self.shin = 0.45 * s, 0.43 * s
        self.hip_height = 0.98 * s

    def pose(self, right: dict, left: dict, drop: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Joint positions [T, 20, 3] (body frame) and the right forearm's orientation [T, 3, 3]."""
        s = self.scale
        steps = drop.shape[0]
        down = np.array([0.0, -1.0, 0.0])
        root = np.zeros((steps, 3))
        root[:, 1] = self.hip_height - drop * self.hip_height
        up = np.array([0.0, 1.0, 0.0])
        joints = np.zeros((steps, 20, 3))
        joints[:, 3] = root  # hip_center
        joints[:, 2] = root + 0.22 * s * up  # spine
        joints[:, 1] = root + 0.47 * s * up  # shoulder_center
        joints[:, 0] = root + 0.68 * s * up  # head
        forearms = {}
        for side, angles, first in ((+1, right, 8), (-1, left, 4)):
            upper, forearm = arm_rotations(angles, side)
            shoulder = joints[:, 1] + np.array([side * 0.19 * s, -0.03 * s, 0.0])
            elbow = shoulder + self.upper_arm * (upper @ down)
            wrist = elbow + self.forearm * (forearm @ down)
            hand = wrist + self.hand * (forearm @ down)
            joints[:, first : first + 4] = np.stack([shoulder, elbow, wrist, hand], axis=1)
            forearms[side] = forearm
        for side, first in ((-1, 12), (+1, 16)):
            hip = root + np.array([side * 0.10 * s, 0.0, 0.0])
            ankle = np.broadcast_to(np.array([side * 0.10 * s, 0.07 * s, 0.0]), hip.shape)
            knee = _leg(hip, ankle, self.thigh, self.shin)
            foot = ankle + np.array([0.0, -0.05 * s, 0.10 * s])
            joints[:, first : first + 4] = np.stack([hip, knee, ankle, foot], axis=1)
        return joints, forearms[+1]


def specific_force(position: np.ndarray, sensor_frame: np.ndarray, rate: float) -> np.ndarray:
    """What an accelerometer at `position` ([T, 3], metres) with axes `sensor_frame` ([T, 3, 3]) reads, in g.

    f = R^T (p'' - g), with g = (0, -9.81, 0) m/s^2 in the body frame: at rest, 1 g pointing up.
    """
    dt = 1.0 / rate
    accel = np.gradient(np.gradient(position, dt, axis=0), dt, axis=0)
    gravity = np.array([0.0, -GRAVITY, 0.0])
    world = accel - gravity
    return np.einsum("tji,tj->ti", sensor_frame, world) / GRAVITY


def _smooth_noise(rng: np.random.Generator, t: np.ndarray, amplitude: float, count: int = 3) -> np.ndarray:
    out = np.zeros_like(t)
    for _ in range(count):
        freq = rng.uniform(0.2, 1.2)
        out += amplitude / count * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    return out


def _subject(seed: int, subject: int) -> dict:
    rng = np.random.default_rng([seed, subject, 7919])
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    return {
        "height": rng.uniform(1.55, 1.90),
        "tempo": rng.uniform(0.7, 1.4),
        "amplitude": rng.uniform(0.75, 1.25),
        # each person's own way of doing each action: offsets of the arm's posture, in degrees
        "style": rng.normal(0.0, 12.0, size=(len(CLASS_NAMES), 2, len(ANGLES))),
        "mount_axis": axis,
        "mount_angle": np.radians(rng.uniform(-25, 25)),
        "bias": rng.normal(0, 0.04, size=3),
        "position": np.array([rng.uniform(-0.3, 0.3), 0.0, rng.uniform(2.4, 3.2)]),
    }


def _rodrigues(axis: np.ndarray, angle: float) -> np.ndarray:
    x, y, z = axis
    cross = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def generate_clip(seed: int, subject: int, action: int, trial: int) -> Clip:
    """One recording: the skeleton at 30 Hz and the wrist accelerometer at 50 Hz, cropped independently."""
    person = _subject(seed, subject)
    rng = np.random.default_rng([seed, subject, action, trial])
    body = Body(person["height"])
    duration = 2.2 / person["tempo"] * rng.uniform(0.9, 1.1)
    lead, tail = rng.uniform(0.4, 1.2), rng.uniform(0.4, 1.2)  # the sensor stream's rest before and after
    total = lead + duration + tail
    t = np.arange(int(round(total * SIM_RATE)) + 1) / SIM_RATE
    u = np.clip((t - lead) / duration, 0.0, 1.0)
    active = ((t >= lead) & (t <= lead + duration)).astype(float)
    envelope = active * _smootherstep(u / 0.25) * _smootherstep((1 - u) / 0.25)
    amplitude = person["amplitude"] * rng.uniform(0.85, 1.15)
    right, left, drop = action_angles(action, u)
    styled = action if action < len(CLASS_NAMES) else BLIND[action - len(CLASS_NAMES)][0]  # a blind class: its base's
    for side, arm in enumerate((right, left)):
        for k, key in enumerate(ANGLES):
            style = person["style"][styled, side, k] + rng.normal(0.0, 4.0)
            arm[key] = envelope * (amplitude * arm[key] + style) + _smooth_noise(rng, t, 8.0)
    drop = envelope * amplitude * drop
    joints, forearm = body.pose(right, left, drop)
    # sway of the whole body, then the subject's place in front of the camera
    sway = np.stack([_smooth_noise(rng, t, 0.015), np.zeros_like(t), _smooth_noise(rng, t, 0.015)], axis=1)
    joints = joints + sway[:, None, :] + person["position"]

    # the watch sits differently on each person, and slides a little between recordings
    slide = _rodrigues(np.array([0.0, 1.0, 0.0]), np.radians(rng.normal(0.0, 8.0)))
    sensor = forearm @ _rodrigues(person["mount_axis"], person["mount_angle"]) @ slide
    wrist = joints[:, UTD_KINECT_V1.index("right_wrist")]
    force = specific_force(wrist, sensor, SIM_RATE)
    step = int(SIM_RATE / ACCELEROMETER_RATE)
    usable = (len(force) // step) * step
    accelerometer = force[:usable].reshape(-1, step, 3).mean(axis=1)  # the sensor's own averaging
    accelerometer += person["bias"] + rng.normal(0, 0.03, size=accelerometer.shape)
    accelerometer = np.clip(accelerometer, -SATURATION, SATURATION)

    start = lead - rng.uniform(0.0, 0.25)
    stop = lead + duration + rng.uniform(0.0, 0.25)
    frames = np.arange(start, stop, 1.0 / SKELETON_RATE)
    skeleton = np.empty((len(frames), joints.shape[1], 3))
    for j in range(joints.shape[1]):
        for axis in range(3):
            skeleton[:, j, axis] = np.interp(frames, t, joints[:, j, axis])
    skeleton += rng.normal(0, 0.006, size=skeleton.shape)
    return Clip(
        clip_id=f"a{action + 1}_s{subject}_t{trial}",
        label=action,
        subject=subject,
        trial=trial,
        streams={SKELETON: skeleton.astype(np.float32), ACCELEROMETER: accelerometer.astype(np.float32)},
        rates={SKELETON: SKELETON_RATE, ACCELEROMETER: ACCELEROMETER_RATE},
    )


def load(subjects: int = 8, trials: int = 4, classes: int = 10, seed: int = 0,
         blind: int = 0) -> tuple[DatasetInfo, list[Clip]]:
    """`classes` actions, then `blind` classes the watch cannot tell from their base action (BLIND), whose base
    must be among the first `classes`."""
    if not 2 <= classes <= len(CLASS_NAMES):
        raise ValueError(f"the synthetic dataset has 2 to {len(CLASS_NAMES)} classes, not {classes}")
    if not 0 <= blind <= len(BLIND) or any(base >= classes for base, _ in BLIND[:blind]):
        raise ValueError(f"blind classes: 0 to {len(BLIND)}, each with its base action among the {classes} classes")
    actions = [*range(classes), *range(len(CLASS_NAMES), len(CLASS_NAMES) + blind)]
    clips = [
        generate_clip(seed, subject, action, trial)
        for action in actions
        for subject in range(1, subjects + 1)
        for trial in range(1, trials + 1)
    ]
    for clip in clips:  # class indices follow `actions`
        clip.label = actions.index(clip.label)
    info = DatasetInfo(
        name=NAME,
        class_names=CLASS_NAMES[:classes] + [name for _, name in BLIND[:blind]],
        streams=[SKELETON, ACCELEROMETER],
        rates={SKELETON: SKELETON_RATE, ACCELEROMETER: ACCELEROMETER_RATE},
        layout=UTD_KINECT_V1.name,
        units={ACCELEROMETER: "g"},
    )
    return info, clips


class SyntheticOptions(DatasetOptions):
    """data.synthetic: the size of the generated dataset."""

    subjects: int = Field(8, ge=2, le=1000)
    trials: int = Field(4, ge=1, le=100)
    classes: int = Field(10, ge=2, le=len(CLASS_NAMES))
    seed: int = Field(0, ge=0, lt=2**32)
    # extra classes the wrist cannot see: the base action's right arm, another left arm (BLIND)
    blind: int = Field(0, ge=0, le=len(BLIND))


@register_dataset(NAME, protocols={"cross_subject": odd_even_subjects, "trial_split": first_half_trials},
                  options=SyntheticOptions, needs_data_dir=False)
def _registered(options: SyntheticOptions, root: None) -> tuple[DatasetInfo, list[Clip]]:
    return load(**options.model_dump())
