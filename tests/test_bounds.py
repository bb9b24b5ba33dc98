"""Untrusted input is bounded before it is parsed (pskd.limits, docs/limits.md): hostile cases named one by one
(the alias bomb, the 3 GB .npz, the 100,000-column manifest, the 27 MB layout, ...) and a fuzzer over configs,
`--set` values, manifests, layouts, cache entries, recordings and a sweep's records. Each runs the real command
or function and checks: exit code 0 or 2 with one error line (or pskd's own one-line error), no traceback, memory
(tracemalloc's peak, which numpy's arrays count in) and time under a bound.

The fuzzer's CI profile runs a few hundred examples in all (seconds). A longer run, 25 times the examples:

    PSKD_FUZZ=long .venv/bin/python -m pytest -q tests/test_bounds.py
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pskd.cli  # noqa: F401  (imported before any memory is measured)
import pskd.pipeline  # noqa: F401
from pskd import limits, sweep
from pskd.config import build_config, load_config
from pskd.data import folder_streams
from pskd.deploy.card import ModelCard
from pskd.deploy.predict import read_recording
from pskd.deploy.timeline import read_truth
from pskd.errors import ConfigError, UserError

LONG = os.environ.get("PSKD_FUZZ", "") == "long"
MiB = 1024**2
HOSTILE_MB = 64  # what a refused hostile input may cost, at most
FUZZ_MB = 256  # what any one generated input may cost
SECONDS = 10.0  # CPU seconds before the error line (or the result), for any one input


def fuzz(examples: int):
    return settings(max_examples=examples * (25 if LONG else 1), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def measured(call):
    """(what call returned, tracemalloc peak in MiB, CPU seconds: the machine may be busy with other work)."""
    tracemalloc.start()
    tic = time.process_time()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1] / MiB, time.process_time() - tic
    finally:
        tracemalloc.stop()


def cli(args: list[str], capsys, mb: float = FUZZ_MB) -> tuple[int, str]:
    """The command run in this process: exit 0 or 2, no traceback, within the memory and time bounds."""
    (code, _, err), peak, seconds = measured(lambda: run_cli([str(a) for a in args], capsys))
    assert code in (0, 2), f"exit {code}: {err[-2000:]}"
    assert "Traceback" not in err, err[-2000:]
    assert peak < mb, f"{peak:.0f} MiB: {args[:3]}"
    assert seconds < SECONDS, f"{seconds:.1f} s: {args[:3]}"
    if code == 2:
        errors = [line for line in err.splitlines() if "error" in line.lower()]
        assert len(errors) == 1 and err.splitlines()[-1].startswith("pskd: error: "), err[-2000:]
    return code, err


def own_error_or_value(call, mb: float = FUZZ_MB):
    """call() returns, or raises pskd's own one-line error, within the memory bound."""
    def guarded():
        try:
            return call()
        except UserError as err:
            assert str(err) and "\n" not in str(err)
            return err

    result, peak, _ = measured(guarded)
    assert peak < mb, f"{peak:.0f} MiB"
    return result


# ---- hostile cases, one by one -------------------------------------------------------------------------------

HEADER = "clip_id,label,subject,accelerometer,accelerometer_rate\n"
CE = str(REPO / "configs" / "utd_mhad" / "student_ce.yaml")


def alias_bomb(levels: int = 9, flow: bool = False) -> str:
    """600 bytes of YAML that stand for 9**9 (387 million) items."""
    names = [f"n{i}" for i in range(levels)]
    parts = [f"&{names[0]} [x, x, x, x, x, x, x, x, x]"]
    parts += [f"&{names[i]} [" + ", ".join([f"*{names[i - 1]}"] * 9) + "]" for i in range(1, levels)]
    if flow:
        return "[" + ", ".join(parts) + "]"
    return "".join(f"{name}: {part}\n" for name, part in zip(names, parts))


def dataset(tmp: Path, manifest: str | None = None, skeleton: bool = False) -> Path:
    """A small valid folder dataset (two classes), with `manifest` instead of its own when given."""
    root = tmp / "own"
    (root / "acc").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i, label in enumerate(["walk", "sit", "walk", "sit"]):
        np.savetxt(root / "acc" / f"c{i}.csv", rng.normal(size=(40, 3)), delimiter=",")
        row = f"c{i},{label},{i % 2 + 1},acc/c{i}.csv,50"
        if skeleton:
            np.save(root / "acc" / f"s{i}.npy", rng.normal(size=(20, 3, 3)).astype(np.float32))
            row += f",acc/s{i}.npy,25"
        rows.append(row + "\n")
    header = HEADER.strip() + (",skeleton,skeleton_rate" if skeleton else "") + "\n"
    (root / "manifest.csv").write_text(manifest if manifest is not None else header + "".join(rows))
    return root


def _config(text: str, *extra: str):
    def prepare(tmp: Path) -> list:
        (tmp / "c.yaml").write_text(text)
        return ["train", tmp / "c.yaml", "--out", tmp / "run", *extra]

    return prepare


def _set(*overrides: str):
    def prepare(tmp: Path) -> list:
        return ["train", CE, "--out", tmp / "run", *[x for o in overrides for x in ("--set", o)]]

    return prepare


def _saved_config_bomb(tmp: Path) -> list:
    (tmp / "run.incomplete").mkdir()
    (tmp / "run.incomplete" / "config.yaml").write_text(alias_bomb())
    return ["train", "--resume", tmp / "run"]


def _folder(manifest: str | None = None, layout: str | None = None, link: str | None = None, skeleton=False):
    def prepare(tmp: Path) -> list:
        root = dataset(tmp, manifest, skeleton=skeleton or layout is not None)
        if layout is not None:
            (root / "layout.json").write_text(layout)
        if link is not None:  # the file becomes a link to a copy outside the folder
            (tmp / "elsewhere").write_bytes((root / link).read_bytes() if (root / link).exists() else b"{}")
            (root / link).unlink(missing_ok=True)
            (root / link).symlink_to(tmp / "elsewhere")
        return ["data", "check", "folder", "--data-dir", root]

    return prepare


def _recording(values: float, suffix: str):
    def prepare(tmp: Path) -> list:
        root = dataset(tmp)
        if suffix == ".npy":
            np.save(root / "acc" / "c0.npy", np.full((40, 3), values))
        else:
            np.savetxt(root / "acc" / "c0.csv", np.full((40, 3), values), delimiter=",")
        text = (root / "manifest.csv").read_text().replace("acc/c0.csv", f"acc/c0{suffix}")
        (root / "manifest.csv").write_text(text)
        return ["data", "check", "folder", "--data-dir", root]

    return prepare


def _sweep_rows(text: str):
    def prepare(tmp: Path) -> list:
        (tmp / "s").mkdir()
        (tmp / "s" / "rows.jsonl").write_text(text)
        return ["sweep", CE, "--methods", "ce", "--seeds", "1", "--out", tmp / "s", "--resume"]

    return prepare


def _duplicate_edges(count: int) -> str:
    return '{"joints": ["a", "b", "c"], "edges": [' + ",".join(["[0,1]"] * count) + "]}"


DEEP = "[" * 100_000 + "]" * 100_000
ROW = "c0,walk,1,acc/c0.csv,50\nc1,sit,2,acc/c1.csv,50\n"

HOSTILE = {
    "YAML alias bomb (600 bytes)": (_config(alias_bomb()), "YAML nodes (aliases counted"),
    "YAML nested 100,000 deep": (_config("train: " + DEEP + "\n"), "nested deeper than 32 levels"),
    "config over 1 MiB": (_config("# " + "x" * (2 * MiB) + "\n"), "more than the 1.0 MiB allowed"),
    "infinite learning rate": (_config("train: {lr: .inf}\n"), "train.lr: inf is not a finite number"),
    "NaN distillation weight": (_config("distill: {alpha: .nan}\n"), "distill.alpha: nan is not a finite number"),
    "float overflow to inf": (_config("train: {weight_decay: 1.0e+400}\n"), "train.weight_decay: inf is not a"),
    "infinite term weight by --set": (_set("distill.terms.fixmatch.weight=.inf"),
                                      "--set distill.terms.fixmatch.weight: inf is not a finite number"),
    "epochs 1e44 by --set": (_set("train.epochs=1e44"), "train.epochs: Unable to parse input string as an integer"),
    "epochs a 45-digit integer": (_config("train: {epochs: 1" + "0" * 44 + "}\n"), "less than or equal to 100000"),
    "integer of 5,000 digits": (_config("seed: 1" + "0" * 5000 + "\n"), "a value that cannot be read"),
    "batch of ten million clips": (_set("train.batch_size=10000000"), "train.batch_size"),
    "clips of a million samples": (_set("preprocess.sensor_length=1000000"), "preprocess.sensor_length"),
    "--set value nested 1,000 deep": (_set("student.options=" + "[" * 1000), "--set student.options: nested deeper"),
    "--set alias bomb": (_set("student.options.widths=" + alias_bomb(flow=True)), "--set student.options.widths: "
                                                                                  "more than 20000 YAML nodes"),
    "--set value of 200,000 characters": (_set("name=" + "a" * 200_000), "200000 characters, more than the"),
    "saved config.yaml alias bomb on resume": (_saved_config_bomb, "YAML nodes"),
    "manifest field of 10 MB": (_folder(HEADER + ROW + "c2," + "x" * 10_000_000 + ",1,acc/c2.csv,50\n"),
                                "row 4: a field longer than 4096 characters"),
    "manifest of 100,000 columns": (_folder(",".join(f"s{i}" for i in range(100_000)) + "\n" + ROW),
                                    "the header has 100000 columns, more than the 1000 allowed"),
    "layout.json of 27 MB duplicate edges": (_folder(layout=_duplicate_edges(4_500_000)),
                                             "layout.json: 25.7 MiB, more than the 1.0 MiB allowed"),
    "layout.json of 150,000 duplicate edges": (_folder(layout=_duplicate_edges(150_000)),
                                               "150000 edges, more than the 10000 allowed"),
    "layout.json of 2,000 joints": (_folder(layout=json.dumps({"joints": [f"j{i}" for i in range(2000)]})),
                                    "2000 joints, more than the 1000 allowed"),
    "layout.json nested 100,000 deep": (_folder(layout='{"joints": ' + DEEP + "}"), "nested deeper than 32"),
    "layout.json linked outside the folder": (_folder(layout='{"joints": ["a", "b", "c"]}', link="layout.json"),
                                              "layout.json: resolves outside the folder"),
    "manifest.csv linked outside the folder": (_folder(link="manifest.csv"), "manifest.csv: resolves outside"),
    ".npy recording of 1e300": (_recording(1e300, ".npy"), "acc/c0.npy: values beyond float32's range"),
    ".csv recording of -1e300": (_recording(-1e300, ".csv"), "acc/c0.csv: values beyond float32's range"),
    "sweep rows.jsonl nested 100,000 deep": (_sweep_rows(DEEP + "\n{}\n"), "line 1 is not a result row"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_is_refused_in_bounded_memory_and_time(name, tmp_path, capsys):
    prepare, message = HOSTILE[name]
    args = prepare(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    code, err = cli(args, capsys, mb=HOSTILE_MB)
    assert code == 2 and message in err, err[-2000:]  # in the error line (or the problems data check lists)
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, nothing removed


def test_the_file_size_limits_are_raised_by_the_environment(tmp_path, capsys, monkeypatch):
    root = dataset(tmp_path)
    monkeypatch.setitem(limits.FILE_BYTES, "manifest", 100)  # as if the manifest were larger than its limit
    code, err = cli(["data", "check", "folder", "--data-dir", root], capsys)
    assert code == 2 and "more than the 100 bytes allowed (set PSKD_MAX_FILE_MB to raise it)" in err
    monkeypatch.setenv("PSKD_MAX_FILE_MB", "1")
    assert cli(["data", "check", "folder", "--data-dir", root], capsys)[0] == 0
    monkeypatch.setenv("PSKD_MAX_FILE_MB", "lots")
    code, err = cli(["data", "check", "folder", "--data-dir", root], capsys)
    assert code == 2 and "PSKD_MAX_FILE_MB='lots': expected a number of MiB" in err
    monkeypatch.delenv("PSKD_MAX_FILE_MB")
    assert limits.file_bytes("recording") == limits.FILE_BYTES["recording"]  # a smaller value never lowers it


def test_a_manifest_of_many_columns_is_read_in_linear_time(tmp_path, capsys):
    """999 columns (the limit is 1,000: 498 streams with their rates) and 20 rows whose every stream is missing:
    every problem is found, in about the time it takes to look for the files."""
    streams = [f"s{i}" for i in range(498)]
    header = "clip_id,label,subject," + ",".join(f"{s},{s}_rate" for s in streams) + "\n"
    rows = "".join(f"c{r},walk,1," + ",".join(["nowhere.csv,50"] * len(streams)) + "\n" for r in range(20))
    root = dataset(tmp_path, header + rows)
    tic = time.process_time()
    code, out, err = run_cli(["data", "check", "folder", "--data-dir", str(root), "--json"], capsys)
    assert code == 2 and time.process_time() - tic < 5 and "Traceback" not in err
    assert sum(line.startswith("  row ") for line in err.splitlines()) == 20 * 498  # each listed, then the error


# ---- numbers out of range during training and prediction ---------------------------------------------------------

SMALL_RUN = ["--set", "data.dataset=synthetic", "--set", "data.synthetic.subjects=4", "--set",
             "data.synthetic.trials=2", "--set", "data.synthetic.classes=3", "--set", "preprocess.sensor_length=32",
             "--set", "train.epochs=4", "--set", "train.warmup_epochs=0", "--set", "train.grad_clip=null",
             "--set", "progress=false", "--set", "threads=1"]


def test_a_nan_loss_stops_the_run_and_keeps_its_checkpoints(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["train", CE, "--out", str(out), *SMALL_RUN, "--set", "train.lr=1e30"], capsys)
    assert code == 2 and "Traceback" not in err
    line = err.splitlines()[-1]
    assert "student: the training loss is nan at epoch" in line and "the run is stopped" in line, err
    assert f"checkpoints up to then are kept in {out}.incomplete" in line
    assert (out.with_name("run.incomplete") / "state" / "student.pt").is_file() and not out.exists()


@pytest.mark.parametrize("value", [1e30, 1e37, 1e300])
def test_predict_never_writes_a_nan_for_huge_values(value, trained, tmp_path, capsys):
    run_dir, _ = trained
    np.save(tmp_path / "rec.npy", np.full((400, 3), value))
    code, err = cli(["predict", run_dir, "--input", tmp_path / "rec.npy", "--out", tmp_path / "w.csv"], capsys)
    if code == 0:
        text = (tmp_path / "w.csv").read_text().lower()
        assert "nan" not in text and "inf" not in text
    else:
        assert not (tmp_path / "w.csv").exists()
        assert value < limits.FLOAT32_MAX or "a value beyond float32's range" in err, err


# ---- the fuzzer ------------------------------------------------------------------------------------------------

KEYS = ["train", "epochs", "lr", "batch_size", "data", "dataset", "labels", "fraction", "student", "options",
        "widths", "seed", "teachers", "distill", "alpha", "terms", "fixmatch", "weight", "preprocess",
        "sensor_length", "x", "<<"]
SCALARS = [".inf", "-.inf", ".nan", "1e44", "1.0e+400", "1" + "0" * 30, "1" + "0" * 5000, "0", "-1", "3", "0.5",
           "true", "null", "~", "''", "folder", "synthetic", "2020-13-45", "!!binary aGk=", "!!float x", "*undefined"]


def flow(depth: int):
    """YAML flow text: scalars, lists and mappings of config keys, nested up to `depth` (beyond the limit too)."""
    scalar = st.sampled_from(SCALARS) | st.integers(-10, 10**6).map(str)
    return st.recursive(scalar, lambda inner: st.lists(inner, max_size=4).map(lambda v: "[" + ", ".join(v) + "]")
                        | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4).map(
                            lambda d: "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"),
                        max_leaves=depth)


@st.composite
def yaml_configs(draw) -> str:
    """A config: anchors that may repeat earlier ones (an alias bomb when they do), sections, deep nesting."""
    lines = []
    for i in range(draw(st.integers(0, 7))):
        items = draw(st.lists(st.sampled_from(["1", "x", *[f"*a{j}" for j in range(i)]]), max_size=10))
        lines.append(f"a{i}: &a{i} [{', '.join(items)}]")
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=5, unique=True)):
        lines.append(f"{key}: {draw(flow(12))}")
    if draw(st.booleans()):
        depth = draw(st.integers(1, 2000))
        lines.append("deep: " + "[" * depth + "]" * depth)
    return "\n".join(lines) + "\n"


@fuzz(60)
@given(text=yaml_configs() | st.text(alphabet="[]{}:,&*ab01 .\n-!#'\"<", max_size=300))
def test_fuzz_yaml_configs(text, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(text, encoding="utf-8")
        own_error_or_value(lambda: load_config(path))
        cli(["data", "check", "--config", path, "--data-dir", Path(tmp) / "nowhere"], capsys)


@fuzz(60)
@given(key=st.lists(st.sampled_from(KEYS[:-1]), min_size=1, max_size=4).map(".".join),
       value=flow(30) | st.text(alphabet="[]{}:,&*ab01 .-!#'\"", max_size=100)
       | st.builds(lambda d: "[" * d + "1" + "]" * d, st.integers(0, 3000))
       | st.builds(lambda n: alias_bomb(n, flow=True), st.integers(1, 9)))
def test_fuzz_set_values(key, value):
    result = own_error_or_value(lambda: build_config({}, [f"{key}={value}"]))
    if not isinstance(result, UserError):
        json.dumps(result.model_dump(mode="json"), allow_nan=False)  # every number of a built config is finite


cells = (st.text(max_size=12) | st.sampled_from(["", "acc/c0.csv", "../x", "50", "nan", "1e400", '"q,"', "\x00"])
         | st.integers(0, 20_000).map(lambda n: "x" * n))


@fuzz(50)
@given(extra=st.integers(0, 3000), names=st.lists(st.sampled_from(["clip_id", "label", "subject", "trial",
                                                                   "accelerometer", "accelerometer_rate", "s_rate",
                                                                   "accelerometer_start", "s", "s_stop"]), max_size=8),
       rows=st.lists(st.lists(cells, max_size=8), max_size=5), newline=st.sampled_from(["\n", "\r\n", "\r"]))
def test_fuzz_manifests(extra, names, rows, newline, capsys):
    header = names + [f"c{i}" for i in range(extra)]
    text = newline.join(",".join(row) for row in [header, *rows])
    with tempfile.TemporaryDirectory() as tmp:
        cli(["data", "check", "folder", "--data-dir", dataset(Path(tmp), text)], capsys)


json_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 30) | st.floats() | st.text(max_size=6),
                           lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=5), max_leaves=20)
joint = st.integers(-1, 4) | st.sampled_from(["j0", "j1", "j2", "nope"])
layouts = st.fixed_dictionaries({"joints": st.lists(st.sampled_from(["j0", "j1", "j2", "j3"]), max_size=5)
                                 | st.integers(0, 3000).map(lambda n: [f"j{i}" for i in range(n)])},
                                optional={"edges": st.lists(st.lists(joint, min_size=2, max_size=2), max_size=30)
                                          | st.integers(0, 20_000).map(lambda n: [[0, 1]] * n),
                                          "center": joint, "hip": joint, "name": st.text(max_size=300)})


@fuzz(50)
@given(text=layouts.map(json.dumps) | json_values.map(json.dumps) | st.text(max_size=50)
       | st.integers(0, 5000).map(lambda d: '{"joints": ["j0", "j1", "j2"], "x": ' + "[" * d + "]" * d + "}"))
def test_fuzz_layouts(text, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        root = dataset(Path(tmp), skeleton=True)
        (root / "layout.json").write_text(text)
        cli(["data", "check", "folder", "--data-dir", root], capsys)



CARD = ModelCard(model="compact_cnn", options={}, streams=["accelerometer"], channels=3, seq_len=32, rate_hz=50.0,
                 window_s=2.0, units="g", class_names=["a", "b"])
huge = st.sampled_from([1e300, -1e300, 3.5e38, 3.4e38, 1e30, np.inf, np.nan, 0.0, -2.0])


@fuzz(40)
@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True) | huge, min_size=6, max_size=300),
       units=st.sampled_from([None, "g", "m/s2"]))
def test_fuzz_recordings(values, units):
    array = np.array(values[: len(values) // 3 * 3], dtype=np.float64).reshape(-1, 3)
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in (".npy", ".csv"):
            path = Path(tmp) / f"rec{suffix}"
            np.save(path, array) if suffix == ".npy" else np.savetxt(path, array, delimiter=",")
            try:
                loaded = folder_streams.read_array(path)  # a folder dataset's recording
                assert np.isfinite(loaded).all() or not np.isfinite(array).all()
            except ValueError as err:
                assert "\n" not in str(err)
            recording = own_error_or_value(lambda: read_recording(path, CARD, units))  # pskd predict's input
            if not isinstance(recording, UserError):
                assert (np.abs(recording.signal) <= limits.FLOAT32_MAX).all()


record_lines = (json_values.map(json.dumps) | st.text(max_size=30)
                | st.integers(0, 5000).map(lambda d: "[" * d + "]" * d)
                | st.fixed_dictionaries({"point": json_values, "seed": json_values, "variant": json_values,
                                         "accuracy": json_values, "macro_f1": json_values,
                                         "seconds": json_values}).map(json.dumps))


@fuzz(40)
@given(lines=st.lists(record_lines, max_size=6))
def test_fuzz_sweep_records_and_truth_files(lines):
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("rows.jsonl", "invocations.jsonl", "truth.jsonl"):
            (Path(tmp) / name).write_text("\n".join(lines) + "\n")
        rows = own_error_or_value(lambda: sweep._read_rows(Path(tmp) / "rows.jsonl"))
        assert isinstance(rows, (list, ConfigError))
        total = own_error_or_value(lambda: sweep._record_invocation(Path(tmp), 1.0, 0))
        assert isinstance(total, float) and total >= 1.0
        own_error_or_value(lambda: read_truth(Path(tmp) / "truth.jsonl", ["a", "b"]))
