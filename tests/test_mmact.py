"""The MMAct loader on files written here in the released layout (the dataset itself is not at hand)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pskd.config import build_config
from pskd.data import mmact
from pskd.data.layouts import COCO17
from pskd.data.protocols import make_split
from pskd.errors import DataError
from pskd.pipeline import run

ACTIONS = ["carrying", "talking", "waving"]


def write_release(root: Path, subjects=(1, 2, 17, 18), scenes=(1, 2), zipped=True, ms=False) -> Path:
    rng = np.random.default_rng(0)
    poses = {}
    for subject in subjects:
        for scene in scenes:
            for action_index, action in enumerate(ACTIONS):
                where = f"subject{subject}/scene{scene}/session1/{action}"
                n = 60 + 5 * action_index
                t = 1_540_000_000 + np.arange(n) / 100.0  # about 100 Hz
                for sensor in ("acc_watch", "acc_phone", "gyro"):
                    path = root / f"{sensor}_clip" / f"{where}.csv"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    signal = rng.normal(size=(n, 3)) + action_index
                    stamps = t * 1000 if ms else t
                    path.write_text("".join(f"{s:.3f},{x:.4f},{y:.4f},{z:.4f}\n" for s, (x, y, z) in zip(stamps, signal)))
                for cam in (1, 2):
                    frames = {}
                    for f in range(20):
                        points = rng.uniform(0, 640, size=(17, 3))
                        points[:, 2] = 0.9
                        if f == 3:
                            points[4, 2] = 0.0  # not seen in this frame: keeps its last position
                        frames[str(f)] = {"person1": points.ravel().tolist(), "person2": [0.0] * 51}
                    poses[f"pose/train/a/subject{subject}/cam{cam}/scene{scene}/session1/{action}.json"] = frames
    if zipped:
        with zipfile.ZipFile(root / "trimmed_pose.zip", "w") as archive:
            for name, frames in poses.items():
                archive.writestr(name, json.dumps(frames))
    else:
        for name, frames in poses.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(json.dumps(frames))
    return root


@pytest.mark.parametrize("zipped", [True, False])
def test_release_layout_loads(tmp_path, zipped):
    info, clips = mmact.load(write_release(tmp_path / "mmact", zipped=zipped))
    assert len(clips) == 4 * 2 * 3 and info.class_names == ACTIONS
    assert set(info.streams) == {"accelerometer", "phone_accelerometer", "gyroscope", "skeleton"}
    assert info.layout == COCO17.name
    assert info.rates["accelerometer"] == pytest.approx(100.0, rel=1e-3)
    clip = clips[0]
    assert clip.streams["skeleton"].shape == (20, 17, 3) and clip.scene in (1, 2)
    skeleton = clip.streams["skeleton"]
    np.testing.assert_array_equal(skeleton[3, 4], skeleton[2, 4])  # unseen keypoint held
    assert (skeleton[:, :, 2] == 0).all()


def test_milliseconds_protocols_and_training(tmp_path):
    root = write_release(tmp_path / "mmact", ms=True)
    info, clips = mmact.load(root)
    assert info.rates["accelerometer"] == pytest.approx(100.0, rel=1e-3)
    subjects = np.array([c.subject for c in clips])
    scenes = np.array([c.scene for c in clips])
    trials = np.array([c.trial for c in clips])
    split = make_split("mmact", "cross_subject", subjects, trials, [2])
    assert split.test_subjects == [17, 18] and split.train_subjects == [1] and split.val_subjects == [2]
    split = make_split("mmact", "cross_scene", subjects, trials, [2], {"scenes": scenes})
    assert set(scenes[split.test]) == {2} and set(scenes[split.train]) == {1}
    config = build_config({
        "method": "kd", "progress": False, "threads": 1,
        "data": {"dataset": "mmact", "data_dir": str(root), "val_subjects": [2]},
        "preprocess": {"sensor_length": 32, "skeleton_length": 16},
        "student": {"name": "compact_cnn", "options": {"widths": [8, 16], "embedding_dim": 16}},
        "train": {"epochs": 2, "batch_size": 8},
        "teachers": {"keypoints": {"name": "skeleton_gcn", "options": {"widths": [8], "strides": [1],
                                                                       "embedding_dim": 8},
                                   "train": {"epochs": 2, "batch_size": 8}}},
    })
    _, metrics = run(config, tmp_path / "run", log=lambda *a, **k: None)
    assert metrics["dataset"] == "mmact" and "keypoints" in metrics["teachers"]


def test_broken_files_are_named(tmp_path):
    root = write_release(tmp_path / "mmact", zipped=False)
    watch = root / "acc_watch_clip/subject1/scene1/session1/talking.csv"
    watch.write_text("1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match="line 1 has 3 columns"):
        mmact.load(root)
    watch.write_text("1.0,2,3,4\n0.5,2,3,4\n")
    with pytest.raises(DataError, match="timestamps do not increase"):
        mmact.load(root)
    watch.write_text("1.0,2,3,4\n1.1,2,x,4\n")
    with pytest.raises(DataError, match="line 2 holds a value"):
        mmact.load(root)
    write_release(tmp_path / "b", zipped=False)
    pose = tmp_path / "b" / "pose/train/a/subject1/cam1/scene1/session1/talking.json"
    pose.write_text(json.dumps({"0": {"person1": [1.0] * 50}}))
    with pytest.raises(DataError, match="expected 51 numbers"):
        mmact.load(tmp_path / "b")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="missing acc_watch_clip"):
        mmact.load(tmp_path / "empty")


def test_a_sensor_some_clips_lack_is_left_out_and_said(tmp_path):
    root = write_release(tmp_path / "mmact")
    (root / "gyro_clip/subject2/scene1/session1/waving.csv").unlink()
    info, clips = mmact.load(root)
    assert "gyroscope" not in info.streams
    assert any("gyro left out: 1 of 24 clips lack it" in note for note in info.notes)
