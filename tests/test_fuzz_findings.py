"""Regression tests for what the command fuzzers (tests/test_fuzz_commands.py, tests/test_fuzz_inputs.py) found."""

from __future__ import annotations

import shutil

from conftest import run_cli
from fuzzing import snapshot


def test_bench_json_never_replaces_a_file_of_the_run_it_reads(fuzz_base, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(fuzz_base["run"], run)
    before = snapshot(tmp_path)
    for inside in ("config.yaml", "checkpoints/best.pt", "export/student.onnx"):
        code, _, err = run_cli(["bench", str(run), "--repeats", "5", "--json", str(run / inside)], capsys)
        assert code == 2 and err.startswith(f"pskd: error: --json {run / inside}: it is"), err
        assert "which this command reads" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["bench", str(run / "export" / "student.onnx"), "--repeats", "5", "--json",
                            str(run / "export" / "student.onnx")], capsys)
    assert code == 2 and "it is a model benchmarked" in err, err
    assert snapshot(tmp_path) == before


def test_predict_never_writes_into_the_run_directory_it_reads(fuzz_base, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(fuzz_base["run"], run)
    before = snapshot(tmp_path)
    for option, inside in (("--out", "predictions.csv"), ("--segments", "history/segments.jsonl")):
        code, _, err = run_cli(["predict", str(run), "--input", str(fuzz_base["recording"]), option,
                                str(run / inside)], capsys)
        assert code == 2 and f"that is inside the run directory {run}, the model" in err, err
    assert snapshot(tmp_path) == before
    code, _, err = run_cli(["predict", str(run), "--input", str(fuzz_base["recording"]), "--out",
                            str(tmp_path / "w.csv")], capsys)
    assert code == 0 and (tmp_path / "w.csv").is_file(), err


def test_a_failed_predict_leaves_no_temporary_file(fuzz_base, tmp_path, capsys):
    (tmp_path / "windows.csv").mkdir()  # --out cannot be written: a folder is there
    before = snapshot(tmp_path)
    for args in (["--out", "windows.csv", "--segments", "segments.jsonl"],  # the second file's rename never came
                 ["--out", "new.csv", "--segments", "segments.txt"]):  # the second writer is refused at once
        code, _, err = run_cli(["predict", str(fuzz_base["run"]), "--input", str(fuzz_base["recording"]),
                                *(str(tmp_path / a) if a.endswith(("csv", "jsonl", "txt")) else a for a in args)],
                               capsys)
        assert code == 2 and err.strip().splitlines()[-1].startswith("pskd: error:"), err
        assert snapshot(tmp_path) == before  # no .pskd-tmp file, no output
