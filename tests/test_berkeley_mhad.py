"""The Berkeley-MHAD accelerometer loader: the real copy (skipped when absent) and folders made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pskd.data import berkeley_mhad as bm
from pskd.data.clip import ACCELEROMETER
from pskd.data.protocols import make_split
from pskd.errors import DataError

from conftest import real_data_root


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
    assert split.train_subjects == [1, 2, 3, 4, 5, 6] and split.val_subjects == [7]
    assert split.test_subjects == [8, 9, 10, 11, 12]
    # another watch: the left wrist becomes the student's stream
    _, left = bm.load(berkeley_root, watch="h01")
    np.testing.assert_array_equal(left[0].streams[ACCELEROMETER], clips[0].streams["acc_h01"])


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
