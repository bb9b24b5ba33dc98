import math

import numpy as np
import pytest
import torch

from pskd.data.layouts import UTD_KINECT_V1
from pskd.data.transforms import (
    Augmenter,
    Standardizer,
    axis_angle,
    center_skeleton,
    crop_resize,
    gasf,
    random_rotations,
    resample,
    scale_skeleton,
)


def test_resample_linear_is_exact_on_a_ramp_and_keeps_the_ends():
    x = np.stack([np.linspace(0, 1, 177), np.linspace(5, -5, 177)], axis=1).astype(np.float32)
    out = resample(x, 64, "linear", antialias=False)
    assert out.shape == (64, 2)
    np.testing.assert_allclose(out[:, 0], np.linspace(0, 1, 64), atol=1e-6)
    np.testing.assert_allclose(out[[0, -1], 1], [5, -5], atol=1e-6)


def test_resample_upsamples_and_keeps_trailing_shape():
    x = np.random.default_rng(0).normal(size=(41, 20, 3)).astype(np.float32)
    out = resample(x, 64, "cubic")
    assert out.shape == (64, 20, 3)
    np.testing.assert_allclose(out[0], x[0], atol=1e-5)
    np.testing.assert_allclose(out[-1], x[-1], atol=1e-5)


def test_antialias_removes_what_the_new_rate_cannot_hold():
    t = np.arange(300) / 50.0
    slow = np.sin(2 * np.pi * 1.0 * t)
    fast = np.sin(2 * np.pi * 20.0 * t)  # 20 Hz: above the Nyquist frequency of 60 samples over 6 s (5 Hz)
    x = (slow + fast)[:, None].astype(np.float32)
    filtered = resample(x, 60, antialias=True)[:, 0]
    aliased = resample(x, 60, antialias=False)[:, 0]
    target = np.sin(2 * np.pi * 1.0 * np.linspace(0, t[-1], 60))
    assert np.abs(filtered - target)[5:-5].max() < 0.15
    assert np.abs(aliased - target).max() > 0.5


def test_resample_rejects_degenerate_streams():
    with pytest.raises(ValueError):
        resample(np.zeros((1, 3)), 10)


def test_skeleton_centring_and_scale():
    rng = np.random.default_rng(1)
    skeleton = rng.normal(size=(30, 20, 3)).astype(np.float32) * 0.1
    hip, top = UTD_KINECT_V1.index("hip_center"), UTD_KINECT_V1.index("shoulder_center")
    skeleton[:, top] = skeleton[:, hip] + np.array([0, 0.5, 0])
    skeleton += np.array([1.0, 2.0, 3.0])
    centred = center_skeleton(skeleton, UTD_KINECT_V1, "hip")
    np.testing.assert_allclose(centred[:, hip].mean(axis=0), 0, atol=1e-6)
    scaled = scale_skeleton(centred, UTD_KINECT_V1)
    torso = np.linalg.norm(scaled[:, top] - scaled[:, hip], axis=-1).mean()
    assert torso == pytest.approx(1.0, abs=1e-5)
    assert center_skeleton(skeleton, UTD_KINECT_V1, "none") is skeleton


def test_standardizer_fits_per_channel():
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(50, 40, 3)) * [1, 2, 3] + [0, 10, -5]).astype(np.float32)
    normal = Standardizer.fit(x)
    np.testing.assert_allclose(normal.mean, [0, 10, -5], atol=0.1)
    np.testing.assert_allclose(normal.std, [1, 2, 3], rtol=0.05)
    out = normal.apply(x)
    np.testing.assert_allclose(out.reshape(-1, 3).mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(out.reshape(-1, 3).std(0), 1, atol=1e-4)
    constant = Standardizer.fit(np.ones((4, 5, 2), dtype=np.float32))
    np.testing.assert_array_equal(constant.std, [1, 1])


def test_gasf_matches_the_arccos_definition():
    x = torch.tensor([[[0.2, -1.0, 3.0, 0.5, 1.0]]])
    field = gasf(x)[0, 0].numpy()
    v = x[0, 0].numpy()
    scaled = 2 * (v - v.min()) / (v.max() - v.min()) - 1
    phi = np.arccos(scaled)
    expected = (np.cos(phi[:, None] + phi[None, :]) + 1) / 2
    np.testing.assert_allclose(field, expected, atol=1e-6)
    assert field.shape == (5, 5)
    np.testing.assert_allclose(field, field.T, atol=1e-7)
    assert 0 <= field.min() and field.max() <= 1


def test_gasf_of_a_constant_channel_is_finite():
    field = gasf(torch.ones(2, 3, 16))
    assert torch.isfinite(field).all()


def test_rotations_are_proper_and_bounded():
    g = torch.Generator().manual_seed(0)
    rotation = random_rotations(64, 15.0, g)
    eye = torch.eye(3).expand(64, 3, 3)
    torch.testing.assert_close(rotation @ rotation.transpose(1, 2), eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rotation), torch.ones(64), atol=1e-5, rtol=0)
    angle = torch.arccos(((rotation.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1))
    assert angle.max() <= math.radians(15.0) + 1e-4
    quarter = axis_angle(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([math.pi / 2]))[0]
    torch.testing.assert_close(quarter @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)


def test_crop_resize_is_identity_at_full_length_and_crops_otherwise():
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(0, 1, 50).view(1, 50, 1).repeat(4, 1, 3)
    torch.testing.assert_close(crop_resize(x, 1.0, g), x)
    cropped = crop_resize(x, 0.5, g)
    assert cropped.shape == x.shape
    span = cropped[:, -1, 0] - cropped[:, 0, 0]
    assert (span >= 0.5 - 1e-5).all() and (span <= 1 + 1e-5).all()
    assert (cropped[:, 1:, 0] >= cropped[:, :-1, 0] - 1e-6).all()  # still monotone: a crop, not a shuffle


def test_augmenter_rotation_keeps_magnitudes_and_is_seeded():
    x = torch.randn(8, 40, 6)
    rotate_only = Augmenter(scale=0, jitter=0, rotation_deg=30, time_crop=0, seed=3)
    out = rotate_only({"accelerometer": x})["accelerometer"]
    torch.testing.assert_close(out.view(8, 40, 2, 3).norm(dim=-1), x.view(8, 40, 2, 3).norm(dim=-1), atol=1e-5, rtol=0)
    assert not torch.allclose(out, x)
    again = Augmenter(scale=0, jitter=0, rotation_deg=30, time_crop=0, seed=3)({"accelerometer": x})["accelerometer"]
    torch.testing.assert_close(out, again)


def test_augmenter_uses_one_sensor_frame_for_accelerometer_and_gyroscope():
    acc, gyro = torch.randn(4, 30, 3), torch.randn(4, 30, 3)
    out = Augmenter(scale=0, jitter=0, rotation_deg=40, time_crop=0, seed=1)({"accelerometer": acc, "gyroscope": acc.clone()})
    torch.testing.assert_close(out["accelerometer"], out["gyroscope"])
    assert gyro.shape == out["gyroscope"].shape


def test_augmenter_rotates_each_body_worn_unit_in_its_own_frame():
    x = torch.randn(6, 30, 3)
    devices = {"accelerometer": "wrist", "acc_wrist2": "wrist", "acc_ankle": "ankle"}
    aug = Augmenter(scale=0, jitter=0, rotation_deg=60, time_crop=0, seed=2, devices=devices)
    out = aug({"accelerometer": x, "acc_wrist2": x.clone(), "acc_ankle": x.clone(), "angles": x.clone()})
    torch.testing.assert_close(out["accelerometer"], out["acc_wrist2"])  # one unit: one rotation
    assert not torch.allclose(out["accelerometer"], out["acc_ankle"], atol=1e-3)  # two units: two rotations
    torch.testing.assert_close(out["acc_ankle"].norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out["angles"], x)  # on no unit: not a vector, left alone


def test_augmenter_default_units_are_the_watch_and_draw_as_before():
    """No devices: the watch's accelerometer and gyroscope share a frame, and the random draws come in the same
    order as before units existed (rotation first), so earlier seeds give the same batches."""
    acc = torch.randn(4, 30, 3)
    plain = Augmenter(seed=5)({"accelerometer": acc, "gyroscope": acc.clone()})
    explicit = Augmenter(seed=5, devices={"accelerometer": "watch", "gyroscope": "watch"})(
        {"accelerometer": acc, "gyroscope": acc.clone()})
    torch.testing.assert_close(plain["accelerometer"], explicit["accelerometer"])
    generator = torch.Generator().manual_seed(5)
    first = random_rotations(4, 15.0, generator)
    rotate_only = Augmenter(scale=0, jitter=0, rotation_deg=15.0, time_crop=0, seed=5)({"accelerometer": acc})
    torch.testing.assert_close(rotate_only["accelerometer"], torch.einsum("bij,btj->bti", first, acc))


def test_augmenter_skeleton_rotates_about_the_vertical_and_scales():
    x = torch.randn(5, 20, 20, 3)
    aug = Augmenter(scale=0.2, jitter=0, rotation_deg=45, time_crop=0, seed=0)
    out = aug({"skeleton": x, "label": torch.arange(5)})
    ratio = out["skeleton"][..., 1] / x[..., 1]  # heights only scale
    assert torch.allclose(ratio, ratio[:, :1, :1].expand_as(ratio), atol=1e-4)
    assert ((ratio[:, 0, 0] >= 0.8 - 1e-5) & (ratio[:, 0, 0] <= 1.2 + 1e-5)).all()
    torch.testing.assert_close(out["label"], torch.arange(5))


def test_augmenter_scale_and_jitter_bounds():
    x = torch.ones(100, 10, 3)
    out = Augmenter(scale=0.1, jitter=0, rotation_deg=0, time_crop=0, seed=0).inertial(x)
    assert out.min() >= 0.9 - 1e-6 and out.max() <= 1.1 + 1e-6
    noisy = Augmenter(scale=0, jitter=0.05, rotation_deg=0, time_crop=0, seed=0).inertial(x)
    assert abs((noisy - x).std().item() - 0.05) < 0.005
    # a stream of single axes (preprocess.channels) cannot be rotated: it is scaled, jittered and cropped only
    single = Augmenter(scale=0.1, jitter=0, rotation_deg=45, time_crop=0, seed=0).inertial(torch.ones(50, 10, 1))
    assert single.min() >= 0.9 - 1e-6 and single.max() <= 1.1 + 1e-6 and single.std() > 0
