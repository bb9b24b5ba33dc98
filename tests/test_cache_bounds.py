"""The cache is untrusted input (pskd.data.cache_entry): a planted entry that inflates beyond its size, entries
tampered member by member, and a fuzzer over entries' members, each read back as "unreadable; rebuilding it" in
bounded memory, never trusted. Helpers and bounds are those of tests/test_bounds.py."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_bounds import DEEP, FUZZ_MB, HOSTILE_MB, MiB, fuzz, json_values, measured

from pskd.config import DataConfig, PreprocessConfig
from pskd.data import cache
from pskd.data.cache_entry import check_prepared

# ---- the cache -----------------------------------------------------------------------------------------------------

CACHED = DataConfig(dataset="synthetic", synthetic={"subjects": 2, "trials": 1})
PRE = PreprocessConfig(sensor_length=32, skeleton_length=16)


@pytest.fixture(scope="module")
def cache_entry(tmp_path_factory):
    """A real cache entry of a small synthetic dataset: (config, its path, its bytes, the prepared data)."""
    folder_ = tmp_path_factory.mktemp("cache")
    config = CACHED.model_copy(update={"cache_dir": str(folder_)})
    prepared = cache.prepare(config, PRE, log=lambda *a, **k: None)
    path = next(folder_.glob("*.npz"))
    return config, path, path.read_bytes(), prepared


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def write_entry(path: Path, parts: dict[str, bytes], compress: bool = False) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def reload(entry) -> tuple:
    """prepare() again over whatever is at the entry's path: (prepared, messages, peak MiB)."""
    config, path, _, _ = entry
    messages: list[str] = []
    prepared, peak, _ = measured(lambda: cache.prepare(config, PRE, log=lambda *a, **k: messages.append(a[0])))
    return prepared, messages, peak


def same(a, b) -> bool:
    return (a.clip_ids == b.clip_ids and np.array_equal(a.labels, b.labels)
            and all(np.array_equal(a.streams[k], b.streams[k]) for k in b.streams))


def test_a_planted_npz_that_inflates_to_half_a_gigabyte_is_rebuilt_without_inflating_it(cache_entry):
    config, path, good, fresh = cache_entry
    parts = members(good)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            if name != "stream/accelerometer.npy":
                archive.writestr(name, data)
        with archive.open("stream/accelerometer.npy", "w", force_zip64=True) as handle:
            count = 512 * MiB // 4
            np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": (count,)})
            block = bytes(16 * MiB)
            for _ in range(count * 4 // len(block)):
                handle.write(block)
    assert path.stat().st_size < 2 * MiB
    prepared, messages, peak = reload(cache_entry)
    assert peak < HOSTILE_MB and same(prepared, fresh)
    assert messages == [f"cache {path} is unreadable (a compressed member (pskd stores its arrays uncompressed)); "
                        "rebuilding it"]


TAMPERED = {
    "labels out of range": ("labels.npy", lambda fresh: npy_bytes(fresh.labels + 100), "labels outside the"),
    "negative labels": ("labels.npy", lambda fresh: npy_bytes(fresh.labels - 5), "labels outside the"),
    "labels of another length": ("labels.npy", lambda fresh: npy_bytes(fresh.labels[:-1]), "labels are not"),
    "labels as floats": ("labels.npy", lambda fresh: npy_bytes(fresh.labels.astype(float)), "labels are not"),
    "subjects out of range": ("subjects.npy", lambda fresh: npy_bytes(fresh.subjects + 10**12), "subjects out of"),
    "a stream of the wrong length": ("stream/accelerometer.npy",
                                     lambda fresh: npy_bytes(fresh.streams["accelerometer"][:, :7]), "has shape"),
    "NaN in a stream": ("stream/accelerometer.npy",
                        lambda fresh: npy_bytes(fresh.streams["accelerometer"] * np.nan), "NaN or infinite"),
    "a header asking for a terabyte": ("labels.npy", lambda fresh: npy_bytes(fresh.labels)[:10] + b"{'descr': '<i8', "
                                       b"'fortran_order': False, 'shape': (137438953472,), }".ljust(118) + b"\n",
                                       "member labels"),
    "metadata that is not JSON": ("meta.npy", lambda fresh: npy_bytes(np.frombuffer(b"{'info'", np.uint8)),
                                  "not valid JSON"),
    "metadata nested 100,000 deep": ("meta.npy", lambda fresh: npy_bytes(np.frombuffer(DEEP.encode(), np.uint8)),
                                     "nested deeper than 32"),
    "metadata of the wrong types": ("meta.npy", lambda fresh: npy_bytes(np.frombuffer(json.dumps(
        {"info": {"name": 3, "class_names": "ab", "streams": [], "rates": {}}, "clip_ids": []}).encode(), np.uint8)),
        "wrong name"),
}


@pytest.mark.parametrize("name", list(TAMPERED))
def test_a_tampered_cache_entry_is_rebuilt(name, cache_entry):
    config, path, good, fresh = cache_entry
    member, make, reason = TAMPERED[name]
    parts = members(good)
    parts[member] = make(fresh)
    write_entry(path, parts)
    prepared, messages, peak = reload(cache_entry)
    assert same(prepared, fresh) and peak < HOSTILE_MB
    assert len(messages) == 1 and "is unreadable (" in messages[0] and reason in messages[0], messages
    assert members(path.read_bytes()) == members(good)  # rebuilt as it was


@fuzz(30)
@given(member=st.sampled_from(["meta.npy", "labels.npy", "subjects.npy", "trials.npy", "scenes.npy",
                               "stream/accelerometer.npy", "length/accelerometer.npy", "extra.npy"]),
       data=st.binary(max_size=200) | json_values.map(lambda v: npy_bytes(np.frombuffer(json.dumps(v).encode(),
                                                                                       np.uint8)))
       | st.lists(st.integers(-2**40, 2**40), max_size=30).map(lambda v: npy_bytes(np.array(v, np.int64)))
       | st.lists(st.floats(width=32), max_size=30).map(lambda v: npy_bytes(np.array(v, np.float32))),
       cut=st.integers(0, 400), compress=st.booleans())
def test_fuzz_cache_entries(cache_entry, member, data, cut, compress):
    config, path, good, fresh = cache_entry
    parts = members(good)
    parts[member] = data
    write_entry(path, parts, compress)
    if cut:  # a file cut short, as a killed writer or a full disk leaves it
        path.write_bytes(path.read_bytes()[:-cut])
    prepared, messages, peak = reload(cache_entry)
    assert peak < FUZZ_MB
    check_prepared(prepared, {"accelerometer": PRE.sensor_length})  # whatever was read is consistent
    if messages:
        assert same(prepared, fresh) and len(messages) == 1 and "rebuilding it" in messages[0]
