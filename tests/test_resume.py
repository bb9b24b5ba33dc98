"""A run killed with SIGKILL in the middle of a stage, then resumed, ends with the very figures of a run that was
never interrupted (CPU, deterministic flag)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch
import yaml
from conftest import run_cli

from pskd.config import build_config, dump_config
from pskd.errors import ConfigError
from pskd.training.session import Session

GCN = {"widths": [8, 16], "strides": [1, 2], "embedding_dim": 16}
CONFIG = {
    "name": "resume",
    "method": "pskd",
    "threads": 1,
    "progress": False,
    "data": {"dataset": "synthetic", "synthetic": {"subjects": 6, "trials": 4, "classes": 4}},
    "preprocess": {"sensor_length": 32, "skeleton_length": 16},
    "student": {"name": "compact_cnn", "options": {"widths": [16, 32], "embedding_dim": 16}},
    "train": {"epochs": 40, "batch_size": 8, "refit": True},
    "teachers": {
        "skeleton": {"name": "skeleton_gcn", "options": GCN, "train": {"epochs": 3, "batch_size": 8}},
        "fusion": {
            "name": "fusion", "streams": ["skeleton", "accelerometer"], "distill_from": "skeleton",
            "options": {"embedding_dim": 16, "skeleton": GCN, "inertial": {"widths": [8, 8], "embedding_dim": 8}},
            "train": {"epochs": 3, "batch_size": 8},
        },
    },
    # schedule B: the student learns from the nearest teacher, then from both after epoch 20
    "distill": {"progressive": "B", "switch_epoch": 20},
}


def figures(metrics: dict):
    """metrics.json without wall-clock times."""
    if isinstance(metrics, dict):
        return {k: figures(v) for k, v in metrics.items() if "seconds" not in k and k != "wall_time_s"}
    if isinstance(metrics, list):
        return [figures(v) for v in metrics]
    return metrics


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_figures(tmp_path, capsys):
    config = tmp_path / "resume.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    code, _, err = run_cli(["train", str(config), "--out", str(tmp_path / "straight"), "--quiet"], capsys)
    assert code == 0, err
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())

    out = tmp_path / "killed"
    student = out.with_name("killed.incomplete") / "state" / "student.pt"
    process = subprocess.Popen([sys.executable, "-m", "pskd", "train", str(config), "--out", str(out), "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    deadline = time.monotonic() + 120
    while not student.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # a few more epochs, so that the kill lands somewhere in the student's training
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not out.exists()
    saved = torch.load(student, weights_only=True)
    assert not saved["complete"] and 1 <= saved["epoch"] < CONFIG["train"]["epochs"]
    staging = out.with_name("killed.incomplete")
    spent = student.stat().st_mtime - (staging / "config.yaml").stat().st_mtime  # teachers and student so far

    code, _, err = run_cli(["train", "--resume", str(out), "--quiet"], capsys)
    assert code == 0, err
    resumed = json.loads((out / "metrics.json").read_text())
    assert figures(resumed) == figures(straight)
    assert resumed["wall_time_s"] > spent > 0  # the time before the kill counts too
    log = (out / "train.log").read_text()  # both parts of the run, in order
    assert log.index("student: epoch 1/") < log.index(f"student: epoch {CONFIG['train']['epochs']}/")
    assert not (out / "state").exists() and not out.with_name("killed.incomplete").exists()
    # the delivered weights are the same too
    a = torch.load(tmp_path / "straight" / "checkpoints" / "best.pt", weights_only=True)["state_dict"]
    b = torch.load(out / "checkpoints" / "best.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_another_config_and_a_finished_run(tmp_path, capsys):
    staging = tmp_path / "run.incomplete"
    staging.mkdir()
    (staging / "config.yaml").write_text(dump_config(build_config({**CONFIG, "seed": 0})))  # as a run writes it
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**CONFIG, "seed": 3}))
    code, _, err = run_cli(["train", str(other), "--resume", str(tmp_path / "run")], capsys)
    assert code == 2 and "started with another config (differs at seed)" in err
    code, _, err = run_cli(["train", "--resume", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "no interrupted run here" in err
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "metrics.json").write_text("{}")
    code, _, err = run_cli(["train", str(other), "--resume", str(tmp_path / "done")], capsys)
    assert code == 2 and "has finished" in err
    code, _, err = run_cli(["train"], capsys)
    assert code == 2 and "needs a CONFIG" in err


def test_a_run_started_by_an_older_version_resumes_when_only_new_settings_are_missing(tmp_path):
    from pskd.rundir import resume_run_dir

    config = build_config({**CONFIG, "seed": 0})
    written = yaml.safe_load(dump_config(config))
    del written["distill"]["unlabelled_filter"], written["distill"]["gate"]  # added later
    staging = tmp_path / "run.incomplete"
    staging.mkdir()
    (staging / "config.yaml").write_text(yaml.safe_dump(written))
    found, lock = resume_run_dir(tmp_path / "run", config)
    lock.release()
    assert found == staging
    changed = build_config({**CONFIG, "seed": 0, "distill": {**CONFIG["distill"], "unlabelled_filter": "off"}})
    with pytest.raises(ConfigError, match="differs at distill.unlabelled_filter"):
        resume_run_dir(tmp_path / "run", changed)


def test_each_training_has_its_own_state_file_inside_a_run(tmp_path):
    session = Session(None, None, None, None, print)
    assert session.checkpoint("student") is None
    session = replace(session, state_dir=tmp_path)
    assert session.checkpoint("teachers.skeleton fold [1, 3]") == tmp_path / "teachers.skeleton_fold_1_3.pt"


@pytest.mark.slow
def test_a_full_disk_mid_run_is_one_error_line_and_the_run_resumes_to_the_same_figures(tmp_path, capsys, monkeypatch):
    """A write that fails with ENOSPC at the student's 5th checkpoint (injected: no small file system here): one
    error line naming the file, exit code 2, the checkpoints of epochs 1-4 kept, then --resume finishes the run
    exactly as an uninterrupted one."""
    from pskd.training import state

    tree = {**CONFIG, "method": "ce", "teachers": {}, "distill": {}, "train": {**CONFIG["train"], "epochs": 8}}
    config = tmp_path / "ce.yaml"
    config.write_text(yaml.safe_dump(tree))
    code, _, err = run_cli(["train", str(config), "--out", str(tmp_path / "straight"), "--quiet"], capsys)
    assert code == 0, err
    real, calls = state.write_atomically, []

    def full_disk(path, write, **kwargs):
        calls.append(path)
        if len(calls) == 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, write, **kwargs)

    monkeypatch.setattr(state, "write_atomically", full_disk)
    out = tmp_path / "full"
    code, _, err = run_cli(["train", str(config), "--out", str(out), "--quiet"], capsys)
    lines = [line for line in err.splitlines() if line.startswith("pskd: error")]  # the others: the run's log
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "student.pt: cannot write (No space left on device)" in lines[0]
    assert lines[0].endswith(f"continue it with: pskd train --resume {out}")
    kept = torch.load(out.with_name("full.incomplete") / "state" / "student.pt", weights_only=True)
    assert kept["epoch"] == 4 and not out.exists()
    monkeypatch.setattr(state, "write_atomically", real)
    code, _, err = run_cli(["train", "--resume", str(out), "--quiet"], capsys)
    assert code == 0, err
    assert figures(json.loads((out / "metrics.json").read_text())) == \
        figures(json.loads((tmp_path / "straight" / "metrics.json").read_text()))


def test_an_atomic_write_that_fails_leaves_the_previous_file_and_no_temporary_one(tmp_path):
    from pskd.fileio import WriteError, write_atomically

    target = tmp_path / "state.pt"
    write_atomically(target, lambda handle: handle.write(b"first"))

    def fails(handle):
        handle.write(b"half")
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    with pytest.raises(WriteError, match="state.pt: cannot write .Read-only file system"):
        write_atomically(target, fails)
    assert target.read_bytes() == b"first" and sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]
