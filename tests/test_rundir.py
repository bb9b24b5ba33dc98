"""A run's work is never destroyed by a later command: refusal of an existing target or interrupted run, an
explicit --overwrite, a failed resume that leaves the interrupted run as it was, and a lock between processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import yaml
from conftest import REPO, run_cli
from test_resume import CONFIG

from pskd.errors import UserError
from pskd.rundir import RunLock, stage_run_dir


def tree(root):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def write_config(path, **changes):
    path.write_text(yaml.safe_dump({**CONFIG, **changes}))
    return path


def interrupted_run(tmp_path):
    """An interrupted run as a killed `pskd train` leaves it: its config and a checkpoint."""
    from pskd.config import build_config, dump_config

    staging = tmp_path / "run.incomplete"
    (staging / "state").mkdir(parents=True)
    (staging / "config.yaml").write_text(dump_config(build_config(CONFIG)))
    (staging / "state" / "student.pt").write_bytes(b"a checkpoint of many epochs")
    return staging


def test_a_fresh_run_refuses_an_interrupted_one_and_a_finished_one(tmp_path, capsys):
    staging = interrupted_run(tmp_path)
    config = write_config(tmp_path / "c.yaml")
    before = tree(tmp_path)
    code, _, err = run_cli(["train", str(config), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "an interrupted run is here; continue it with: pskd train --resume" in err and "--overwrite" in err
    assert tree(tmp_path) == before
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "metrics.json").write_text("{}")
    code, _, err = run_cli(["train", str(config), "--out", str(tmp_path / "done")], capsys)
    assert code == 2 and "already exists and is not empty" in err and "--overwrite" in err
    assert (tmp_path / "done" / "metrics.json").read_text() == "{}"
    assert staging.is_dir()


def test_overwrite_replaces_what_is_there(tmp_path, capsys):
    interrupted_run(tmp_path)
    config = write_config(tmp_path / "c.yaml", train={**CONFIG["train"], "epochs": 2}, method="ce")
    code, _, err = run_cli(["train", str(config), "--out", str(tmp_path / "run"), "--overwrite", "--quiet"], capsys)
    assert code == 0, err
    assert (tmp_path / "run" / "metrics.json").is_file() and not (tmp_path / "run.incomplete").exists()
    assert not (tmp_path / "run" / ".lock").exists()


def test_a_failed_resume_leaves_the_interrupted_run_as_it_was(tmp_path, capsys, monkeypatch):
    staging = interrupted_run(tmp_path)
    before = tree(staging)
    monkeypatch.setenv("PSKD_DATA_DIR", str(tmp_path / "moved-away"))
    config = tmp_path / "c.yaml"
    config.write_text((staging / "config.yaml").read_text())
    from pskd import pipeline

    def data_gone(*args, **kwargs):
        raise UserError("the data folder moved away")

    monkeypatch.setattr(pipeline, "open_session", data_gone)
    code, _, err = run_cli(["train", str(config), "--resume", str(tmp_path / "run")], capsys)
    assert code == 2 and "the data folder moved away" in err
    assert "left as it was" in err
    after = tree(staging)
    assert {k: v for k, v in after.items() if k != ".lock"} == before


def test_a_second_writer_is_refused_while_the_first_holds_the_run(tmp_path):
    staging, lock = stage_run_dir(tmp_path / "run")
    holder = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from pskd.rundir import RunLock
        from pskd.errors import UserError
        try:
            RunLock(Path({str(staging)!r}), Path({str(tmp_path / 'run')!r}))
        except UserError as err:
            print(err)
            sys.exit(2)
    """)
    other = subprocess.run([sys.executable, "-c", holder], capture_output=True, text=True, cwd=REPO)
    assert other.returncode == 2 and "another pskd process is writing this run" in other.stdout
    with pytest.raises(UserError, match="an interrupted run is here"):
        stage_run_dir(tmp_path / "run")
    lock.release()  # the lock goes with its holder: now another process may take it
    again = subprocess.run([sys.executable, "-c", holder], capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 0, again.stdout + again.stderr
    RunLock(staging, tmp_path / "run").release()


def test_resume_with_overwrite_or_out_is_refused(tmp_path, capsys):
    interrupted_run(tmp_path)
    code, _, err = run_cli(["train", "--resume", str(tmp_path / "run"), "--overwrite"], capsys)
    assert code == 2 and "leave out --out and --overwrite" in err
