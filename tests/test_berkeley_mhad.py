"""The Berkeley-MHAD accelerometer loader: the real copy (skipped when absent) and folders made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import real_data_root

from pskd.data import berkeley_mhad as bm
from pskd.data.clip import ACCELEROMETER
from pskd.data.protocols import make_split
from pskd.errors import DataError


@pytest.fixture(scope="module")
def berkeley_root() -> Path:
    root = real_data_root()
    if root is None or not (root / "berkeley_mhad" / "Accelerometer").is_dir():
        pytest.skip("real Berkeley-MHAD accelerometers not found: set PSKD_DATA_DIR or place shared/data beside the repository")
    return root / "berkeley_mhad"


def test_real_copy_loads_and_synchronises(berkeley_root):
    info, clips = bm.load(berkeley_root)
    assert len(clips) == 658 and info.num_classes == 11
    assert set(info.streams) == {ACCELEROMETER, "acc_h01", "acc_h03", "acc_h04", "acc_h05", "acc_h06"}
    assert {c.clip_id for c in clips}.isdisjoint({"s04_a08_r05", "s02_a07_r05"})
    assert any("s02_a07_r05" in note for note in info.notes)
    for clip in clips[:50]:
        lengths = {len(x) for x in clip.streams.values()}
        assert len(lengths) == 1  # every sensor on the one 30 Hz grid
    # a wrist at rest reads about 1 g
    magnitude = np.linalg.norm(np.concatenate([c.streams[ACCELEROMETER] for c in clips]), axis=1)
    assert 0.8 < np.median(magnitude) < 1.3
    split = make_split("berkeley_mhad", "cross_subject", np.array([c.subject for c in clips]),
                       np.array([c.trial for c in clips]))
    # validation: whole subjects holding at least 15 % of the training clips (one subject holds 14.3 %)
    assert split.train_subjects == [1, 2, 3, 4, 5] and split.val_subjects == [6, 7]
    assert split.test_subjects == [8, 9, 10, 11, 12]
    assert info.devices["accelerometer"] == "h02" and info.devices["acc_h01"] == "h01"  # six units, six frames
    # another watch: the left wrist becomes the student's stream
    _, left = bm.load(berkeley_root, watch="h01")
    np.testing.assert_array_equal(left[0].streams[ACCELEROMETER], clips[0].streams["acc_h01"])


def test_real_copy_names_its_recordings_with_outlying_timestamps(berkeley_root):
    info, _ = bm.load(berkeley_root)
    odd = [note for note in info.notes if "timestamps imply" in note]
    assert len(odd) == 17 and any(note.startswith("acc_h04_s07_a07_r02.txt: timestamps imply 8.7 Hz") for note in odd)


def test_an_outlying_timestamp_is_named_or_refused(tmp_path):
    root = make_copy(tmp_path / "berkeley_mhad")
    path = root / "Accelerometer" / "Shimmer03" / "acc_h03_s01_a01_r01.txt"
    values = np.loadtxt(path)
    values[-1, 3] = values[0, 3] + 5.0  # 90 samples over 5 s: 17.8 Hz, a late last packet
    np.savetxt(path, values, fmt="%.6f")
    info, _ = bm.load(root)
    assert any(note.startswith("acc_h03_s01_a01_r01.txt: timestamps imply 17.8 Hz") for note in info.notes)
    values[-1, 3] = values[0, 3] + 3600.0  # an hour: the recording would be flattened into a sliver
    np.savetxt(path, values, fmt="%.6f")
    with pytest.raises(DataError, match="acc_h03_s01_a01_r01.txt: 90 samples over 3600.00 s of timestamps is 0.0 Hz"):
        bm.load(root)


def test_real_copy_summary_names_the_modalities_found(berkeley_root):
    summary = bm.summarize(berkeley_root)
    assert summary["clips"] == 658
    assert summary["found"] == {"accelerometers": True, "optical motion capture": False, "bvh skeleton": False}


def write_sensor(path: Path, samples: int, start: float = 1.3e9, rate: float = 31.0, burst: bool = True):
    rng = np.random.default_rng(len(str(path)))
    times = start + np.arange(samples) / rate
    if burst:  # arrival times: pairs of packets 1 ms apart
        times[1::2] = times[0::2][: len(times[1::2])] + 0.001
    values = np.column_stack([rng.normal(size=(samples, 3)), times])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, values, fmt="%.6f")


def make_copy(root: Path, keys=((1, 1, 1), (8, 2, 3))) -> Path:
    for s, a, r in keys:
        for k in range(1, 7):
            write_sensor(root / "Accelerometer" / f"Shimmer0{k}" / f"acc_h0{k}_s{s:02d}_a{a:02d}_r{r:02d}.txt", 90,
                         start=1.3e9 + 0.01 * k)
    return root


def test_made_copy_loads_on_a_common_grid(tmp_path):
    info, clips = bm.load(make_copy(tmp_path / "berkeley_mhad"))
    assert [c.clip_id for c in clips] == ["s01_a01_r01", "s08_a02_r03"]
    assert clips[1].label == 1 and clips[1].subject == 8 and clips[1].trial == 3
    # each sensor's last timestamp is a burst arrival, 88/31 s + 1 ms after its first; the sensors start 10 ms
    # apart, so all six cover 88/31 + 0.001 - 0.05 = 2.790 s: floor(2.790 x 30) + 1 = 84 samples at 30 Hz
    assert len(clips[0].streams[ACCELEROMETER]) == 84
    assert any("absent" in note for note in info.notes)


@pytest.mark.parametrize("text, message", [
    ("1 2 3\n4 5 6\n", "line 1 has 3 columns"),
    ("1 2 3 4\n1 x 3 5\n", "line 2 holds a value that is not a number"),
    ("1 2 3 4\n1 nan 3 5\n", "line 2 holds NaN"),
    ("1 2 3 5\n1 2 3 4\n", "timestamps go backwards"),
    ("1 2 3 4\n", "1 samples, expected at least 2"),
])
def test_broken_sensor_files_are_named(tmp_path, text, message):
    root = make_copy(tmp_path / "berkeley_mhad")
    path = root / "Accelerometer" / "Shimmer03" / "acc_h03_s01_a01_r01.txt"
    path.write_text(text)
    with pytest.raises(DataError) as caught:
        bm.load(root)
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_missing_sensor_duplicate_and_unsynchronised_recordings(tmp_path):
    root = make_copy(tmp_path / "a" / "berkeley_mhad")
    (root / "Accelerometer" / "Shimmer05" / "acc_h05_s08_a02_r03.txt").unlink()
    with pytest.raises(DataError, match="s08_a02_r03 has no h05"):
        bm.load(root)
    root = make_copy(tmp_path / "b" / "berkeley_mhad")
    write_sensor(root / "Accelerometer" / "Shimmer04" / "acc_h04_s01_a01_r01.txt", 90, start=1.4e9)
    with pytest.raises(DataError, match="overlap for 0.00 s only"):
        bm.load(root)
    root = make_copy(tmp_path / "c" / "berkeley_mhad")
    source = root / "Accelerometer" / "Shimmer01" / "acc_h01_s01_a01_r01.txt"
    (source.parent / "acc_h01_s1_a01_r01.txt").write_bytes(source.read_bytes())
    with pytest.raises(DataError, match="the same recording as"):
        bm.load(root)
    with pytest.raises(DataError, match="watch sensor 'h09'"):
        bm.load(root, watch="h09")


BVH = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT Spine
  {
    OFFSET 0 100 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    JOINT RightArm
    {
      OFFSET 200 0 0
      CHANNELS 3 Zrotation Xrotation Yrotation
      End Site
      {
        OFFSET 250 0 0
      }
    }
  }
}
MOTION
Frames: {frames}
Frame Time: 0.0020833
{rows}
"""


def write_mocap(root: Path, key=(1, 1, 1), frames=1400, start=1.3e9, bvh=True):
    """Optical markers at 480 Hz (marker 5 hidden for a while, written as zeros) and a 3-joint BVH whose arm
    swings about Z (the spine turns) by 90 degrees over the recording."""
    name = "s{:02d}_a{:02d}_r{:02d}".format(*key)
    times = start + np.arange(frames) / 480.0
    markers = np.tile(np.arange(43 * 3, dtype=float), (frames, 1)) + np.arange(frames)[:, None]
    markers[100:200, 12:15] = 0.0
    optical = root / "Mocap" / "OpticalData" / f"moc_{name}.txt"
    optical.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(optical, np.column_stack([markers, np.arange(frames), times]), fmt="%.6f")
    if bvh:
        angles = np.linspace(0, 90, frames)
        rows = "\n".join(f"0 1000 0 0 0 0 {a:.4f} 0 0 0 0 0" for a in angles)  # the spine turns
        skeletal = root / "Mocap" / "SkeletalData" / f"skl_{name}.bvh"
        skeletal.parent.mkdir(parents=True, exist_ok=True)
        skeletal.write_text(BVH.replace("{frames}", str(frames)).replace("{rows}", rows))
    return times


def test_bvh_skeleton_is_synchronised_with_the_accelerometers(tmp_path):
    root = make_copy(tmp_path / "berkeley_mhad", keys=((1, 1, 1),))
    times = write_mocap(root, start=1.3e9 - 0.2)  # mocap starts before, ends after the sensors' common span
    info, clips = bm.load(root)
    assert info.layout == "berkeley_mocap" and info.layout_spec["joints"] == ["Hips", "Spine", "RightArm"]
    assert info.layout_spec["bones"] == [[1, 0], [2, 1]]
    clip = clips[0]
    skeleton = clip.streams["skeleton"]
    assert skeleton.shape == (len(clip.streams[ACCELEROMETER]), 3, 3)
    # forward kinematics in metres: hips at 1 m, the spine 0.1 m above, the arm 0.2 m along the rotated x axis
    np.testing.assert_allclose(skeleton[:, 0], np.tile([0.0, 1.0, 0.0], (len(skeleton), 1)), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(skeleton[:, 2] - skeleton[:, 1], axis=1), 0.2, atol=1e-5)
    # synchronised by the Unix timestamps: the grid starts where all sensors are on, 0.06 s after 1.3e9
    first_angle = np.degrees(np.arctan2(skeleton[0, 2, 1] - skeleton[0, 1, 1], skeleton[0, 2, 0]))
    start_in_mocap = (1.3e9 + 0.06) - times[0]
    assert first_angle == pytest.approx(90 * start_in_mocap / ((len(times) - 1) / 480), abs=0.05)
    assert bm.summarize(root)["found"] == {"accelerometers": True, "optical motion capture": True,
                                           "bvh skeleton": True}


def test_optical_markers_alone_and_their_occlusions(tmp_path):
    root = make_copy(tmp_path / "berkeley_mhad", keys=((1, 1, 1),))
    write_mocap(root, start=1.3e9 - 0.2, bvh=False)
    from pskd.data.mocap import read_optical

    markers, _ = read_optical(root / "Mocap/OpticalData/moc_s01_a01_r01.txt")
    # marker 5 was hidden in frames 100-199: filled by interpolation between frames 99 and 200 (mm -> m)
    np.testing.assert_allclose(markers[150, 4], (np.arange(12, 15) + 150) * 1e-3, atol=1e-6)
    info, clips = bm.load(root)
    assert info.layout == "berkeley_markers" and clips[0].streams["skeleton"].shape[1:] == (43, 3)


def test_mocap_problems_are_named(tmp_path):
    root = make_copy(tmp_path / "a" / "berkeley_mhad", keys=((1, 1, 1),))
    write_mocap(root)
    (root / "Mocap/OpticalData/moc_s01_a01_r01.txt").unlink()
    with pytest.raises(DataError, match="no optical file moc_s01_a01_r01.txt to time it by"):
        bm.load(root)
    root = make_copy(tmp_path / "b" / "berkeley_mhad", keys=((1, 1, 1),))
    write_mocap(root)
    optical = root / "Mocap/OpticalData/moc_s01_a01_r01.txt"
    optical.write_text("\n".join(optical.read_text().splitlines()[:-10]) + "\n")
    with pytest.raises(DataError, match="1400 frames, but moc_s01_a01_r01.txt has 1390"):
        bm.load(root)
    optical.write_text("1 2 3\n4 5 6\n")
    with pytest.raises(DataError, match="3 columns, expected 131"):
        bm.load(root)
    skeletal = root / "Mocap/SkeletalData/skl_s01_a01_r01.bvh"
    skeletal.write_text("HIERARCHY\nROOT Hips\n{\n OFFSET 0 0 0\n")
    write_mocap(root, bvh=False)
    with pytest.raises(DataError, match="not a valid BVH file|incomplete joint hierarchy"):
        bm.load(root)
