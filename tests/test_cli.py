"""The `pskd` command end to end: data check, train, demo, and how it fails."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, run_cli

TINY = [
    "--set", "data.dataset=synthetic", "--set", "data.synthetic.subjects=4", "--set", "data.synthetic.trials=2",
    "--set", "data.synthetic.classes=4", "--set", "preprocess.sensor_length=32",
    "--set", "preprocess.skeleton_length=16", "--set", "train.epochs=3", "--set", "train.batch_size=8",
    "--set", "student.options.widths=[8,16]", "--set", "student.options.embedding_dim=16",
]


def test_data_check_real_copy(utd_root, capsys):
    code, out, _ = run_cli(["data", "check", "utd_mhad", "--data-dir", str(utd_root), "--json"], capsys)
    assert code == 0
    summary = json.loads(out)
    assert (summary["dataset"], summary["clips"], summary["classes"]) == ("utd_mhad", 861, 27)
    assert summary["subjects"] == list(range(1, 9))
    code, out, _ = run_cli(["data", "check", "utd_mhad", "--data-dir", str(utd_root)], capsys)
    assert code == 0 and "clips     861" in out and "a8_s1_t4" in out


def test_data_check_errors_are_one_line_and_exit_2(tmp_path, capsys):
    code, out, err = run_cli(["data", "check", "utd_mhad", "--data-dir", str(tmp_path)], capsys)
    assert code == 2 and err.strip().count("\n") == 0 and "missing Skeleton/ and Inertial/" in err
    code, _, err = run_cli(["data", "check", "kinetics", "--data-dir", str(tmp_path)], capsys)
    assert code == 2 and "unknown dataset 'kinetics'" in err


def test_no_traceback_from_the_real_entry_point(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pskd", "train", str(REPO / "configs/utd_mhad/student_ce.yaml"),
         "--set", "train.epochs=many", "--out", str(tmp_path / "run")],
        capture_output=True, text=True,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert "train.epochs" in done.stderr
    assert not (tmp_path / "run").exists()


def test_tiny_train_writes_a_complete_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(
        ["train", str(REPO / "configs/utd_mhad/student_ce.yaml"), *TINY, "--out", str(out), "--quiet"], capsys
    )
    assert code == 0, err
    assert "test accuracy" in stdout
    names = {p.name for p in out.iterdir()}
    assert {"config.yaml", "metrics.json", "report.md", "confusion_matrix.png", "learning_curves.png",
            "history.csv", "checkpoints"} <= names
    assert not (tmp_path / "run.incomplete").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("dataset", "protocol", "method", "seed", "wall_time_s"):
        assert key in metrics
    assert metrics["dataset"] == "synthetic" and metrics["method"] == "ce" and metrics["protocol"] == "cross_subject"
    student = metrics["student"]
    assert student["params"] > 0
    for part in ("test", "test_last", "val"):
        assert 0.0 <= student[part]["accuracy"] <= 1.0 and 0.0 <= student[part]["macro_f1"] <= 1.0
    assert metrics["split"]["val_subjects"] == [3] and metrics["split"]["test_subjects"] == [2, 4]
    assert "train.epochs" not in (out / "config.yaml").read_text()  # the resolved tree, not the overrides
    assert "epochs: 3" in (out / "config.yaml").read_text()
    checkpoint = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    assert checkpoint["meta"]["class_names"][:2] == ["swipe left", "swipe right"]
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert "| best on validation |" in (out / "report.md").read_text()
    with (out / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == metrics["split"]["test"]
    assert {int(r["subject"]) for r in rows} == {2, 4}
    assert np.mean([r["correct"] == "1" for r in rows]) == pytest.approx(student["test"]["accuracy"])
    assert all((r["label"] == r["predicted"]) == (r["correct"] == "1") for r in rows)
    assert all(float(r["confidence"]) >= float(r["confidence_of_label"]) for r in rows)
    per_subject = student["test_per_subject"]
    assert set(per_subject) == {"2", "4"} and sum(v["clips"] for v in per_subject.values()) == len(rows)
    for subject, figures in per_subject.items():
        mine = [r["correct"] == "1" for r in rows if r["subject"] == subject]
        assert figures["accuracy"] == pytest.approx(np.mean(mine))
    assert "## Per test subject" in (out / "report.md").read_text()


def test_a_fixed_schedule_delivers_the_last_epoch_and_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["train", str(REPO / "configs/utd_mhad/student_ce.yaml"), *TINY, "--out", str(out),
                            "--quiet", "--set", "train.select=last", "--set", "train.refit=false"], capsys)
    assert code == 0, err
    student = json.loads((out / "metrics.json").read_text())["student"]
    assert student["select"] == "last" and student["best_epoch"] == student["epochs_trained"] == 3
    assert student["test"]["accuracy"] == student["test_last"]["accuracy"]
    report = (out / "report.md").read_text()
    assert "selected epoch 3 (the last: a fixed schedule" in report and "fixed in advance" in report


def test_runs_are_reproducible_with_a_seed(tmp_path, capsys):
    results = []
    for name in ("a", "b"):
        code, _, err = run_cli(
            ["train", str(REPO / "configs/utd_mhad/student_ce.yaml"), *TINY, "--out", str(tmp_path / name),
             "--quiet", "--set", "seed=5", "--set", "train.refit=true"], capsys
        )
        assert code == 0, err
        results.append(json.loads((tmp_path / name / "metrics.json").read_text())["student"])
    for key in ("test", "test_last", "val"):
        assert results[0][key]["accuracy"] == results[1][key]["accuracy"]
    assert results[0]["refit"] is True


def test_an_existing_run_directory_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_cli(["train", str(REPO / "configs/utd_mhad/student_ce.yaml"), *TINY, "--out", str(out)], capsys)
    assert code == 2 and "already exists" in err
    assert (out / "keep.txt").read_text() == "mine"


def test_a_failing_run_leaves_nothing_behind(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(
        ["train", str(REPO / "configs/utd_mhad/student_ce.yaml"), *TINY, "--set", "student.streams=[gyroscope]",
         "--out", str(out)], capsys
    )
    assert code == 2 and "student.streams" in err
    assert not out.exists() and not (tmp_path / "run.incomplete").exists()


def test_train_on_the_real_data(utd_root, tmp_path, capsys):
    out = tmp_path / "utd"
    code, stdout, err = run_cli(
        ["train", str(REPO / "configs/utd_mhad/student_ce.yaml"), "--data-dir", str(utd_root), "--out", str(out),
         "--quiet", "--set", "train.epochs=2"], capsys
    )
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "utd_mhad" and metrics["split"]["test"] == 430
    assert metrics["split"]["train"] + metrics["split"]["val"] == 431
    assert metrics["student"]["test"]["accuracy"] > 1 / 27  # two epochs already beat chance


def test_demo_runs_and_prints_its_report(tmp_path, capsys):
    code, stdout, err = run_cli(
        ["demo", "--out", str(tmp_path / "demo"), "--quiet", "--set", "train.epochs=2",
         "--set", "teachers.skeleton.train.epochs=2", "--set", "teachers.fusion.train.epochs=2",
         "--set", "data.synthetic.subjects=4", "--set", "data.synthetic.trials=1"], capsys
    )
    assert code == 0, err
    assert "# demo: pskd on synthetic (cross_subject)" in stdout and "## Teachers" in stdout
    assert (tmp_path / "demo" / "report.md").is_file()


def test_train_log_has_plain_progress_lines_even_when_quiet(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["train", str(REPO / "configs/utd_mhad/student_ce.yaml"), *TINY, "--out", str(out),
                            "--quiet"], capsys)
    assert code == 0, err
    log = (out / "train.log").read_text().splitlines()
    epochs = [line for line in log if ": epoch " in line]
    assert any("student: epoch 1/" in line for line in epochs) and "\r" not in "".join(log)
    assert "epoch" not in err  # --quiet: nothing of it on the screen
    student = (out / "history" / "student.csv").read_text().splitlines()  # appended as each epoch ended
    assert student[0].startswith("epoch,lr,train_ce") and len(student) == 1 + 3
    assert (out / "history" / "student_refit.csv").is_file()
    code, _, err = run_cli(["train", str(REPO / "configs/utd_mhad/student_ce.yaml"), *TINY, "--out",
                            str(tmp_path / "shown")], capsys)
    assert code == 0 and "student: epoch 1/" in err and "\r" not in err  # stderr is not a terminal here


def test_tensorboard_gets_every_logged_term(tmp_path, capsys):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    code, _, err = run_cli(["train", str(REPO / "configs/utd_mhad/student_ce.yaml"), *TINY, "--out", str(out),
                            "--quiet", "--set", "logging.tensorboard=true"], capsys)
    assert code == 0, err
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"student/train_ce", "student/val_accuracy", "student refit/train_loss"} <= set(tags)
    assert [e.step for e in events.Scalars("student/train_ce")] == [1, 2, 3]
