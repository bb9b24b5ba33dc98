"""Property-based tests: whatever a user (or an attacker) puts in a manifest, a layout file, a recording, a model
card or a config override, pskd either reads it or refuses it with its own error (UserError: one line, exit 2),
never with another exception."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pskd.config import build_config
from pskd.data import folder
from pskd.data.layouts import layout_from_json
from pskd.deploy.card import ModelCard
from pskd.deploy.predict import read_recording
from pskd.errors import UserError

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CARD = ModelCard(model="compact_cnn", options={}, streams=["accelerometer"], channels=3, seq_len=32, rate_hz=50.0,
                 window_s=2.0, units="g", class_names=["a", "b"])

cells = st.one_of(st.text(max_size=12), st.integers(-5, 100).map(str), st.floats(allow_nan=True).map(str),
                  st.sampled_from(["", "acc/x.csv", "acc/../../etc/passwd", "/abs.npy", "walk", "0", "-1", "nan"]))
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 30), st.text(max_size=6)),
                           lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                   st.dictionaries(st.text(max_size=8), inner, max_size=5)),
                           max_leaves=20)


def expect_own_error(call):
    try:
        call()
    except UserError as err:
        assert "\n" not in str(err) and str(err)


@FAST
@given(header=st.lists(st.sampled_from(["clip_id", "label", "subject", "trial", "session", "accelerometer",
                                        "accelerometer_rate", "skeleton", "skeleton_rate", "extra"]), max_size=8),
       rows=st.lists(st.lists(cells, max_size=9), max_size=6))
def test_any_manifest_loads_or_is_refused(header, rows):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "acc").mkdir()
        np.savetxt(root / "acc" / "x.csv", np.zeros((40, 3)), delimiter=",")
        text = "\n".join(",".join(row) for row in [header, *rows])
        (root / "manifest.csv").write_text(text, encoding="utf-8")
        expect_own_error(lambda: folder.load(root))


@FAST
@given(data=json_values)
def test_any_layout_json_is_a_layout_or_refused(data):
    expect_own_error(lambda: layout_from_json(data, "layout.json"))


@FAST
@given(text=st.text(alphabet="0123456789.,-e \ntimeaxyznN", max_size=300))
def test_any_csv_recording_is_read_or_refused(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rec.csv"
        path.write_text(text, encoding="utf-8")
        expect_own_error(lambda: read_recording(path, CARD))


@FAST
@given(raw=st.binary(max_size=300), shape=st.lists(st.integers(0, 10**7), max_size=3))
def test_any_npy_recording_is_read_or_refused(raw, shape):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rec.npy"
        with open(path, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False,
                                                          "shape": tuple(shape)})
            handle.write(raw)
        expect_own_error(lambda: read_recording(path, CARD))
        (Path(tmp) / "junk.npy").write_bytes(raw)
        expect_own_error(lambda: read_recording(Path(tmp) / "junk.npy", CARD))


@FAST
@given(values=st.dictionaries(st.sampled_from(list(ModelCard.__dataclass_fields__)), json_values, max_size=12))
def test_any_model_card_is_a_card_or_refused(values):
    expect_own_error(lambda: ModelCard.from_dict(values, "model.onnx"))
    expect_own_error(lambda: ModelCard.from_dict({**json.loads(CARD.to_json()), **values}, "model.onnx"))


@FAST
@given(key=st.lists(st.sampled_from(["train", "epochs", "data", "labels", "fraction", "student", "options", "seed",
                                     "teachers", "x", "", "distill", "terms"]), min_size=1, max_size=4).map(".".join),
       value=st.one_of(st.text(max_size=10), st.integers(-10, 10**20).map(str), st.just("[1, 2]"), st.just("{a: 1}")))
def test_any_override_builds_a_config_or_is_refused(key, value):
    expect_own_error(lambda: build_config({}, [f"{key}={value}"]))
