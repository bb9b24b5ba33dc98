"""The real commands over hostile run folders: a tiny finished run (with its export) is copied, a random sequence
of changes is applied (a file deleted, cut short, replaced by garbage or by a link out to a canary folder, a lock,
temporary files, checkpoints, a foreign file or an `export` link planted, the marker removed or rewritten), and
something may lie at `--out` or `<out>.incomplete` (a user's folder, a file, a link, an evaluation, a run). Then
`evaluate`, `predict`, `export`, `bench` or `train --resume` runs on it, in this process, and tests/fuzzing.py's
checks hold: exit code 0 or 2, one error line and no traceback, memory under a bound, nothing outside the paths
the command owns created, changed or removed (the canary and, for evaluate, predict, export and bench, the run
itself but for its export/ and bench.json), and nothing that existed replaced unless the command was told to and
it was a pskd output of that kind.

    PSKD_FUZZ_PROFILE=long .venv/bin/python -m pytest -q tests/test_fuzz_commands.py tests/test_fuzz_inputs.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fuzzing import (
    check_changes,
    fuzz,
    link_targets,
    mutate,
    remove,
    replace_with_link,
    run_command,
    run_entries,
    run_mutations,
    snapshot,
    workspace,
)
from hypothesis import given
from hypothesis import strategies as st

BENCH = ["--repeats", "5", "--warmup", "0", "--max-seconds", "0.1"]
# what may lie at --out (and at <out>.incomplete) before the command
OUT_STATES = ["none", "empty", "user", "file", "link", "dangling", "evaluation", "old-evaluation", "run"]
STAGING_STATES = ["none", "lock", "user", "file", "link"]


@pytest.fixture(scope="module")
def base(fuzz_base):
    return {**fuzz_base, "entries": run_entries(fuzz_base["run"])}


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """A folder for the examples' workspaces (each removed once checked) and a counter to name them."""
    return {"parent": tmp_path_factory.mktemp("fuzz-commands"), "n": 0}


def new_workspace(examples, base) -> tuple[Path, Path]:
    examples["n"] += 1
    ws = workspace(examples["parent"], f"ex{examples['n']}")
    shutil.copytree(base["run"], ws / "run", symlinks=True)
    shutil.copy(base["recording"], ws / "recording.csv")
    shutil.copy(base["config"], ws / "config.yaml")
    return ws, ws / "run"


def plant_at(path: Path, state: str, ws: Path, base) -> None:
    """Put `state` at `path` (an --out, a staging folder, an export's folder)."""
    if state == "none":
        return
    remove(path)
    if state in ("link", "dangling"):
        replace_with_link(path, link_targets(ws)[1 if state == "link" else 3])
    elif state == "file":
        path.write_bytes(b"my own file")
    elif state == "empty":
        path.mkdir()
    elif state == "user":
        path.mkdir()
        (path / "notes.txt").write_text("a user's folder")
    elif state == "lock":
        path.mkdir()
        (path / ".lock").write_text("99999999\n")
    elif state in ("evaluation", "old-evaluation"):
        shutil.copytree(base["evaluation"], path, symlinks=True)
        if state == "old-evaluation":
            (path / ".pskd-output.json").unlink()
    elif state == "run":
        shutil.copytree(base["run"], path, symlinks=True)


def checked(args: list, capsys, ws: Path, owned, replaceable=(), tidied=(), continued=()) -> int:
    """Run the command and check it; `replaceable` may change when it succeeds, `continued` (an interrupted run
    it continues) whatever its exit code."""
    before = snapshot(ws)
    code, _, _ = run_command(args, capsys)
    check_changes(before, snapshot(ws), owned, [*(replaceable if code == 0 else ()), *continued], tidied,
                  what=" ".join(map(str, args)))
    return code


def finish(ws: Path) -> None:
    shutil.rmtree(ws, ignore_errors=True)


@fuzz(40)
@given(data=st.data(), out_state=st.sampled_from(OUT_STATES), staging=st.sampled_from(STAGING_STATES),
       where=st.sampled_from(["beside", "inside", "run"]), overwrite=st.booleans())
def test_evaluate_a_hostile_run(base, examples, capsys, data, out_state, staging, where, overwrite):
    ws, run = new_workspace(examples, base)
    try:
        mutate(run, ws, data.draw(run_mutations(base["entries"]), label="changes"))
        out = {"beside": ws / "ev", "inside": run / "ev", "run": run}[where]
        staged = out.with_name(out.name + ".incomplete")
        if where != "run":
            plant_at(out, out_state, ws, base)
        plant_at(staged, staging, ws, base)
        replaceable = [out] if out_state == "empty" and where != "run" else []
        if overwrite and where != "run":  # (an evaluation inside the run is none of the files evaluate reads)
            replaceable += [out] if out_state in ("evaluation", "old-evaluation") else []
            replaceable += [staged] if staging == "lock" else []
        checked(["evaluate", run, "--out", out, *(["--overwrite"] if overwrite else [])], capsys, ws,
                owned=[out, staged], replaceable=replaceable)
    finally:
        finish(ws)


@fuzz(40)
@given(data=st.data(), model=st.sampled_from(["run", "export/student.onnx", "export/student.int8.onnx"]),
       recording=st.sampled_from(["good", "garbage", "link", "missing"]),
       out=st.sampled_from(["none", "new", "old", "link", "dangling", "folder", "input", "in-model"]),
       segments=st.booleans())
def test_predict_with_a_hostile_run(base, examples, capsys, data, model, recording, out, segments):
    ws, run = new_workspace(examples, base)
    try:
        mutate(run, ws, data.draw(run_mutations(base["entries"]), label="changes"))
        source = ws / "recording.csv"
        if recording == "garbage":
            source.write_bytes(data.draw(st.binary(max_size=200), label="recording"))
        elif recording == "link":
            replace_with_link(source, ws / "canary" / "secret.txt")
        elif recording == "missing":
            source.unlink()
        target = {"input": source, "in-model": run / data.draw(st.sampled_from(
            ["config.yaml", "checkpoints/best.pt", "export/student.onnx", "predictions.csv"]))}.get(out, ws / "windows.csv")
        if out == "old":
            target.write_text("start_s,end_s\n0,1\n")
        elif out in ("link", "dangling"):
            replace_with_link(target, link_targets(ws)[0 if out == "link" else 3])
        elif out == "folder":
            target.mkdir()
        args = ["predict", run if model == "run" else run / model, "--input", source]
        args += [] if out == "none" else ["--out", target]
        args += ["--segments", ws / "segments.jsonl"] if segments else []
        # a file of the run is its model's when the model is the run directory; beside an .onnx file it is only
        # a file the user named (predict replaces its outputs)
        mine = out not in ("none", "input") and not (out == "in-model" and model == "run")
        owned = [ws / "segments.jsonl"] + ([target] if mine else [])
        replaceable = [ws / "segments.jsonl"] + ([target] if out == "old" or (mine and out == "in-model") else [])
        checked(args, capsys, ws, owned=owned, replaceable=replaceable)
    finally:
        finish(ws)


@fuzz(6)
@given(data=st.data(), into=st.sampled_from(["run", "none", "user", "pskd-export", "link"]), overwrite=st.booleans(),
       int8=st.integers(0, 3).map(lambda n: n == 0))
def test_export_a_hostile_run(base, examples, capsys, data, into, overwrite, int8):
    ws, run = new_workspace(examples, base)
    try:
        touched = mutate(run, ws, data.draw(run_mutations(base["entries"]), label="changes"))
        args = ["export", run, *(["--int8"] if int8 else []), *(["--overwrite"] if overwrite else [])]
        if into == "run":
            owned = [run / "export"]
            intact = "export" not in touched and ({"export/.pskd-output.json", "export/student.onnx.json"} - touched)
            replaceable = owned if overwrite and intact else []
        else:
            mine = ws / "mine"
            if into == "pskd-export":
                shutil.copytree(base["run"] / "export", mine)
            elif into == "user":
                mine.mkdir()
                (mine / "student.onnx").write_bytes(b"a model of my own")
            elif into == "link":  # (a link above --out is the user's: pskd follows the path the user gave)
                mine.mkdir()
                name = data.draw(st.sampled_from(["student.onnx", "student.int8.onnx", "student.onnx.json"]))
                replace_with_link(mine / name, data.draw(st.sampled_from([ws / "canary" / "model.onnx",
                                                                          ws / "canary" / "missing"])))
            args += ["--out", mine / "student.onnx"]
            owned = [mine]
            replaceable = [mine] if overwrite and into == "pskd-export" else []
        checked(args, capsys, ws, owned=owned, replaceable=replaceable)
    finally:
        finish(ws)


@fuzz(4)
@given(data=st.data(), json_out=st.sampled_from(["none", "new", "link", "run"]))
def test_bench_a_hostile_run(base, examples, capsys, data, json_out):
    ws, run = new_workspace(examples, base)
    try:
        mutate(run, ws, data.draw(run_mutations(base["entries"], max_size=3), label="changes"))
        args = ["bench", run, *BENCH]
        owned, replaceable = [run / "export", run / "bench.json"], [run / "bench.json"]
        if json_out != "none":
            path = {"new": ws / "b.json", "link": ws / "b.json", "run": run / "config.yaml"}[json_out]
            if json_out == "link":
                replace_with_link(path, ws / "canary" / "secret.txt")
            args += ["--json", path]
            owned.append(path)
            replaceable += [path] if json_out == "new" else []
        checked(args, capsys, ws, owned=owned, replaceable=replaceable)
    finally:
        finish(ws)


@fuzz(8)
@given(data=st.data(), state=st.sampled_from(["finished", "staged", "interrupted"]),
       at_out=st.sampled_from(["none", "empty", "user", "file", "link"]), with_config=st.booleans())
def test_resume_a_hostile_run(base, examples, capsys, data, state, at_out, with_config):
    ws, run = new_workspace(examples, base)
    try:
        staged = ws / "run.incomplete"
        folder = run
        if state != "finished":
            run.rename(staged)
            folder = staged
            if state == "interrupted":
                (staged / "metrics.json").unlink()
                shutil.rmtree(staged / "export")
            plant_at(run, at_out, ws, base)
        mutate(folder, ws, data.draw(run_mutations(base["entries"], max_size=3), label="changes"))
        args = ["train", *([ws / "config.yaml"] if with_config else []), "--resume", run, "--quiet"]
        tidied = [run / "state", run / ".lock", *(p for p in run.rglob("*.tmp"))]
        checked(args, capsys, ws, owned=[run, staged], replaceable=[run] if at_out == "empty" else [],
                tidied=tidied, continued=[staged] if state != "finished" else [])
    finally:
        finish(ws)
