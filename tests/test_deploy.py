"""On the watch: export parity, int8, the cost benchmark, and prediction over a recording whose actions are known."""

import json
import pickle

import numpy as np
import pytest
import torch
from conftest import CLASSES, TRAIN, recording_of, run_cli
from torch import nn

from pskd.data import synthetic
from pskd.data.clip import ACCELEROMETER
from pskd.data.transforms import resample
from pskd.deploy import bench as bench_module
from pskd.deploy import export as export_module
from pskd.deploy.bench import bench_run, ratios, table
from pskd.deploy.card import ModelCard
from pskd.deploy.export import ExportError, export_run
from pskd.deploy.predict import Recording, open_classifier, predict_recording, read_recording, score_segments
from pskd.deploy.runtime import onnx_card
from pskd.deploy.sources import G
from pskd.deploy.stream import Segmenter, Windower, resample_windows
from pskd.deploy.student import load_student
from pskd.errors import DataError, UserError

pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) is not installed")

def test_model_card_travels_with_the_checkpoint(trained):
    run_dir, _ = trained
    model, card = load_student(run_dir)
    assert card.class_names == synthetic.CLASS_NAMES[:CLASSES] and card.streams == [ACCELEROMETER]
    assert (card.seq_len, card.channels, card.rate_hz, card.units) == (64, 3, 50.0, "g")
    # the window is the median duration of the training clips (lead + action + tail, 2.5 to 6 s here)
    assert 2.5 < card.window_s < 6.0
    logits, probabilities = model(torch.zeros(2, 64, 3))
    assert logits.shape == (2, CLASSES) and torch.allclose(probabilities.sum(1), torch.ones(2))


def test_export_matches_pytorch_and_int8_stays_close(trained):
    run_dir, report = trained
    fp32, int8 = run_dir / "export" / "student.onnx", run_dir / "export" / "student.int8.onnx"
    assert fp32.is_file() and int8.is_file() and not list((run_dir / "export").glob("*.incomplete"))
    assert report["onnx_fp32"]["max_abs_logit_difference"] <= report["onnx_fp32"]["tolerance"]
    assert report["onnx_fp32"]["accuracy"] == report["pytorch"]["accuracy"]
    assert report["onnx_int8"]["agreement_with_fp32"] >= 0.9
    assert abs(report["onnx_int8"]["accuracy_drop"]) <= 0.05
    assert onnx_card(int8) == onnx_card(fp32) == load_student(run_dir)[1]
    # the ONNX model answers for any batch size, and as PyTorch does
    model, _ = load_student(run_dir)
    clips = np.random.default_rng(1).normal(0, 1, (7, 64, 3)).astype(np.float32)
    _, classify = open_classifier(fp32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(clips))[1].numpy()
    np.testing.assert_allclose(classify(clips), expected, atol=1e-5)
    assert json.loads((run_dir / "export" / "student.onnx.json").read_text())["test_clips"] == report["test_clips"]


def test_export_refuses_a_model_that_disagrees_and_writes_nothing(trained, tmp_path, monkeypatch):
    run_dir, _ = trained
    real = export_module.run_onnx
    monkeypatch.setattr(export_module, "run_onnx", lambda session, clips: real(session, clips) + 0.01)
    with pytest.raises(ExportError, match="differ from PyTorch"):
        export_run(run_dir, tmp_path / "out" / "m.onnx", log=lambda *a, **k: None)
    assert not (tmp_path / "out").exists()  # the folder it made goes too
    with pytest.raises(UserError, match="must end in .onnx"):
        export_run(run_dir, tmp_path / "m.bin", log=lambda *a, **k: None)


def test_export_over_an_existing_model_needs_overwrite(trained, tmp_path):
    run_dir, _ = trained
    target = tmp_path / "mine" / "m.onnx"
    target.parent.mkdir()
    target.write_bytes(b"someone's model")
    with pytest.raises(UserError, match="already exists; export elsewhere with --out, or replace it with --overwrite"):
        export_run(run_dir, target, log=lambda *a, **k: None)
    with pytest.raises(UserError, match="refusing: it is not a pskd export"):  # not pskd's: never replaced
        export_run(run_dir, target, log=lambda *a, **k: None, overwrite=True)
    assert target.read_bytes() == b"someone's model" and sorted(p.name for p in target.parent.iterdir()) == ["m.onnx"]
    target.unlink()
    export_run(run_dir, target, log=lambda *a, **k: None)
    report = export_run(run_dir, target, log=lambda *a, **k: None, overwrite=True)  # an export of pskd's: replaced
    assert report["onnx_fp32"]["accuracy"] == report["pytorch"]["accuracy"] and target.stat().st_size > 1000
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def _flops_by_hand(model: nn.Module, clip: torch.Tensor) -> int:
    """2 x multiply-adds of every convolution and linear layer, from the shapes each one sees."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv1d):
            per_output = module.in_channels // module.groups * module.kernel_size[0]
            total += 2 * output.numel() * per_output
        elif isinstance(module, nn.Linear):
            total += 2 * output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Linear))]
    with torch.inference_mode():
        model(clip)
    for handle in handles:
        handle.remove()
    return total


def test_bench_reports_cost_and_latency(trained, tmp_path):
    run_dir, _ = trained
    result = bench_run(run_dir, warmup=2, repeats=10, max_seconds=2.0, log=lambda *a, **k: None)
    model, card = load_student(run_dir)
    assert result["params"] == sum(p.numel() for p in model.parameters())
    assert result["flops"] == _flops_by_hand(model, torch.zeros(1, card.seq_len, card.channels))
    litert = {"tflite_fp32", "tflite_int8"} if bench_module._available("tflite") else set()
    assert set(result["latency_ms"]) == {"pytorch", "onnx_fp32", "onnx_int8"} | litert
    assert all(v > 0 for v in result["latency_ms"].values())
    assert result["size_bytes"]["onnx_fp32"] == (run_dir / "export" / "student.onnx").stat().st_size
    assert json.loads((run_dir / "bench.json").read_text())["flops"] == result["flops"]
    assert ratios([result, result])[1]["latency"]["onnx_fp32"] == 1.0
    assert "ONNX Runtime int8" in table([result])


def test_bench_command_writes_json(trained, tmp_path, capsys):
    run_dir, _ = trained
    code, out, err = run_cli(["bench", str(run_dir), "--repeats", "5", "--warmup", "1", "--json",
                              str(tmp_path / "b.json")], capsys)
    assert code == 0, err
    figures = json.loads((tmp_path / "b.json").read_text())
    assert {"params", "flops", "latency_ms", "size_bytes"} <= set(figures) and "parameters" in out


@pytest.mark.parametrize("form", ["onnx", "run_dir"])
def test_predict_recovers_the_actions_of_a_recording(trained, form):
    run_dir, _ = trained
    signal, truth = recording_of([2, 0, 3, 1, 2])
    model = run_dir / "export" / "student.onnx" if form == "onnx" else run_dir
    card, classify = open_classifier(model)
    result = predict_recording(Recording(signal.astype(np.float64), 50.0, "rec"), card, classify)
    # the student is right on about 85 % of single clips: a stray short segment may remain, but most of the time
    # is labelled right and each action is what covers most of its own span
    accuracy, majority = score_segments(result.segments, truth, card.class_names)
    assert accuracy >= 0.8 and majority == [2, 0, 3, 1, 2], result.segments
    assert len(result.segments) <= 8
    assert result.segments[0]["start_s"] == 0.0 and result.segments[-1]["end_s"] == pytest.approx(truth[-1][2], abs=0.05)
    assert np.shape(result.probabilities) == (len(result.windows), CLASSES) == (result.summary.windows, CLASSES)


def test_predict_command_at_another_rate_in_m_s2(trained, tmp_path, capsys):
    """100 Hz, in m/s^2, with a time column: resampled to 50 Hz and converted to g before windowing."""
    run_dir, _ = trained
    signal, truth = recording_of([1, 3])
    t50 = np.arange(len(signal)) / 50.0
    t100 = np.arange(2 * len(signal) - 1) / 100.0
    fast = np.stack([np.interp(t100, t50, signal[:, c]) for c in range(3)], axis=1) * G
    path = tmp_path / "rec.csv"
    np.savetxt(path, np.column_stack([t100, fast]), delimiter=",", header="time,ax,ay,az", comments="", fmt="%.6f")
    code, out, err = run_cli(["predict", str(run_dir / "export" / "student.int8.onnx"), "--input", str(path),
                              "--units", "m/s2", "--out", str(tmp_path / "w.csv"), "--segments",
                              str(tmp_path / "s.jsonl")], capsys)
    assert code == 0, err
    assert "at 100 Hz (rate from timestamps)" in out
    found = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [s["label"] for s in found] == [synthetic.CLASS_NAMES[1], synthetic.CLASS_NAMES[3]]
    code, out, err = run_cli(["predict", str(run_dir / "export" / "student.onnx"), "--input", str(path),
                              "--units", "m/s2", "--out", "-"], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and rows[0]["window"] == 0 and "p_wave" in rows[0] and "segments" in err
    header = (tmp_path / "w.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["window", "start_s", "end_s", "label", "confidence"]
    assert header[5:] == [f"p_{name}" for name in synthetic.CLASS_NAMES[:CLASSES]]


BAD_INPUTS = {
    "empty.csv": ("", [], "is empty"),
    "header_only.csv": ("x,y,z\n", [], "a header row but no data"),
    "two_columns.csv": ("1,2\n3,4\n", [], "2 data columns, but the model reads 3"),
    "ragged.csv": ("1,2,3\n4,5\n", [], "line 2 has 2 columns"),
    "words.csv": ("1,2,3\n4,five,6\n", [], "line 2, column 2: 'five' is not a number"),
    "nan.csv": ("1,2,3\n4,nan,6\n", [], "line 2: a value is NaN or infinite"),
    "rate_zero.csv": ("1,2,3\n4,5,6\n", ["--rate", "0"], "--rate 0: expected 6.25 to 1600 Hz"),
    "short.csv": ("1,2,3\n4,5,6\n", [], "shorter than one"),
    "backwards.csv": ("t,x,y,z\n0,1,2,3\n0.02,1,2,3\n0.01,1,2,3\n", [], "not strictly increasing"),
    "hop.csv": ("\n".join(["0,0,1"] * 500), ["--hop", "-1"], "--hop -1"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_predict_bad_inputs_are_one_line_errors(trained, tmp_path, capsys, name):
    run_dir, _ = trained
    text, extra, message = BAD_INPUTS[name]
    path = tmp_path / name
    path.write_text(text)
    code, _, err = run_cli(["predict", str(run_dir), "--input", str(path), "--out", str(tmp_path / "w.csv"), *extra],
                           capsys)
    assert code == 2 and err.strip().count("\n") == 0 and message in err, err
    assert not (tmp_path / "w.csv").exists()


def test_predict_bad_npy_and_model_files(trained, tmp_path, capsys):
    run_dir, _ = trained
    np.save(tmp_path / "cube.npy", np.zeros((10, 3, 2)))
    code, _, err = run_cli(["predict", str(run_dir), "--input", str(tmp_path / "cube.npy")], capsys)
    assert code == 2 and "shape (10, 3, 2)" in err
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    np.save(tmp_path / "ok.npy", np.zeros((1000, 3)))
    code, _, err = run_cli(["predict", str(tmp_path / "junk.onnx"), "--input", str(tmp_path / "ok.npy")], capsys)
    assert code == 2 and "not a readable ONNX model" in err


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoints_load_without_running_pickled_code(trained, tmp_path):
    run_dir, _ = trained
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state_dict": {}, "meta": {}, "x": Payload()}, protocol=2))
    with pytest.raises(DataError, match="not a safe pskd checkpoint"):
        load_student(evil)
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes((run_dir / "checkpoints" / "best.pt").read_bytes()[:200])
    with pytest.raises(DataError, match="not a safe pskd checkpoint"):
        load_student(truncated)
    with pytest.raises(DataError, match="no such checkpoint"):
        load_student(tmp_path / "missing")


def test_each_window_is_resampled_as_training_clips_are():
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(400, 3))
    windower = Windower(150, 50, 3)
    starts, windows, bounds = windower.push(signal[:230], np.arange(230) / 50)
    more = windower.push(signal[230:], np.arange(230, 400) / 50)
    last = windower.finish()
    starts = np.concatenate([starts, more[0], last[0]])
    windows = np.concatenate([windows, more[1], last[1]])
    assert starts.tolist() == [0, 50, 100, 150, 200, 250, 250] or starts.tolist() == [0, 50, 100, 150, 200, 250]
    assert starts[-1] == 400 - 150 and len(windower.values) <= 150 + 170  # one window plus one push at most
    clips = resample_windows(windows, 64)
    for clip, start in zip(clips, starts):  # the low-pass and the interpolation of transforms.resample
        np.testing.assert_allclose(clip, resample(signal[start : start + 150], 64), atol=1e-5)
    assert bounds[0].tolist() == [0.0, 149 / 50]


def test_segments_need_min_windows_to_change_and_tile_the_recording():
    names = ["a", "b", "c"]
    segmenter = Segmenter(min_windows=2, hop_s=0.5, names=names)
    found = []
    for i, label in enumerate([0, 0, 0, 0, 1, 0, 0, 2, 2, 2, 2, 2]):
        found += segmenter.push(1.0 + 0.5 * i, np.eye(3)[label] * 0.8 + 0.1)
    found += segmenter.finish(7.0)
    assert [s["label"] for s in found] == ["a", "c"]  # the lone b stays in a
    assert found[0]["start_s"] == 0.0 and found[-1]["end_s"] == 7.0
    assert found[0]["end_s"] == found[1]["start_s"] == pytest.approx(1.0 + 0.5 * 7 - 0.25)
    assert found[1]["confidence"] == pytest.approx(0.9)
    # flicker that never holds: one segment, the label with the most votes, a confidence that is a mean
    segmenter = Segmenter(min_windows=3, hop_s=0.5, names=names)
    for i, label in enumerate([1, 2, 1, 2, 1]):
        assert segmenter.push(1.0 + 0.5 * i, np.eye(3)[label] * 0.8 + 0.1) == []
    (only,) = segmenter.finish(4.0)
    assert (only["label"], only["start_s"], only["end_s"]) == ("b", 0.0, 4.0)
    assert only["confidence"] == pytest.approx((3 * 0.9 + 2 * 0.1) / 5)
    # flicker before the first label that holds belongs to the first segment
    segmenter = Segmenter(min_windows=2, hop_s=0.5, names=names)
    found = []
    for i, label in enumerate([1, 2, 0, 0, 0]):
        found += segmenter.push(1.0 + 0.5 * i, np.eye(3)[label] * 0.8 + 0.1)
    found += segmenter.finish(4.0)
    assert [(s["label"], s["start_s"]) for s in found] == [("a", 0.0)]
    assert found[0]["confidence"] == pytest.approx((3 * 0.9 + 2 * 0.1) / 5)


def test_read_recording_units_and_rates(tmp_path):
    card = ModelCard("compact_cnn", {}, [ACCELEROMETER], 3, 64, 50.0, 3.0, "g", ["a", "b"])
    path = tmp_path / "r.csv"
    path.write_text("0,0,9.80665\n0,0,9.80665\n")
    recording = read_recording(path, card, units="m/s2")
    np.testing.assert_allclose(recording.signal[:, 2], 1.0)
    assert recording.rate is None and recording.times is None
    with pytest.raises(UserError, match="--units furlongs"):
        read_recording(path, card, units="furlongs")


def test_evaluate_gives_the_run_figures_for_a_run_and_its_onnx_export(trained, tmp_path, capsys):
    run_dir, report = trained
    code, out, err = run_cli(["evaluate", str(run_dir), "--out", str(tmp_path / "pt")], capsys)
    assert code == 0, err
    figures = json.loads((tmp_path / "pt" / "metrics.json").read_text())["test"]
    delivered = json.loads((run_dir / "metrics.json").read_text())["student"]["test"]
    assert figures["accuracy"] == delivered["accuracy"] and figures["confusion_matrix"] == delivered["confusion_matrix"]
    assert {"report.md", "confusion_matrix.png", "predictions.csv"} <= {p.name for p in (tmp_path / "pt").iterdir()}
    data = [a for a in TRAIN if a.startswith("data.")]
    code, out, err = run_cli(["evaluate", str(run_dir / "export" / "student.onnx"), "--out", str(tmp_path / "onnx"),
                              *[x for a in data for x in ("--set", a)]], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "onnx" / "metrics.json").read_text())["test"]["accuracy"] == \
        report["onnx_fp32"]["accuracy"]
    code, _, err = run_cli(["evaluate", str(run_dir), "--out", str(tmp_path / "other"),
                            "--set", "data.synthetic.classes=5"], capsys)
    assert code == 2 and "not the classes the model learnt" in err and not (tmp_path / "other").exists()
    code, _, err = run_cli(["evaluate", str(run_dir), "--out", str(tmp_path / "pt")], capsys)
    assert code == 2 and "--overwrite" in err


@pytest.mark.parametrize("change, message", [
    ({"class_names": ["a", "b", "c", "d", "e"]}, "its model card says class_names 5, the model has 4"),
    ({"seq_len": 96}, "its model card says seq_len 96, the model has 64"),
    ({"rate_hz": 1e9}, "invalid model card field(s) ['rate_hz']"),
    ({"class_names": ["a", "a", "b", "c"]}, "invalid model card field(s) ['class_names']"),
    ({"class_names": ["x" * 500, "b", "c", "d"]}, "invalid model card field(s) ['class_names']"),
])
def test_a_tampered_onnx_card_is_refused_with_the_field_named(trained, tmp_path, capsys, change, message):
    import onnx

    from pskd.deploy.card import CARD_KEY

    run_dir, _ = trained
    model = onnx.load(run_dir / "export" / "student.onnx")
    entry = next(p for p in model.metadata_props if p.key == CARD_KEY)
    entry.value = json.dumps({**json.loads(entry.value), **change})
    onnx.save(model, tmp_path / "tampered.onnx")
    (tmp_path / "rec.csv").write_text("0,0,1\n" * 400)
    code, _, err = run_cli(["predict", str(tmp_path / "tampered.onnx"), "--input", str(tmp_path / "rec.csv"),
                            "--out", str(tmp_path / "windows.csv")], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "windows.csv").exists()


def test_a_card_too_large_or_too_deep_is_refused_before_parsing():
    from pskd.deploy.card import parse_card
    from pskd.errors import DataError

    with pytest.raises(DataError, match="at most"):
        parse_card("{" + " " * 2_000_000 + "}", "m.onnx")
    with pytest.raises(DataError, match="not valid JSON"):
        parse_card("[" * 100_000 + "]" * 100_000, "m.onnx")
