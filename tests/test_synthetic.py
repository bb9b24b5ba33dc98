import numpy as np
import pytest

from pskd.data import synthetic
from pskd.data.layouts import UTD_KINECT_V1
from pskd.data.synthetic import Body, arm_rotations, generate_clip, specific_force


def rest_angles(steps):
    return {k: np.zeros(steps) for k in synthetic.ANGLES}


def test_a_wrist_at_rest_reads_one_g_along_the_forearm():
    steps = 200
    body = Body(1.75)
    joints, forearm = body.pose(rest_angles(steps), rest_angles(steps), np.zeros(steps))
    wrist = joints[:, UTD_KINECT_V1.index("right_wrist")]
    force = specific_force(wrist, forearm, synthetic.SIM_RATE)
    np.testing.assert_allclose(np.linalg.norm(force, axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(force, np.tile([0.0, 1.0, 0.0], (steps, 1)), atol=1e-9)


def test_a_still_sensor_in_any_orientation_reads_gravity_in_its_own_frame():
    steps = 50
    tilt = np.full(steps, 90.0)
    angles = rest_angles(steps)
    angles["abd"] = tilt  # right arm raised sideways to horizontal: the forearm's axis now points along +x
    body = Body(1.75)
    joints, forearm = body.pose(angles, rest_angles(steps), np.zeros(steps))
    force = specific_force(joints[:, UTD_KINECT_V1.index("right_wrist")], forearm, synthetic.SIM_RATE)
    np.testing.assert_allclose(np.linalg.norm(force, axis=1), 1.0, atol=1e-9)
    # gravity (up = +y world) now lies along the sensor's x axis, not its forearm (y) axis
    assert abs(force[0, 1]) < 1e-9 and abs(abs(force[0, 0]) - 1.0) < 1e-9


def test_specific_force_is_the_second_derivative_plus_gravity():
    rate = 200.0
    t = np.arange(400) / rate
    amplitude, freq = 0.2, 1.5
    position = np.stack([amplitude * np.sin(2 * np.pi * freq * t), np.zeros_like(t), np.zeros_like(t)], axis=1)
    frame = np.broadcast_to(np.eye(3), (len(t), 3, 3))
    force = specific_force(position, frame, rate)
    expected_x = -amplitude * (2 * np.pi * freq) ** 2 * np.sin(2 * np.pi * freq * t) / synthetic.GRAVITY
    np.testing.assert_allclose(force[5:-5, 0], expected_x[5:-5], atol=2e-3)
    np.testing.assert_allclose(force[:, 1], 1.0, atol=1e-9)


def test_arm_kinematics_keep_segment_lengths():
    steps = 100
    rng = np.random.default_rng(0)
    angles = {k: rng.uniform(-90, 90, steps) for k in synthetic.ANGLES}
    body = Body(1.6)
    joints, _ = body.pose(angles, angles, np.zeros(steps))
    shoulder, elbow, wrist = (UTD_KINECT_V1.index(n) for n in ("right_shoulder", "right_elbow", "right_wrist"))
    np.testing.assert_allclose(np.linalg.norm(joints[:, elbow] - joints[:, shoulder], axis=1), body.upper_arm)
    np.testing.assert_allclose(np.linalg.norm(joints[:, wrist] - joints[:, elbow], axis=1), body.forearm)
    upper, forearm = arm_rotations(angles, +1)
    np.testing.assert_allclose(forearm @ forearm.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (steps, 3, 3)), atol=1e-12)


def test_clips_are_deterministic_given_the_seed():
    a = generate_clip(0, 3, 4, 2)
    b = generate_clip(0, 3, 4, 2)
    c = generate_clip(1, 3, 4, 2)
    for name in a.streams:
        np.testing.assert_array_equal(a.streams[name], b.streams[name])
    assert not np.array_equal(a.streams["accelerometer"][:50], c.streams["accelerometer"][:50])


def test_streams_have_their_own_rates_and_independent_crops():
    info, clips = synthetic.load(subjects=2, trials=2, classes=10, seed=0)
    assert len(clips) == 2 * 2 * 10
    assert info.rates == {"skeleton": 30.0, "accelerometer": 50.0}
    for clip in clips:
        assert clip.streams["skeleton"].shape[1:] == (20, 3)
        assert clip.streams["accelerometer"].shape[1] == 3
        # the sensor stream covers the action plus rest before and after it: longer than the skeleton's
        assert clip.duration("accelerometer") > clip.duration("skeleton")
        assert np.abs(clip.streams["accelerometer"]).max() <= synthetic.SATURATION
    ratios = [len(c.streams["accelerometer"]) / len(c.streams["skeleton"]) for c in clips]
    assert min(ratios) > 50 / 30 and np.std(ratios) > 0.05  # not a fixed frame alignment


def test_the_accelerometer_follows_the_skeleton_wrist():
    """The physical link: the sensor's dynamic part is large when the skeleton's wrist moves fast."""
    clip = generate_clip(0, 1, 7, 1)  # punch: fast elbow extension
    wrist = clip.streams["skeleton"][:, UTD_KINECT_V1.index("right_wrist")]
    speed = np.linalg.norm(np.diff(wrist, axis=0), axis=1) * 30
    dynamic = np.abs(np.linalg.norm(clip.streams["accelerometer"], axis=1) - 1)
    assert speed.max() > 1.0 and dynamic.max() > 1.0
    still = generate_clip(0, 1, 7, 1)
    lead = still.streams["accelerometer"][:15]  # the first 0.3 s are rest before the action
    assert abs(np.linalg.norm(lead, axis=1).mean() - 1.0) < 0.1


def test_unknown_class_count_is_refused():
    with pytest.raises(ValueError):
        synthetic.load(classes=11)


def test_blind_classes_move_the_right_arm_exactly_as_their_base_action():
    from pskd.data.synthetic import BLIND, CLASS_NAMES, action_angles

    u = np.linspace(0, 1, 50)
    for k, (base, _) in enumerate(BLIND):
        right, left, drop = action_angles(len(CLASS_NAMES) + k, u)
        base_right, base_left, base_drop = action_angles(base, u)
        for key in right:
            assert np.array_equal(right[key], base_right[key])  # the watch's arm: identical
        assert np.array_equal(drop, base_drop)
        assert max(np.abs(left[key] - base_left[key]).max() for key in left) > 50  # the other arm: degrees apart
    info, clips = synthetic.load(subjects=2, trials=1, classes=10, seed=0, blind=2)
    assert info.class_names[10:] == [BLIND[0][1], BLIND[1][1]] and len(clips) == 24
    assert sorted({c.label for c in clips}) == list(range(12))
    blind_wave = next(c for c in clips if c.label == 10 and c.subject == 1)
    wave = next(c for c in clips if c.label == 2 and c.subject == 1)
    left_wrist = UTD_KINECT_V1.index("left_wrist")
    assert abs(blind_wave.streams["skeleton"][:, left_wrist, 1].max() - wave.streams["skeleton"][:, left_wrist, 1].max()) > 0.1
    with pytest.raises(ValueError, match="blind classes"):
        synthetic.load(subjects=2, trials=1, classes=3, blind=2)  # the second's base (punch) is not among 3
