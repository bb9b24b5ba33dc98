from dataclasses import replace

import numpy as np
import pytest
import torch

from pskd.config import DataConfig, PreprocessConfig
from pskd.data import cache as cache_module
from pskd.data.batches import LABEL, PairedClips
from pskd.data.protocols import make_split
from pskd.data.registry import DATASETS, get_dataset
from pskd.errors import ConfigError, DataError

SUBJECTS = np.repeat(np.arange(1, 9), 8)
TRIALS = np.tile(np.repeat(np.arange(1, 5), 2), 8)


def test_cross_subject_is_odd_train_even_test_and_validation_comes_from_training_subjects():
    split = make_split("utd_mhad", "cross_subject", SUBJECTS, TRIALS)
    assert split.train_subjects == [1, 3, 5] and split.val_subjects == [7] and split.test_subjects == [2, 4, 6, 8]
    assert set(SUBJECTS[split.train]) == {1, 3, 5}
    assert set(SUBJECTS[split.val]) == {7}
    assert set(SUBJECTS[split.test]) == {2, 4, 6, 8}
    assert len(split.train) + len(split.val) + len(split.test) == len(SUBJECTS)
    chosen = make_split("utd_mhad", "cross_subject", SUBJECTS, TRIALS, val_subjects=[1, 5])
    assert chosen.train_subjects == [3, 7] and chosen.val_subjects == [1, 5]


def test_trial_split_keeps_validation_inside_training_trials():
    split = make_split("utd_mhad", "trial_split", SUBJECTS, TRIALS)
    assert set(TRIALS[split.train]) | set(TRIALS[split.val]) == {1, 2}
    assert set(TRIALS[split.test]) == {3, 4}
    assert not set(split.val) & set(split.test)


@pytest.mark.parametrize(
    "protocol, val, message",
    [
        ("cross_view", "auto", "unknown protocol 'cross_view'"),
        ("cross_subject", [2], "not training subjects"),
        ("cross_subject", [1, 3, 5, 7], "no subject to train on"),
    ],
)
def test_split_errors(protocol, val, message):
    with pytest.raises(ConfigError, match=message):
        make_split("utd_mhad", protocol, SUBJECTS, TRIALS, val)


def test_paired_batches_keep_streams_of_the_same_clip_together():
    streams = {"a": np.arange(10, dtype=np.float32)[:, None, None] * np.ones((10, 4, 3), np.float32),
               "b": -np.arange(10, dtype=np.float32)[:, None] * np.ones((10, 6), np.float32)}
    labels = np.arange(10) % 3
    data = PairedClips(streams, labels, np.array([9, 2, 5, 7, 0]))
    import torch

    seen = []
    for batch in data.batches(2, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert torch.equal(batch["a"][:, 0, 0], -batch["b"][:, 0])
        assert torch.equal(batch[LABEL], batch["index"] % 3)
        seen += batch["index"].tolist()
    assert sorted(seen) == [0, 2, 5, 7, 9]
    assert data[1]["index"].item() == 2 and data.num_batches(2) == 3


def test_prepared_data_is_cached_and_keyed_by_preprocessing(tmp_path, monkeypatch):
    calls = []
    source = get_dataset("synthetic")

    def counting(options, root):
        calls.append(1)
        return source.load(options, root)

    monkeypatch.setitem(DATASETS, "synthetic", replace(source, load=counting))
    config = DataConfig(dataset="synthetic", cache_dir=str(tmp_path), synthetic={"subjects": 2, "trials": 1})
    first = cache_module.prepare(config, PreprocessConfig(sensor_length=32, skeleton_length=16))
    second = cache_module.prepare(config, PreprocessConfig(sensor_length=32, skeleton_length=16))
    assert len(calls) == 1
    for name in first.streams:
        np.testing.assert_array_equal(first.streams[name], second.streams[name])
    assert first.clip_ids == second.clip_ids and first.info == second.info
    assert second.streams["accelerometer"].shape == (20, 32, 3)
    assert second.streams["skeleton"].shape == (20, 16, 20, 3)
    cache_module.prepare(config, PreprocessConfig(sensor_length=48, skeleton_length=16))
    assert len(calls) == 2
    assert len(list(tmp_path.glob("synthetic-*.npz"))) == 2


def test_a_corrupt_cache_entry_is_rebuilt(tmp_path):
    config = DataConfig(dataset="synthetic", cache_dir=str(tmp_path), synthetic={"subjects": 2, "trials": 1})
    pre = PreprocessConfig(sensor_length=16, skeleton_length=8)
    cache_module.prepare(config, pre)
    (entry,) = tmp_path.glob("*.npz")
    entry.write_bytes(b"garbage")
    messages = []
    prepared = cache_module.prepare(config, pre, log=lambda *a, **k: messages.append(" ".join(a)))
    assert len(prepared) == 20 and any("unreadable" in m for m in messages)


def test_real_data_is_prepared_and_cached(utd_root, tmp_path):
    config = DataConfig(dataset="utd_mhad", data_dir=str(utd_root), cache_dir=str(tmp_path))
    prepared = cache_module.prepare(config, PreprocessConfig())
    assert prepared.streams["accelerometer"].shape == (861, 128, 3)
    assert prepared.streams["skeleton"].shape == (861, 64, 20, 3)
    assert prepared.source_lengths["accelerometer"].min() == 107
    again = cache_module.prepare(config, PreprocessConfig())
    np.testing.assert_array_equal(again.labels, prepared.labels)


def test_no_data_folder_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("PSKD_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="pass --data-dir DIR or set PSKD_DATA_DIR"):
        cache_module.prepare(DataConfig(dataset="utd_mhad"), PreprocessConfig())


def test_auto_validation_holds_out_whole_subjects_covering_fifteen_percent():
    subjects = np.repeat(np.arange(1, 31), 10)
    split = make_split("folder", "leave_subjects_out", subjects, np.ones_like(subjects), "auto",
                       {"test_subjects": list(range(25, 31))})
    assert split.val_subjects == [21, 22, 23, 24]  # 40 of 240 training clips: the fewest whole subjects >= 15 %
    utd = make_split("utd_mhad", "cross_subject", np.repeat(np.arange(1, 9), 108), np.ones(864, dtype=int))
    assert utd.val_subjects == [7] and utd.train_subjects == [1, 3, 5]
    two = make_split("folder", "leave_subjects_out", np.array([1, 1, 2, 2, 3]), np.ones(5, dtype=int), "auto",
                     {"test_subjects": [3]})
    assert two.val_subjects == [2] and two.train_subjects == [1]  # never every training subject


def test_an_epoch_can_repeat_few_clips_in_fresh_shuffled_passes():
    data = PairedClips({"x": np.arange(5, dtype=np.float32)[:, None]}, np.arange(5), np.arange(5), epoch_size=12)
    assert data.num_batches(4) == 3 and len(data) == 5
    seen = torch.cat([b[LABEL] for b in data.batches(4, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert len(seen) == 12 and sorted(seen[:5].tolist()) == sorted(seen[5:10].tolist()) == [0, 1, 2, 3, 4]
    assert [len(b[LABEL]) for b in data.batches(4)] == [4, 1]  # evaluation reads each clip once
    plain = PairedClips({"x": np.zeros((5, 1), dtype=np.float32)}, np.arange(5), np.arange(5))
    first = next(plain.batches(5, shuffle=True, generator=torch.Generator().manual_seed(3)))[LABEL]
    assert first.tolist() == torch.randperm(5, generator=torch.Generator().manual_seed(3)).tolist()
    with pytest.raises(ValueError, match="smaller than"):
        PairedClips({"x": np.zeros((5, 1), dtype=np.float32)}, np.arange(5), np.arange(5), epoch_size=3)


def test_labelled_share_repeats_labelled_clips_within_an_epoch():
    labels = np.array([0, 1, -1, -1, -1, -1, -1, -1, -1, -1])
    data = PairedClips({"x": np.zeros((10, 1), dtype=np.float32)}, labels, np.arange(10), labelled_share=0.5)
    generator = torch.Generator().manual_seed(0)
    epoch = torch.cat([b[LABEL] for b in data.batches(4, shuffle=True, generator=generator)])
    assert len(epoch) == 10 and int((epoch >= 0).sum()) == 5  # half the epoch, the two labelled clips repeated
    assert data.num_batches(4) == 3
    plain = PairedClips({"x": np.zeros((10, 1), dtype=np.float32)}, labels, np.arange(10))
    assert int((torch.cat([b[LABEL] for b in plain.batches(4, shuffle=True)]) >= 0).sum()) == 2


def test_preprocess_channels_keep_some_channels_of_a_stream_and_bad_ones_are_named(tmp_path):
    from pskd.config import build_config
    from pskd.data.cache import prepare
    from pskd.errors import ConfigError

    data = {"dataset": "synthetic", "synthetic": {"subjects": 2, "trials": 1, "classes": 2}, "cache": False}
    full = prepare(build_config({"data": data}).data, build_config({}).preprocess)
    one = build_config({"data": data, "preprocess": {"channels": {"accelerometer": [2]}}})
    kept = prepare(one.data, one.preprocess)
    assert kept.streams["accelerometer"].shape[2] == 1
    np.testing.assert_array_equal(kept.streams["accelerometer"][..., 0], full.streams["accelerometer"][..., 2])
    assert kept.streams["skeleton"].shape == full.streams["skeleton"].shape
    with pytest.raises(ConfigError, match="channel 3 does not exist"):
        bad = build_config({"data": data, "preprocess": {"channels": {"accelerometer": [3]}}})
        prepare(bad.data, bad.preprocess)
    with pytest.raises(ConfigError, match="no such stream"):
        bad = build_config({"data": data, "preprocess": {"channels": {"gyroscope": [0]}}})
        prepare(bad.data, bad.preprocess)
    with pytest.raises(ConfigError, match="skeleton's joints are not channels"):
        build_config({"preprocess": {"channels": {"skeleton": [0]}}})
    with pytest.raises(ConfigError, match="distinct channel numbers"):
        build_config({"preprocess": {"channels": {"accelerometer": [0, 0]}}})
