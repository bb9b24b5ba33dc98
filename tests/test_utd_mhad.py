"""The UTD-MHAD loader on the real data (skipped when absent) and on small folders made by the tests."""

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from pskd.data import utd_mhad
from pskd.errors import DataError


def test_real_copy_loads_completely(utd_root):
    info, clips = utd_mhad.load(utd_root)
    assert len(clips) == 861
    assert info.num_classes == 27 and len(info.class_names) == 27
    assert sorted({c.subject for c in clips}) == list(range(1, 9))
    assert sorted({c.trial for c in clips}) == [1, 2, 3, 4]
    names = {c.clip_id for c in clips}
    assert not {"a8_s1_t4", "a23_s6_t4", "a27_s8_t4"} & names
    clip = next(c for c in clips if c.clip_id == "a1_s1_t1")
    assert clip.label == 0
    assert clip.streams["skeleton"].shape[1:] == (20, 3)
    assert clip.streams["accelerometer"].shape[1] == 3 and clip.streams["gyroscope"].shape[1] == 3
    assert clip.rates == {"skeleton": 30.0, "accelerometer": 50.0, "gyroscope": 50.0}
    skeleton_lengths = [len(c.streams["skeleton"]) for c in clips]
    inertial_lengths = [len(c.streams["accelerometer"]) for c in clips]
    assert (min(skeleton_lengths), max(skeleton_lengths)) == (41, 125)
    assert (min(inertial_lengths), max(inertial_lengths)) == (107, 326)
    # the accelerometer is in g: a wrist mostly at rest reads about 1 g
    magnitude = np.linalg.norm(np.concatenate([c.streams["accelerometer"] for c in clips]), axis=1)
    assert 0.9 < np.median(magnitude) < 1.2


def test_real_copy_summary(utd_root):
    summary = utd_mhad.summarize(utd_root / "utd_mhad")
    assert summary["clips"] == 861 and summary["classes"] == 27 and summary["subjects"] == list(range(1, 9))
    assert summary["modalities"]["accelerometer"]["rate_hz"] == 50.0
    assert summary["missing"] == ["a8_s1_t4", "a23_s6_t4", "a27_s8_t4"]


# ---------------------------------------------------------------- folders made here


def make_copy(root: Path, keys=None) -> Path:
    """A structurally complete UTD-MHAD copy with tiny random recordings."""
    rng = np.random.default_rng(0)
    (root / "Skeleton").mkdir(parents=True)
    (root / "Inertial").mkdir()
    (root / "Skeleton" / "Skeleton_joint_order.txt").write_text("1. head;\n")
    if keys is None:
        keys = [
            (a, s, t) for a in range(1, 28) for s in range(1, 9) for t in range(1, 5)
            if (a, s, t) not in utd_mhad.KNOWN_MISSING
        ]
    for a, s, t in keys:
        scipy.io.savemat(root / "Skeleton" / f"a{a}_s{s}_t{t}_skeleton.mat", {"d_skel": rng.normal(size=(20, 3, 5))})
        scipy.io.savemat(root / "Inertial" / f"a{a}_s{s}_t{t}_inertial.mat", {"d_iner": rng.normal(size=(9, 6))})
    return root


@pytest.fixture(scope="module")
def fake_copy(tmp_path_factory) -> Path:
    return make_copy(tmp_path_factory.mktemp("utd") / "utd_mhad")


def clone(fake_copy: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "utd_mhad"
    shutil.copytree(fake_copy, target)
    return target


def test_made_copy_loads_and_data_root_is_accepted(fake_copy):
    info, clips = utd_mhad.load(fake_copy.parent)  # the data root holding utd_mhad/
    assert len(clips) == 861
    assert clips[0].streams["skeleton"].shape == (5, 20, 3)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(DataError, match="UTD-MHAD folder not found"):
        utd_mhad.load(tmp_path / "nowhere")
    (tmp_path / "Skeleton").mkdir()
    with pytest.raises(DataError, match="missing Inertial/"):
        utd_mhad.load(tmp_path)


def test_incomplete_copy_names_the_missing_clips(fake_copy, tmp_path):
    root = clone(fake_copy, tmp_path)
    (root / "Inertial" / "a5_s2_t3_inertial.mat").unlink()
    with pytest.raises(DataError, match=r"1 inertial file\(s\) missing \(a5_s2_t3\)"):
        utd_mhad.load(root)


@pytest.mark.parametrize(
    "name, contents, message",
    [
        ("Inertial/a1_s1_t1_inertial.mat", b"not a mat file at all", "not a readable MAT file"),
        ("Inertial/a1_s1_t1_inertial.mat", {"other": np.zeros((9, 6))}, "no variable 'd_iner'"),
        ("Inertial/a1_s1_t1_inertial.mat", {"d_iner": np.zeros((9, 5))}, "expected (T, 6)"),
        ("Inertial/a1_s1_t1_inertial.mat", {"d_iner": np.full((9, 6), np.nan)}, "NaN or infinite"),
        ("Inertial/a1_s1_t1_inertial.mat", {"d_iner": np.zeros((1, 6))}, "expected at least 2"),
        ("Skeleton/a1_s1_t1_skeleton.mat", {"d_skel": np.zeros((25, 3, 5))}, "expected (20, 3, T)"),
        ("Skeleton/a1_s1_t1_skeleton.mat", {"d_skel": np.full((20, 3, 5), np.inf)}, "NaN or infinite"),
        ("Skeleton/a1_s1_t1_skeleton.mat", {"d_skel": np.array(["text"])}, "not a numeric array"),
    ],
)
def test_broken_file_is_named(fake_copy, tmp_path, name, contents, message):
    root = clone(fake_copy, tmp_path)
    path = root / name
    if isinstance(contents, bytes):
        path.write_bytes(contents)
    else:
        scipy.io.savemat(path, contents)
    with pytest.raises(DataError) as caught:
        utd_mhad.load(root)
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_unrecognised_files_are_reported_not_silently_skipped(fake_copy, tmp_path):
    root = clone(fake_copy, tmp_path)
    (root / "Inertial" / "notes.txt").write_text("x")
    (root / "Inertial" / "a30_s1_t1_inertial.mat").write_bytes(b"")
    info, clips = utd_mhad.load(root)
    assert len(clips) == 861
    assert any("notes.txt" in note for note in info.notes)
    assert any("a30_s1_t1_inertial.mat (action, subject or trial out of range)" in note for note in info.notes)
