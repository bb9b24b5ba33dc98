"""What pskd writes, replaces and removes, under attack: `--overwrite` replaces only a pskd output of the same
kind that no input of the command touches, nothing is written through a link, created files get the user's
umask, and a finished run is never lost (a failed rename keeps it staged; --resume gives it its name without
training again).

Every refusal is checked the same way: exit code 2, one `pskd: error:` line, and the whole temporary folder (files,
their bytes and modes, folders, links and their targets) exactly as it was before the command.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_cli
from test_bounds import dataset
from test_resume import CONFIG

from pskd import fileio
from pskd.overwrite import MARKER

CE = {**CONFIG, "method": "ce", "teachers": {}, "distill": {}, "train": {**CONFIG["train"], "epochs": 2}}


def snapshot(root: Path) -> dict:
    """Every entry below `root`, links not followed: a file's bytes and mode, a folder, a link's target."""
    found = {}
    for here, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(here) / name
            info = os.lstat(path)
            key = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                found[key] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[key] = ("folder",)
            else:
                found[key] = ("file", path.read_bytes(), stat.S_IMODE(info.st_mode))
    return found


def refused(args: list, capsys, root: Path, *expected: str) -> str:
    """Run the command; it must exit with code 2 and one error line holding `expected`, and leave `root` as it
    was. Returns the line."""
    before = snapshot(root)
    code, _, err = run_cli([str(a) for a in args], capsys)
    lines = [line for line in err.splitlines() if line.startswith("pskd: error:")]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in lines[0], lines[0]
    assert snapshot(root) == before
    if os.environ.get("SHOW_REFUSALS"):
        print("\n" + lines[0], file=sys.__stderr__)
    return lines[0]


def config_file(folder: Path, tree: dict | None = None, **changes) -> Path:
    path = folder / "c.yaml"
    path.write_text(yaml.safe_dump({**(tree or CE), **changes}))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A small finished run (cross-entropy student, 2 epochs on synthetic data)."""
    from pskd.config import build_config
    from pskd.pipeline import run

    out = tmp_path_factory.mktemp("finished") / "run"
    run(build_config(CE), out, log=lambda *a, **k: None)
    return out


@pytest.fixture
def a_run(finished, tmp_path) -> Path:
    """A copy of the finished run in this test's folder."""
    shutil.copytree(finished, tmp_path / "run", symlinks=True)
    return tmp_path / "run"


# --overwrite refuses what is not pskd's, and what the command reads


def test_overwrite_never_removes_a_users_folder(tmp_path, capsys):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "draft.tex").write_text("\\chapter{Four years of work}")
    config = config_file(tmp_path)
    line = refused(["train", config, "--out", thesis, "--overwrite"], capsys, tmp_path,
                   f"--overwrite would remove {thesis} (a folder of 1 file(s) and 0 folder(s))",
                   "it is not a folder pskd wrote", MARKER)
    assert line.endswith("move it away or choose another --out")
    (tmp_path / "file.txt").write_text("mine")
    refused(["train", config, "--out", tmp_path / "file.txt", "--overwrite"], capsys, tmp_path,
            "would remove", "(a file)", "not a folder pskd wrote, but a file")


def test_overwrite_never_removes_the_data_the_run_reads(tmp_path, capsys):
    root = dataset(tmp_path / "work")
    tree = {**CE, "data": {"dataset": "folder", "data_dir": str(root), "protocol": "kfold",
                           "folder": {"folds": 2, "fold": 1}}}
    config = config_file(tmp_path, tree)
    refused(["train", config, "--out", root, "--overwrite"], capsys, tmp_path,
            f"--overwrite would remove {root}", f"it is the data folder ({root}), which this command reads")
    refused(["train", config, "--out", tmp_path / "work", "--overwrite"], capsys, tmp_path,
            "it holds the data folder")
    refused(["train", config, "--out", root / "acc", "--overwrite"], capsys, tmp_path,
            "it is inside the data folder")


def test_evaluate_never_replaces_the_run_it_evaluates(a_run, tmp_path, capsys):
    refused(["evaluate", a_run, "--out", a_run, "--overwrite"], capsys, tmp_path,
            f"--overwrite would remove {a_run}", f"it holds the config of the run evaluated ({a_run / 'config.yaml'})")


def test_evaluate_replaces_an_evaluation_but_not_a_run(a_run, tmp_path, capsys):
    out = tmp_path / "evaluation"
    code, _, err = run_cli(["evaluate", str(a_run), "--out", str(out)], capsys)
    assert code == 0, err
    assert json.loads((out / MARKER).read_text())["kind"] == "evaluation"
    code, _, err = run_cli(["evaluate", str(a_run), "--out", str(out), "--overwrite", "--split", "val"], capsys)
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["split"] == "val"
    other = tmp_path / "other"
    shutil.copytree(a_run, other)
    refused(["evaluate", a_run, "--out", other, "--overwrite"], capsys, tmp_path,
            "refusing: it is a run, not an evaluation")


def test_overwrite_never_removes_the_run_a_student_starts_from(a_run, tmp_path, capsys):
    config = config_file(tmp_path)
    refused(["train", config, "--set", f"student.init_from={a_run}", "--out", a_run, "--overwrite"], capsys,
            tmp_path, f"it holds student.init_from ({a_run / 'checkpoints' / 'best.pt'})")
    (a_run / "teachers").mkdir()
    (a_run / "teachers" / "skeleton.pt").write_bytes(b"a teacher")
    with_teachers = config_file(tmp_path, CONFIG)
    refused(["train", with_teachers, "--set", f"teachers.skeleton.checkpoint={a_run}", "--out", a_run,
             "--overwrite"], capsys, tmp_path, f"it holds teachers.skeleton.checkpoint ({a_run / 'teachers'}")
    run_config = a_run / "config.yaml"
    refused(["train", run_config, "--out", a_run, "--overwrite"], capsys, tmp_path,
            f"it holds the config file ({run_config})")


def test_overwrite_never_removes_what_pskd_did_not_write_into_a_run(a_run, tmp_path, capsys):
    (a_run / "notes.txt").write_text("what I learnt from this run")
    refused(["train", config_file(tmp_path), "--out", a_run, "--overwrite"], capsys, tmp_path,
            "it holds notes.txt, which pskd did not write there")


def test_overwrite_replaces_a_run_of_an_earlier_version(a_run, tmp_path, capsys):
    (a_run / MARKER).unlink()  # a run written before the marker: recognised by its files
    code, _, err = run_cli(["train", str(config_file(tmp_path)), "--out", str(a_run), "--overwrite"], capsys)
    assert code == 0, err
    marker = json.loads((a_run / MARKER).read_text())
    assert marker["kind"] == "run" and marker["command"] == "train" and marker["pskd_version"]
    assert not (a_run / "state").exists() and not (a_run / ".lock").exists()


# links


def test_an_out_that_is_a_link_is_refused(tmp_path, capsys):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    config = config_file(tmp_path)
    for extra in ([], ["--overwrite"]):
        refused(["train", config, "--out", tmp_path / "link", *extra], capsys, tmp_path,
                f"--out {tmp_path / 'link'}: is a symbolic link; pskd writes no output through a link")


def test_a_planted_staging_link_is_refused_with_overwrite(a_run, tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("years of data")
    (tmp_path / "run.incomplete").symlink_to(victim)
    refused(["train", config_file(tmp_path), "--out", a_run, "--overwrite"], capsys, tmp_path,
            f"{tmp_path / 'run.incomplete'}: is a symbolic link")
    refused(["evaluate", a_run, "--out", tmp_path / "run", "--overwrite"], capsys, tmp_path, "is a symbolic link")
    shutil.copy(a_run / "config.yaml", victim / "config.yaml")  # a planted "interrupted run" elsewhere
    refused(["train", "--resume", a_run], capsys, tmp_path,
            f"the interrupted run {tmp_path / 'run.incomplete'}: is a symbolic link")


def test_a_planted_part_file_link_is_never_written_through(tmp_path, capsys):
    data = tmp_path / "data"
    (data / ".downloads").mkdir(parents=True)
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"not yours to append to")
    (data / ".downloads" / "Skeleton.zip.part").symlink_to(victim)
    refused(["download", "utd_mhad", "--data-dir", data, "--url", "http://127.0.0.1:9/"], capsys, tmp_path,
            "Skeleton.zip.part: is a symbolic link")
    shutil.rmtree(data / ".downloads")
    (data / ".downloads").symlink_to(tmp_path / "victim-folder", target_is_directory=True)
    (tmp_path / "victim-folder").mkdir()
    refused(["download", "utd_mhad", "--data-dir", data, "--url", "http://127.0.0.1:9/"], capsys, tmp_path,
            ".downloads: is a symbolic link")


def test_a_planted_export_folder_link_keeps_the_model_inside_the_run(a_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) is not installed")
    outside = tmp_path / "outside"
    outside.mkdir()
    (a_run / "export").symlink_to(outside)
    refused(["export", a_run], capsys, tmp_path, f"the run's export folder {a_run / 'export'}: is a symbolic link")
    refused(["export", a_run, "--overwrite"], capsys, tmp_path, "is a symbolic link")


def test_a_planted_report_link_is_never_replaced_with_overwrite(a_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) is not installed")
    victim = tmp_path / "victim.json"
    victim.write_text('{"mine": true}')
    (a_run / "export").mkdir()
    (a_run / "export" / "student.onnx.json").symlink_to(victim)
    refused(["export", a_run, "--overwrite"], capsys, tmp_path,
            f"the export file {a_run / 'export' / 'student.onnx.json'}: is a symbolic link")


def test_export_over_an_earlier_export_only(a_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) is not installed")
    code, _, err = run_cli(["export", str(a_run)], capsys)
    assert code == 0, err
    export = a_run / "export"
    assert json.loads((export / MARKER).read_text())["kind"] == "export"
    assert stat.S_IMODE((export / "student.onnx").stat().st_mode) == 0o666 & ~_umask()
    code, _, err = run_cli(["export", str(a_run), "--overwrite"], capsys)
    assert code == 0, err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.onnx").write_bytes(b"a model of my own")
    refused(["export", a_run, "--out", mine / "model.onnx", "--overwrite"], capsys, tmp_path,
            "refusing: it is not a pskd export")


# predict


def _recording(tmp_path: Path) -> Path:
    signal = np.random.default_rng(0).normal(size=(600, 3))
    path = tmp_path / "walk.csv"
    np.savetxt(path, signal, delimiter=",", fmt="%.4f")
    return path


def test_predict_never_writes_over_its_truth(a_run, tmp_path, capsys):
    truth = tmp_path / "truth.csv"
    names = json.loads((a_run / "metrics.json").read_text())["student"]["test"]["per_class"]
    truth.write_text(f"label,start_s,end_s\n{names[0]['class']},0,10\n")
    refused(["predict", a_run, "--input", _recording(tmp_path), "--out", truth, "--truth", truth], capsys,
            tmp_path, f"--out {truth}: that is the truth file (--truth)")
    refused(["predict", a_run, "--input", _recording(tmp_path), "--segments", truth, "--truth", truth], capsys,
            tmp_path, "that is the truth file")


def test_predict_outputs_have_the_users_umask_and_no_link_is_followed(a_run, tmp_path, capsys):
    saved = os.umask(0o027)
    try:
        outputs = [tmp_path / "windows.csv", tmp_path / "segments.jsonl", tmp_path / "timeline.png"]
        code, _, err = run_cli(["predict", str(a_run), "--input", str(_recording(tmp_path)), "--out", str(outputs[0]),
                                "--segments", str(outputs[1]), "--plot", str(outputs[2])], capsys)
        assert code == 0, err
        for path in outputs:
            assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
        victim = tmp_path / "victim.csv"
        victim.write_text("keep me")
        (tmp_path / "link.csv").symlink_to(victim)
        refused(["predict", a_run, "--input", tmp_path / "walk.csv", "--out", tmp_path / "link.csv"], capsys,
                tmp_path, f"--out {tmp_path / 'link.csv'}: is a symbolic link")
    finally:
        os.umask(saved)


def test_a_runs_files_have_the_users_umask(finished):
    wanted = 0o666 & ~_umask()
    for name in ("metrics.json", "config.yaml", "report.md", "predictions.csv", "confusion_matrix.png",
                 "checkpoints/best.pt", MARKER, "train.log"):
        assert stat.S_IMODE((finished / name).stat().st_mode) == wanted, name


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# a finished run is never lost


@pytest.mark.parametrize("appears", ["a file", "a link"])
def test_a_failed_rename_keeps_the_finished_run_and_resume_only_names_it(appears, tmp_path, capsys, monkeypatch):
    from pskd import pipeline

    out = tmp_path / "run"
    staging = tmp_path / "run.incomplete"
    real = pipeline.write_run

    def then_something_appears(*args, **kwargs):
        metrics = real(*args, **kwargs)
        if appears == "a file":
            out.write_text("someone else's file")
        else:
            (tmp_path / "target").mkdir()
            out.symlink_to(tmp_path / "target")
        return metrics

    monkeypatch.setattr(pipeline, "write_run", then_something_appears)
    config = config_file(tmp_path)
    code, _, err = run_cli(["train", str(config), "--out", str(out)], capsys)
    lines = [line for line in err.splitlines() if line.startswith("pskd: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "the finished output cannot take this name (a file or a link is there)" in lines[0]
    assert lines[0].endswith(f"then finish it with: pskd train --resume {out}")
    assert (staging / "metrics.json").is_file() and list((staging / "state").glob("*.pt"))
    assert os.path.lexists(out) and not (out / "metrics.json").exists()
    staged = (staging / "metrics.json").read_bytes()
    # a kill had also left temporary files of the write module (and of earlier versions)
    for leftover in ("state/.student.pt.0123456789ab.pskd-tmp", ".report.md.ba9876543210.pskd-tmp",
                     "checkpoints/best.tmp", "state/.student.pt.k3j2h1.tmp"):
        (staging / leftover).write_bytes(b"half a file")
    out.unlink()
    monkeypatch.setattr(pipeline, "_run_into", lambda *a, **k: pytest.fail("trained again"))
    code, _, err = run_cli(["train", "--resume", str(out)], capsys)
    assert code == 0, err
    assert (out / "metrics.json").read_bytes() == staged and not staging.exists()
    left = [str(p.relative_to(out)) for p in out.rglob("*") if p.name.endswith("tmp")]
    assert not left and not (out / "state").exists() and not (out / ".lock").exists()


def test_resume_removes_the_temporary_files_a_kill_left(tmp_path):
    from pskd.config import build_config, dump_config
    from pskd.rundir import resume_run_dir

    staging = tmp_path / "run.incomplete"
    (staging / "state").mkdir(parents=True)
    (staging / "config.yaml").write_text(dump_config(build_config(CE)))
    (staging / "state" / "student.pt").write_bytes(b"the last checkpoint")
    (staging / "state" / ".student.pt.0123456789ab.pskd-tmp").write_bytes(b"half of the next one")
    (staging / "state" / "notes").write_bytes(b"not ours, kept")
    _, lock = resume_run_dir(tmp_path / "run", build_config(CE))
    lock.release()
    assert sorted(p.name for p in (staging / "state").iterdir()) == ["notes", "student.pt"]


def test_a_kill_after_the_rename_leaves_a_finished_run_that_resume_tidies(a_run, capsys):
    (a_run / "state").mkdir()
    (a_run / "state" / "student.pt").write_bytes(b"checkpoints of every epoch")
    (a_run / ".lock").write_bytes(b"")
    code, _, err = run_cli(["train", str(a_run / "config.yaml"), "--resume", str(a_run)], capsys)
    assert code == 2 and "this run has finished; there is nothing to resume (its leftover checkpoints were removed)" \
        in err
    assert not (a_run / "state").exists() and not (a_run / ".lock").exists() and (a_run / "metrics.json").is_file()


# the write module itself


def test_write_file_replaces_atomically_with_the_umask_and_never_through_a_link(tmp_path):
    saved = os.umask(0o077)
    try:
        fileio.write_file(tmp_path / "a" / "b.txt", "text", root=tmp_path)
        assert stat.S_IMODE((tmp_path / "a" / "b.txt").stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    finally:
        os.umask(saved)
    fileio.write_file(tmp_path / "a" / "b.txt", b"bytes", root=tmp_path)
    assert (tmp_path / "a" / "b.txt").read_bytes() == b"bytes"
    (tmp_path / "outside").mkdir()
    (tmp_path / "a" / "linked").symlink_to(tmp_path / "outside")
    with pytest.raises(fileio.LinkRefused, match="linked: is a symbolic link"):
        fileio.write_file(tmp_path / "a" / "linked" / "c.txt", "text", root=tmp_path)
    (tmp_path / "a" / "file-link").symlink_to(tmp_path / "outside" / "x")
    with pytest.raises(fileio.LinkRefused, match="file-link: is a symbolic link"):
        fileio.write_file(tmp_path / "a" / "file-link", "text", root=tmp_path)
    with pytest.raises(fileio.LinkRefused):
        fileio.append_text(tmp_path / "a" / "file-link", "text")
    with pytest.raises(fileio.LinkRefused):
        fileio.StagedFile(tmp_path / "a" / "linked" / "m.onnx", root=tmp_path)
    assert not list((tmp_path / "outside").iterdir())
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.txt", "file-link", "linked"]


def test_a_staged_file_is_renamed_only_when_the_writer_succeeds(tmp_path):
    target = tmp_path / "model.bin"
    with fileio.StagedFile(target) as staged:
        Path(staged.path).write_bytes(b"written by a path")
    assert target.read_bytes() == b"written by a path"
    with pytest.raises(RuntimeError), fileio.StagedFile(target) as staged:
        Path(staged.path).write_bytes(b"half")
        raise RuntimeError("the converter failed")
    assert target.read_bytes() == b"written by a path" and sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


def test_remove_never_follows_a_link(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep.txt").write_text("keep")
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "link").symlink_to(tmp_path / "outside")
    (tmp_path / "tree" / "sub" / "file").write_text("x")
    fileio.remove(tmp_path / "tree")
    assert not (tmp_path / "tree").exists() and (tmp_path / "outside" / "keep.txt").read_text() == "keep"


def test_overwrite_refuses_a_run_whose_subfolders_hold_a_file_pskd_did_not_write(tmp_path, capsys):
    """A notes file kept in checkpoints/, teachers/ or export/ of a run is a refusal, not a loss."""
    from conftest import run_cli
    from test_distill_pipeline import TINY

    from pskd.config import build_config
    from pskd.pipeline import run

    config = build_config({**TINY, "method": "ce"})
    out, _ = run(config, tmp_path / "run", log=lambda *a, **k: None)
    for sub, name in (("checkpoints", "thesis_notes.txt"), ("export", "my_model_v7.onnx.bak")):
        (out / sub).mkdir(exist_ok=True)
        kept = out / sub / name
        kept.write_text("mine", encoding="utf-8")
        import yaml

        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump({**TINY, "method": "ce"}), encoding="utf-8")
        code, _, err = run_cli(["train", str(path), "--out", str(out), "--overwrite", "--quiet"], capsys)
        assert code == 2 and f"{sub}/{name}" in err and err.count("\n") == 1
        assert kept.read_text() == "mine"
        kept.unlink()
