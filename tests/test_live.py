"""On the watch, live: a stream on standard input with known actions, the same output as a file, windows that
come out while the stream is open, option bounds, the timeline picture, bounded memory, and the LiteRT route."""

import json
import os
import select
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import recording_of, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from pskd.data import synthetic
from pskd.deploy.predict import open_classifier
from pskd.deploy.stream import Smoother, Windower
from pskd.deploy.timeline import MAX_BINS, Envelope, score_segments

pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) is not installed")

ACTIONS = [1, 3, 0, 2]
PSKD = [sys.executable, "-m", "pskd", "predict"]


def stream_text(signal: np.ndarray, rate: float = 50.0, timed: bool = True) -> str:
    t = np.arange(len(signal)) / rate
    rows = np.column_stack([t, signal]) if timed else signal
    lines = "\n".join(",".join(f"{v:.6f}" for v in row) for row in rows)
    return ("t,ax,ay,az\n" if timed else "") + lines + "\n"


def pskd(args: list[str], text: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*PSKD, *args], input=text, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def known_stream(trained, tmp_path_factory):
    """The recording of ACTIONS as CSV text, and what `pskd predict --input -` made of it."""
    run_dir, _ = trained
    signal, truth = recording_of(ACTIONS)
    text = stream_text(signal)
    folder = tmp_path_factory.mktemp("live")
    done = pskd([str(run_dir / "export" / "student.onnx"), "--input", "-", "--out", "-",
                 "--segments", str(folder / "segments.jsonl")], text)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    segments = [json.loads(line) for line in (folder / "segments.jsonl").read_text().splitlines()]
    return text, truth, rows, segments, done.stderr, folder


def test_a_stream_on_standard_input_gives_its_actions_and_times(trained, known_stream):
    run_dir, _ = trained
    text, truth, rows, segments, err, _ = known_stream
    card, _ = open_classifier(run_dir / "export" / "student.onnx")
    duration = truth[-1][2]
    window = round(card.window_s * 50) / 50
    # a window every 0.5 s, each lasting the model's window, the last one flush with the end of the stream
    assert [r["window"] for r in rows] == list(range(len(rows)))
    assert [r["start_s"] for r in rows[:-1]] == pytest.approx([0.5 * k for k in range(len(rows) - 1)])
    assert all(r["end_s"] - r["start_s"] == pytest.approx(window, abs=1e-3) for r in rows)
    assert rows[-1]["end_s"] == pytest.approx(duration, abs=1e-3)
    assert all(0 < r["confidence"] <= 1 and r["label"] in card.class_names for r in rows)
    # the segments tile the stream and each true action is what covers most of its own span
    assert segments[0]["start_s"] == 0.0 and segments[-1]["end_s"] == pytest.approx(duration, abs=1e-3)
    assert all(a["end_s"] == b["start_s"] for a, b in zip(segments, segments[1:]))
    fraction, majority = score_segments(segments, truth, card.class_names)
    assert majority == ACTIONS and fraction >= 0.75, segments
    assert "rate from timestamps" in err and f"{len(rows)} windows" in err


def test_a_file_gives_what_the_stream_gives(trained, known_stream):
    run_dir, _ = trained
    text, _, rows, segments, _, folder = known_stream
    (folder / "rec.csv").write_text(text)
    done = pskd([str(run_dir / "export" / "student.onnx"), "--input", str(folder / "rec.csv"), "--out",
                 str(folder / "w.jsonl"), "--segments", str(folder / "s.jsonl")])
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in (folder / "w.jsonl").read_text().splitlines()] == rows
    assert [json.loads(line) for line in (folder / "s.jsonl").read_text().splitlines()] == segments


def test_a_window_comes_out_while_the_stream_is_still_open(trained):
    run_dir, _ = trained
    signal, _ = recording_of([2])
    lines = stream_text(signal[:400]).splitlines(keepends=True)
    process = subprocess.Popen([*PSKD, str(run_dir / "export" / "student.onnx"), "--input", "-", "--out", "-"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               bufsize=1)
    try:
        card, _ = open_classifier(run_dir / "export" / "student.onnx")
        first_window = round(card.window_s * 50)
        process.stdin.write("".join(lines[: first_window + 1]))  # the header and one window of samples
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], 60)
        assert ready, "no window came out while the stream was open"
        row = json.loads(process.stdout.readline())
        assert row["window"] == 0 and row["end_s"] == pytest.approx(first_window / 50, abs=1e-3)
        process.stdin.write("".join(lines[first_window + 1 :]))
        process.stdin.close()
        rest = process.stdout.read()
        assert process.wait(60) == 0
        assert len(rest.splitlines()) >= 2
    finally:
        process.kill()


LONG = "0," * 3000 + "0\n"


@pytest.mark.parametrize("extra, text, message", [
    (["--rate", "1e6"], None, "--rate 1e+06: expected 6.25 to 1600 Hz"),
    (["--rate", "nan"], None, "--rate nan"),
    (["--smooth", "100001"], None, "--smooth 100001: expected an odd number of windows from 1 to 101"),
    (["--smooth", "4"], None, "--smooth 4"),
    (["--window", "1000"], None, "--window 1000: expected"),
    (["--hop", "0"], None, "--hop 0: expected one sample"),
    (["--hop", "100"], None, "--hop 100: expected"),
    (["--min-segment", "-1"], None, "--min-segment -1: expected 0 to 300 s"),
    ([], LONG, "line 1 is longer than 4096 characters"),
    ([], "0,0,1\n" * 10 + "0,0\n", "line 11 has 2 columns, expected 3"),
    ([], "t,x,y,z\n0,0,0,1\n100,0,0,1\n", "its time column implies a rate of 0.01"),
])
def test_predict_options_and_streams_out_of_range_are_one_line_errors(trained, tmp_path, capsys, extra, text,
                                                                      message):
    run_dir, _ = trained
    path = tmp_path / "rec.csv"
    path.write_text(text if text is not None else "0,0,1\n" * 500)
    code, _, err = run_cli(["predict", str(run_dir), "--input", str(path), "--out", str(tmp_path / "w.csv"), *extra],
                           capsys)
    assert code == 2 and err.strip().count("\n") == 0 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.csv"]  # nothing half-written


def test_timeline_picture_with_the_true_segments(trained, known_stream, tmp_path, capsys):
    run_dir, _ = trained
    text, truth, _, _, _, _ = known_stream
    (tmp_path / "rec.csv").write_text(text)
    with (tmp_path / "truth.csv").open("w") as handle:
        handle.write("label,start_s,end_s\n")
        for action, start, end in truth:
            handle.write(f"{synthetic.CLASS_NAMES[action]},{start},{end}\n")
    code, out, err = run_cli(["predict", str(run_dir), "--input", str(tmp_path / "rec.csv"), "--plot",
                              str(tmp_path / "timeline.png"), "--truth", str(tmp_path / "truth.csv")], capsys)
    assert code == 0, err
    picture = (tmp_path / "timeline.png").read_bytes()
    assert picture[:8] == b"\x89PNG\r\n\x1a\n" and len(picture) > 20_000
    score = float(out.split("time recognised correctly: ")[1].split(" %")[0])
    assert score >= 75.0
    (tmp_path / "bad.csv").write_text("label,start_s,end_s\nflying,0,3\n")
    code, _, err = run_cli(["predict", str(run_dir), "--input", str(tmp_path / "rec.csv"), "--truth",
                            str(tmp_path / "bad.csv")], capsys)
    assert code == 2 and "segment 1: 'flying' is not one of the model's classes" in err


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=12), seed=st.integers(0, 1000))
def test_the_envelope_keeps_every_extreme_in_bounded_bins(sizes, seed):
    rng = np.random.default_rng(seed)
    envelope = Envelope(3)
    pieces = [rng.normal(size=(n, 3)) for n in sizes]
    first = 0
    for piece in pieces:
        envelope.push(np.arange(first, first + len(piece), dtype=float), piece)
        first += len(piece)
    everything = np.concatenate(pieces)
    assert len(envelope.times) <= MAX_BINS
    np.testing.assert_array_equal(envelope.low.min(axis=0), everything.min(axis=0))
    np.testing.assert_array_equal(envelope.high.max(axis=0), everything.max(axis=0))
    # bin k covers samples [k * size, (k + 1) * size): its extremes are exactly those samples'
    k = len(envelope.times) // 2
    chunk = everything[k * envelope.size : (k + 1) * envelope.size]
    np.testing.assert_array_equal(envelope.low[k], chunk.min(axis=0))
    assert envelope.times[k] == k * envelope.size


@settings(max_examples=40, deadline=None)
@given(count=st.integers(1, 60), width=st.sampled_from([1, 3, 5, 9]), splits=st.lists(st.integers(1, 7), max_size=8))
def test_online_smoothing_is_the_centred_average(count, width, splits):
    rows = np.random.default_rng(count).random((count, 4))
    smoother = Smoother(width)
    out, first = [], 0
    for size in [*splits, count]:
        out += smoother.push(rows[first : first + size])
        first = min(count, first + size)
    out += smoother.finish()
    k = width // 2
    assert [i for i, _ in out] == list(range(count))
    for i, vector in out:
        np.testing.assert_allclose(vector, rows[max(0, i - k) : i + k + 1].mean(axis=0))


def test_the_rolling_buffer_holds_one_window_and_one_read():
    windower = Windower(150, 25, 3)
    rng = np.random.default_rng(0)
    emitted = 0
    for _ in range(500):
        values = rng.normal(size=(40, 3))
        starts, _, _ = windower.push(values, np.zeros(40))
        emitted += len(starts)
        assert len(windower.values) <= 150 + 40
    assert emitted == (500 * 40 - 150) // 25 + 1


# LiteRT: skipped when the `litert` extra is not installed

@pytest.fixture(scope="module")
def tflite_export(trained, tmp_path_factory):
    pytest.importorskip("litert_torch", reason="the litert extra (litert-torch, ai-edge-litert) is not installed")
    from pskd.deploy.export import export_run

    run_dir, _ = trained
    out = tmp_path_factory.mktemp("tflite") / "student.tflite"
    return out, export_run(run_dir, out, int8=True, log=lambda *a, **k: None, fmt="tflite")


def test_litert_export_is_checked_against_pytorch(trained, tflite_export):
    run_dir, onnx_report = trained
    path, report = tflite_export
    assert report["tflite_fp32"]["accuracy"] == report["pytorch"]["accuracy"] == onnx_report["pytorch"]["accuracy"]
    assert report["tflite_fp32"]["max_abs_logit_difference"] <= report["tflite_fp32"]["tolerance"]
    assert abs(report["tflite_int8"]["accuracy_drop"]) <= 0.05
    assert path.with_name("student.int8.tflite").stat().st_size < path.stat().st_size / 2  # a third for the real student
    assert json.loads(path.with_name("student.tflite.json").read_text())["format"] == "tflite"
    # the card travels in the model, and LiteRT predicts what ONNX Runtime predicts
    card, classify = open_classifier(path)
    onnx_card, onnx_classify = open_classifier(run_dir / "export" / "student.onnx")
    assert card == onnx_card
    clips = np.random.default_rng(2).normal(0, 1, (5, card.seq_len, card.channels)).astype(np.float32)
    np.testing.assert_allclose(classify(clips), onnx_classify(clips), atol=1e-4)


def test_litert_export_that_disagrees_writes_nothing_and_bench_takes_model_files(trained, tflite_export, tmp_path,
                                                                                 monkeypatch, capsys):
    from pskd.deploy import export as export_module
    from pskd.deploy.export import ExportError, export_run

    run_dir, _ = trained
    path, _ = tflite_export
    real = export_module._tflite_logits
    monkeypatch.setattr(export_module, "_tflite_logits", lambda p, clips: real(p, clips) + 0.01)
    with pytest.raises(ExportError, match="LiteRT's logits differ from PyTorch's"):
        export_run(run_dir, tmp_path / "out" / "m.tflite", log=lambda *a, **k: None, fmt="tflite")
    assert not (tmp_path / "out").exists()  # the folder it made goes too
    monkeypatch.undo()
    code, out, err = run_cli(["bench", str(path), str(run_dir / "export" / "student.onnx"), "--repeats", "5",
                              "--warmup", "1", "--json", str(tmp_path / "b.json")], capsys)
    assert code == 0, err
    files = json.loads((tmp_path / "b.json").read_text())["files"]
    assert [f["runtime"] for f in files] == ["LiteRT", "ONNX Runtime"] and all(f["latency_ms"] > 0 for f in files)
    code, _, err = run_cli(["bench", str(path), str(tmp_path / "missing.tflite")], capsys)
    assert code == 2 and "missing.tflite: give a run directory" in err


def test_litert_models_predict_and_bad_ones_are_refused(trained, tflite_export, known_stream, tmp_path):
    from dataclasses import replace

    from pskd.deploy.litert import with_card

    path, _ = tflite_export
    text, _, rows, _, _, _ = known_stream
    done = pskd([str(path), "--input", "-", "--out", "-"], text)
    assert done.returncode == 0, done.stderr
    tflite_rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["label"] for r in tflite_rows] == [r["label"] for r in rows]
    (tmp_path / "junk.tflite").write_bytes(os.urandom(2000))
    card, _ = open_classifier(path)
    (tmp_path / "tampered.tflite").write_bytes(with_card(path.read_bytes(), replace(card, seq_len=96)))
    for name, message in (("junk.tflite", "not a readable LiteRT model"),
                          ("tampered.tflite", "its model card says seq_len 96")):
        done = pskd([str(tmp_path / name), "--input", "-"], text)
        assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_the_tiny_depthwise_student_converts_to_int8(tmp_path):
    """Depthwise-separable blocks put an average pooling beside a depthwise convolution: the quantised graph must
    give both one scale (deploy.litert._share_observers), or the converter refuses it."""
    pytest.importorskip("litert_torch", reason="the litert extra (litert-torch, ai-edge-litert) is not installed")
    from conftest import REPO, TRAIN

    from pskd.config import load_config
    from pskd.deploy.export import export_run
    from pskd.pipeline import run

    overrides = [a for a in TRAIN if not a.startswith(("student.", "train.epochs"))]
    run(load_config(REPO / "configs/utd_mhad/student_ce.yaml", [*overrides, "train.epochs=4",
                                                                "student.options.preset=tiny"]),
        tmp_path / "tiny", log=lambda *a, **k: None)
    report = export_run(tmp_path / "tiny", int8=True, log=lambda *a, **k: None, fmt="tflite")
    assert report["tflite_fp32"]["accuracy"] == report["pytorch"]["accuracy"]
    assert report["tflite_int8"]["agreement_with_fp32"] >= 0.8


def test_predict_keeps_up_with_a_fast_stream(trained):
    """Not a timing target (bench measures those): a sanity bound that the stream path is not quadratic."""
    run_dir, _ = trained
    signal = np.tile(recording_of([0, 1])[0], (20, 1))  # about 8 minutes at 50 Hz
    tic = time.perf_counter()
    done = pskd([str(run_dir / "export" / "student.onnx"), "--input", "-", "--out", "-"], stream_text(signal))
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == pytest.approx(len(signal) / 25, abs=8)
    assert time.perf_counter() - tic < 120
