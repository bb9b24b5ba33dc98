"""The real commands over hostile inputs that reach them through a run or the command line: `--set` values, a
run's config.yaml, the model card inside an exported model, cache entries (planted links among them) and a folder
dataset whose files are links out of it. tests/fuzzing.py's checks hold after every command (exit code 0 or 2,
one error line, no traceback, memory under a bound, nothing changed outside what the command owns; the canary
folder, the target of every link, never changes). tests/test_bounds.py and tests/test_properties.py fuzz the
contents of configs, manifests, layouts, recordings and cache entries; this file adds the paths to them.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml
from fuzzing import GARBAGE, check_changes, fuzz, link_targets, remove, replace_with_link, run_command, snapshot, workspace
from hypothesis import given
from hypothesis import strategies as st
from test_bounds import dataset

KEYS = ["data", "dataset", "synthetic", "subjects", "trials", "classes", "preprocess", "sensor_length", "protocol",
        "train", "epochs", "batch_size", "student", "options", "widths", "seed", "labels", "fraction", "cache",
        "cache_dir", "threads", "x", "name", "data_dir", "plugins"]
HUGE = ["1e400", "-1e400", ".inf", "-.inf", ".nan", "nan", "inf", "1" + "0" * 40, "1" + "0" * 5000, "-1", "0",
        "3", "0.5", "true", "null", "''", "[]", "{}", "[1, 2]", "{a: 1}", "synthetic", "folder", "/etc", "../..",
        "!!binary aGk=", "*undefined", "&a [*a]", "\x00"]
values = (st.sampled_from(HUGE) | st.integers(-10, 10**6).map(str) | st.text(max_size=12)
          | st.integers(0, 3000).map(lambda d: "[" * d + "1" + "]" * d))
dotted = st.lists(st.sampled_from(KEYS), min_size=1, max_size=4).map(".".join)
tree_values = st.recursive(st.none() | st.booleans() | st.integers(-5, 10**20) | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner,
                                                                                       max_size=4), max_leaves=12)


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    return {"parent": tmp_path_factory.mktemp("fuzz-inputs"), "n": 0}


def new_workspace(examples, fuzz_base, run: bool = True) -> Path:
    examples["n"] += 1
    ws = workspace(examples["parent"], f"ex{examples['n']}")
    if run:
        shutil.copytree(fuzz_base["run"], ws / "run", symlinks=True)
    shutil.copy(fuzz_base["recording"], ws / "recording.csv")
    return ws


def checked(args: list, capsys, ws: Path, owned=(), replaceable=()) -> int:
    before = snapshot(ws)
    code, _, _ = run_command(args, capsys)
    check_changes(before, snapshot(ws), owned, replaceable if code == 0 else (), what=" ".join(map(str, args)))
    return code


def set_path(tree: dict, key: str, value) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(tree.get(part), dict):
            tree[part] = {}
        tree = tree[part]
    tree[parts[-1]] = value


@fuzz(30)
@given(overrides=st.lists(st.tuples(dotted, values), min_size=1, max_size=3),
       split=st.sampled_from(["test", "val", "all"]))
def test_evaluate_with_hostile_set_values(fuzz_base, examples, capsys, overrides, split):
    ws = new_workspace(examples, fuzz_base)
    try:
        sets = [a for key, value in overrides for a in ("--set", f"{key}={value}")]
        checked(["evaluate", ws / "run", "--split", split, "--out", ws / "ev", *sets], capsys, ws,
                owned=[ws / "ev", ws / "ev.incomplete"])
    finally:
        shutil.rmtree(ws, ignore_errors=True)


@fuzz(25)
@given(changes=st.lists(st.tuples(dotted, tree_values), max_size=4), raw=st.none() | st.text(max_size=200),
       command=st.sampled_from(["evaluate", "predict", "resume"]))
def test_a_hostile_config_yaml_in_a_run(fuzz_base, examples, capsys, changes, raw, command):
    ws = new_workspace(examples, fuzz_base)
    try:
        run = ws / "run"
        tree = yaml.safe_load((run / "config.yaml").read_text())
        for key, value in changes:
            set_path(tree, key, value)
        text = raw if raw is not None else yaml.safe_dump(tree, allow_unicode=True)
        if command == "resume":  # an interrupted run whose saved config is the hostile one
            run = ws / "run.incomplete"
            (ws / "run").rename(run)
        (run / "config.yaml").write_text(text, encoding="utf-8")
        if command == "evaluate":
            checked(["evaluate", run, "--out", ws / "ev"], capsys, ws, owned=[ws / "ev", ws / "ev.incomplete"])
        elif command == "predict":
            checked(["predict", run, "--input", ws / "recording.csv", "--out", ws / "w.csv"], capsys, ws,
                    owned=[ws / "w.csv"])
        else:  # a staged run that had finished: resuming it only gives it its name (or refuses)
            checked(["train", "--resume", ws / "run", "--quiet"], capsys, ws, owned=[ws / "run", run],
                    replaceable=[run])
    finally:
        shutil.rmtree(ws, ignore_errors=True)


def card_values():
    good = json.loads(json.dumps({"model": "compact_cnn", "streams": ["accelerometer"], "channels": 3,
                                  "seq_len": 32, "rate_hz": 50.0, "window_s": 2.0, "units": "g"}))
    fields = st.sampled_from([*good, "options", "class_names", "version", "normalize", "mean", "std", "extra"])
    return st.dictionaries(fields, tree_values | st.sampled_from([math.inf, -math.inf, math.nan, 10**30, -1, 0]),
                           max_size=5)


@fuzz(30)
@given(changes=card_values(), whole=st.none() | st.text(max_size=100) | tree_values.map(json.dumps),
       command=st.sampled_from(["predict", "bench"]))
def test_a_hostile_model_card_in_an_exported_model(fuzz_base, examples, capsys, changes, whole, command):
    import onnx

    from pskd.deploy.runtime import CARD_KEY

    ws = new_workspace(examples, fuzz_base, run=False)
    try:
        model = onnx.load(str(fuzz_base["run"] / "export" / "student.onnx"))
        entry = next(e for e in model.metadata_props if e.key == CARD_KEY)
        card = json.loads(entry.value)
        card.update(changes)
        entry.value = whole if whole is not None else json.dumps(card)  # json.dumps writes NaN and Infinity too
        onnx.save(model, str(ws / "model.onnx"))
        if command == "predict":
            checked(["predict", ws / "model.onnx", "--input", ws / "recording.csv"], capsys, ws)
        else:
            checked(["bench", ws / "model.onnx", "--repeats", "5", "--warmup", "0", "--max-seconds", "0.1"],
                    capsys, ws)
    finally:
        shutil.rmtree(ws, ignore_errors=True)


@pytest.fixture(scope="module")
def cache_entry(fuzz_base, tmp_path_factory):
    """The cache entry an evaluation of the base run writes: its file name and bytes."""
    from pskd.deploy.evaluate import evaluate_model

    folder = tmp_path_factory.mktemp("fuzz-cache")
    evaluate_model(fuzz_base["run"], "test", folder / "ev", [f"data.cache_dir={folder / 'cache'}"],
                   log=lambda *a, **k: None)
    (entry,) = (folder / "cache").iterdir()
    return entry.name, entry.read_bytes()


@fuzz(10)
@given(state=st.sampled_from(["good", "garbage", "cut", "link-file", "link-entry", "dangling", "folder",
                              "cache-file", "tmp-link"]), garbage=GARBAGE, cut=st.integers(1, 5000))
def test_hostile_cache_entries_and_links(fuzz_base, examples, capsys, cache_entry, state, garbage, cut):
    ws = new_workspace(examples, fuzz_base)
    try:
        name, good = cache_entry
        cache = ws / "cache"
        cache.mkdir()
        entry = cache / name
        entry.write_bytes(good)
        (ws / "canary" / "entry.npz").write_bytes(good)
        if state == "garbage":
            entry.write_bytes(garbage)
        elif state == "cut":
            entry.write_bytes(good[:-cut])
        elif state in ("link-file", "link-entry", "dangling"):
            target = {"link-file": link_targets(ws)[0], "link-entry": ws / "canary" / "entry.npz",
                      "dangling": link_targets(ws)[3]}[state]
            replace_with_link(entry, target)
        elif state == "folder":
            remove(entry)
            entry.mkdir()
            (entry / "x").write_bytes(b"x")
        elif state == "cache-file":
            shutil.rmtree(cache)
            cache.write_bytes(b"not a folder")
        elif state == "tmp-link":  # a temporary name planted beside the entry
            (cache / f".{name}.pskd-tmp").symlink_to(link_targets(ws)[0])
        code = checked(["evaluate", ws / "run", "--out", ws / "ev", "--set", f"data.cache_dir={cache}"], capsys, ws,
                       owned=[cache, ws / "ev", ws / "ev.incomplete"], replaceable=[cache])
        if state in ("good", "garbage", "cut", "link-file", "dangling"):
            assert code == 0
    finally:
        shutil.rmtree(ws, ignore_errors=True)


@fuzz(30)
@given(links=st.lists(st.tuples(st.sampled_from(["manifest.csv", "acc", "acc/c0.csv", "acc/s1.npy", "layout.json"]),
                                st.integers(0, 3)), max_size=3), skeleton=st.booleans())
def test_data_check_on_a_folder_dataset_with_links_out(examples, fuzz_base, capsys, links, skeleton):
    ws = new_workspace(examples, fuzz_base, run=False)
    try:
        root = dataset(ws, skeleton=skeleton)
        if skeleton:
            (root / "layout.json").write_text(json.dumps({"joints": ["j0", "j1", "j2"], "edges": [[0, 1], [1, 2]]}))
        for rel, target in links:
            if (root / rel).parent.is_symlink():
                continue
            replace_with_link(root / rel, link_targets(ws)[target])
        checked(["data", "check", "folder", "--data-dir", root, "--set", f"data.cache_dir={ws / 'cache'}"], capsys,
                ws, owned=[ws / "cache"])
    finally:
        shutil.rmtree(ws, ignore_errors=True)
