"""The pictures and tables a person reads: one-seed figures without a made-up spread, subjects in numeric order,
learning curves with one axis per scale, confusion matrices whose class names fit, and the LiteRT converter's
harmless chatter kept off the terminal."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from conftest import run_cli
from test_folder_dataset import _rewrite_manifest, write_folder

from pskd.data import folder
from pskd.data.clip import natural_key
from pskd.data.utd_mhad import CLASS_NAMES as UTD_CLASSES
from pskd.evaluate.gains import plot_gain_map, results_table, spread, summarise
from pskd.evaluate.report import plot_confusion, plot_learning_curves, write_report


def _rows(seeds, variants=("ce", "kd")):
    return [{"point": {}, "seed": seed, "variant": variant, "accuracy": 0.80 + 0.02 * (variant != "ce") + 0.01 * seed,
             "macro_f1": 0.78 + 0.01 * seed, "val_accuracy": 0.82, "teachers": {"skeleton": 0.9} if variant == "kd"
             else {}} for seed in seeds for variant in variants]


def _results(seeds):
    return summarise("synthetic", "cross_subject", "compact_cnn", list(seeds), _rows(seeds), ["ce", "kd"], {}, 12.0)


# one seed: the mean alone, and how many seeds each row stands on


def test_one_seed_rows_print_the_mean_alone_and_say_how_many_seeds():
    text = results_table(_results([0]))
    assert "±" not in text  # no "± 0.00": one value has no spread
    assert "| method | seeds | validation accuracy (%) |" in text
    assert "| kd | 1 | 82.00 | 82.00 | 78.00 | +2.00 |" in text and "| skeleton | 1 | 90.00 |" in text
    assert "One seed" in text


def test_several_seeds_keep_their_spread():
    text = results_table(_results([0, 1, 2]))
    assert "| kd | 3 | 82.00 ± 0.00 | 83.00 ± 1.00 | 79.00 ± 1.00 | +2.00 ± 0.00 |" in text
    assert "Mean ± standard deviation over the seeds" in text
    assert spread({"mean": 0.5, "std": 0.1, "values": [0.4, 0.6]}, signed=True) == "+50.00 ± 10.00"
    assert spread({"mean": 0.5, "std": 0.0, "values": [0.5]}) == "50.00"


def test_the_gain_map_draws_no_error_bars_for_one_seed(tmp_path):
    one = plot_gain_map(_results([0]), tmp_path / "one.png")
    three = plot_gain_map(_results([0, 1, 2]), tmp_path / "three.png")
    assert [c.has_yerr for c in one.axes[0].containers] == [False]  # kd's gain: no spread to draw
    assert [c.has_yerr for c in three.axes[0].containers] == [True]
    assert one.get_suptitle().endswith("gain over cross-entropy, 1 seed") and "3 seeds" in three.get_suptitle()
    assert (tmp_path / "one.png").stat().st_size > 5_000


# subjects in numeric order


def test_natural_key_orders_numbers_as_numbers():
    assert sorted(["10", "2", "1", "11"], key=natural_key) == ["1", "2", "10", "11"]
    assert sorted(["s10", "s2", "S1", "anna"], key=natural_key) == ["anna", "S1", "s2", "s10"]


def test_folder_subjects_2_and_10_in_numeric_order(tmp_path, capsys):
    named = write_folder(tmp_path / "named", subjects=(1, 2, 10), classes=2, trials=2, layout=False)
    info, clips = folder.load(named)  # person1, person2, person10: numbered in that order, not person10 second
    assert info.subject_names == {"1": "person1", "2": "person2", "3": "person10"}
    numbered = write_folder(tmp_path / "numbered", subjects=(1, 2, 10), classes=2, trials=2, layout=False)
    _rewrite_manifest(numbered, "subject", {i: s for i, s in enumerate(["1"] * 4 + ["2"] * 4 + ["10"] * 4)})
    code, out, err = run_cli(["data", "check", "folder", "--data-dir", str(numbered), "--json"], capsys)
    summary = json.loads(out)
    assert code == 0, err
    assert summary["subjects"] == [1, 2, 10] and list(summary["clips_per_subject"]) == ["1", "2", "10"]
    code, out, _ = run_cli(["data", "check", "folder", "--data-dir", str(named)], capsys)
    assert "per subject person1: 4, person2: 4, person10: 4" in out


def test_the_report_lists_test_subjects_in_numeric_order(tmp_path):
    per_class = [{"class": name, "precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1} for name in "ab"]
    scores = {"accuracy": 1.0, "macro_f1": 1.0, "per_class": per_class, "confusion_matrix": [[1, 0], [0, 1]]}
    student = {"model": "compact_cnn", "streams": ["accelerometer"], "params": 10, "epochs_trained": 1, "best_epoch": 1,
               "val": scores, "val_last": scores, "test_best": scores, "test_last": scores, "test": scores,
               "test_per_subject": {s: {"accuracy": 1.0, "clips": 1} for s in ("10", "2", "1")}}
    metrics = {"name": "r", "method": "ce", "dataset": "folder", "protocol": "kfold", "seed": 0, "device": "cpu",
               "wall_time_s": 1.0, "student": student, "split": {"train": 1, "val": 1, "test": 3,
               "train_subjects": [3], "val_subjects": [4], "test_subjects": [1, 2, 10]}}
    text = write_report(metrics, ["a", "b"], tmp_path / "report.md")
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "clips" not in line
            and line.count("|") == 4]
    assert rows == ["1", "2", "10"] and "| # | class | precision (%) | recall (%) | F1 (%) | clips |" in text


def _draw(fig):
    """Draws a figure the plot functions returned (saved, then closed: a fresh Agg canvas); its renderer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


# learning curves


def _history(epochs=7, with_val=True):
    rows = []
    for epoch in range(1, epochs + 1):
        row = {"epoch": epoch, "lr": 0.01, "train_ce": 2.0 / epoch, "train_kd": 22.0 / epoch,
               "train_accuracy": 0.1 * epoch}
        row["train_loss"] = row["train_ce"] + row["train_kd"]
        if with_val:
            row |= {"val_loss": 3.0 / epoch, "val_accuracy": 0.09 * epoch}
        rows.append(row)
    return rows


def test_learning_curves_give_each_loss_its_own_axis_and_whole_epochs(tmp_path):
    fig = plot_learning_curves(_history(), 5, tmp_path / "curves.png", "run")
    train, val, accuracy = fig.axes
    assert train.get_title() == "training loss" and val.get_title() == "validation loss"
    assert max(max(line.get_ydata()) for line in train.get_lines()[:1]) == pytest.approx(24.0)
    assert max(val.get_lines()[0].get_ydata()) == pytest.approx(3.0) and val.get_ylim()[1] < 5
    assert accuracy.get_ylabel() == "accuracy (%)"
    _draw(fig)
    for axis in fig.axes:
        ticks = [t for t in axis.get_xticks() if axis.get_xlim()[0] <= t <= axis.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
    refit = plot_learning_curves(_history(3, with_val=False), 3, tmp_path / "refit.png", "refit")
    assert [a.get_title() for a in refit.axes] == ["training loss", "accuracy"]
    assert (tmp_path / "curves.png").stat().st_size > 10_000


# confusion matrix


def _labels_inside(fig) -> list[str]:
    """The tick labels (and the title) that stick out of the figure, after drawing."""
    renderer = _draw(fig)
    box = fig.bbox
    texts = [*fig.axes[0].get_xticklabels(), *fig.axes[0].get_yticklabels(), fig.axes[0].title]
    out = []
    for text in texts:
        extent = text.get_window_extent(renderer)
        if extent.x0 < box.x0 - 1 or extent.y0 < box.y0 - 1 or extent.x1 > box.x1 + 1 or extent.y1 > box.y1 + 1:
            out.append(text.get_text())
    return out


@pytest.mark.parametrize("names", [UTD_CLASSES, ["walk", "run"], ["right hand draw circle (counter clockwise)", "x"]],
                         ids=["utd_27", "two_short", "two_long"])
def test_confusion_matrix_names_every_class_in_full_inside_the_figure(tmp_path, names):
    n = len(names)
    counts = (np.eye(n, dtype=int) * 9 + 1).tolist()
    fig = plot_confusion(counts, list(names), tmp_path / "cm.png", "a run: kd student on utd_mhad\ntest accuracy 90 %")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == [f"{i + 1} {name}" for i, name in enumerate(names)]  # nothing cut
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == labels
    assert _labels_inside(fig) == []
    matrix = fig.axes[0].get_window_extent()  # and the names did not squeeze the matrix to fit
    assert min(matrix.width, matrix.height) / fig.dpi >= max(2.0, 0.25 * n)
    width, height = fig.get_size_inches()
    assert width < 20 and height < 20 and (tmp_path / "cm.png").stat().st_size > 5_000


# LiteRT's chatter


def test_converter_output_shows_errors_only(capfd, monkeypatch):
    from pskd.deploy import litert

    for name in litert.QUIET_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)  # _quiet sets them for the process; restored after the test

    with litert._quiet():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on. You may see ...\n")
        os.write(1, b"(00:00) [START] LiteRT-Torch Convert\n")
        print("progress", file=sys.stderr)
        import warnings

        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, stacklevel=1)
        os.write(2, b"E0000 00:00:1.0 1 converter.cc:1] failed to legalize op\n")
    out, err = capfd.readouterr()
    assert out == "" and err.strip() == "E0000 00:00:1.0 1 converter.cc:1] failed to legalize op"
    with pytest.raises(RuntimeError, match="broken"):
        with litert._quiet():
            os.write(2, b"oneDNN custom operations are on.\n")
            os.write(2, b"loc(fused): unsupported op aten.foo\n")
            raise RuntimeError("broken")
    _, err = capfd.readouterr()
    assert err.strip() == "loc(fused): unsupported op aten.foo"  # a failure shows its context, not the notices
    assert os.environ["LITERT_TORCH_SHOW_PROGRESS"] == "n"


# the timeline of a prediction


def test_timeline_scale_sits_beside_the_signal_and_labels_fit(tmp_path, monkeypatch):
    from pskd.deploy import timeline as tl
    from pskd.evaluate import report

    drawn = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path, dpi, root=None: drawn.append(fig))
    line = tl.Timeline(3)
    times = np.arange(0, 20, 0.02)
    line.samples(times, np.stack([np.sin(times), np.cos(times), 0.5 * np.sin(3 * times)], axis=1))
    for start in np.arange(0, 16, 0.5):
        line.window({"start_s": start, "end_s": start + 4, "confidence": 0.7}, np.zeros(2))
    line.segment({"label": "walk", "start_s": 0.0, "end_s": 9.0})
    line.segment({"label": "right hand draw circle (clockwise)", "start_s": 9.0, "end_s": 20.0})
    names = ["walk", "right hand draw circle (clockwise)"]
    score = tl.draw(line, names, tmp_path / "t.png", "a recording", truth=[(0, 0.0, 10.0), (1, 10.0, 20.0)])
    assert score == pytest.approx(0.95)
    fig = drawn[0]
    renderer = _draw(fig)
    top = fig.axes[0]
    assert all(-1.0 <= t <= 1.0 for t in top.get_yticks())  # no acceleration tick beside the true segments
    box = fig.bbox
    for text in top.texts + top.get_legend().get_texts():
        extent = text.get_window_extent(renderer)
        assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, text.get_text()
    legend = top.get_legend().get_window_extent(renderer)
    assert legend.x0 >= top.get_window_extent(renderer).x1  # the x, y, z legend beside the signal, not on it
