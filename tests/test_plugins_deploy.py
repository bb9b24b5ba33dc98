"""Plugins all the way: a run records the plugin files it used (path and SHA-256); export, evaluate, bench and
predict import a plugin only when the user names it and its digest is the recorded one, and otherwise say which
file to pass (one line, exit 2). A model registered in Python without a file gets an error saying what to do."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, run_cli
from test_distill_pipeline import TINY
from test_extending import docs_example

GRU = {"method": "ce", "student": {"name": "gru", "streams": ["accelerometer"], "options": {"hidden": 8}}}


def fresh_pskd(args: list[str]) -> subprocess.CompletedProcess:
    """The pskd command in a new process: nothing registered but what it loads itself."""
    return subprocess.run([sys.executable, "-m", "pskd", *args], capture_output=True, text=True, cwd=REPO)


@pytest.fixture(scope="module")
def gru_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gru")
    plugin = folder / "gru_model.py"
    plugin.write_text(docs_example("gru_model.py"), encoding="utf-8")
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({**TINY, **GRU, "plugins": [str(plugin)]}), encoding="utf-8")
    done = fresh_pskd(["train", str(config), "--out", str(folder / "run"), "--quiet"])
    assert done.returncode == 0, done.stderr
    return folder / "run", plugin


def test_the_run_records_each_plugin_with_its_digest(gru_run):
    run, plugin = gru_run
    recorded = yaml.safe_load((run / "config.yaml").read_text())["plugins"]
    assert recorded == [{"path": str(plugin.resolve()), "sha256": hashlib.sha256(plugin.read_bytes()).hexdigest()}]


@pytest.mark.parametrize("command", [["export"], ["evaluate", "--out", "{tmp}/eval"],
                                     ["predict", "--input", "{tmp}/walk.npy"]])
def test_a_deploy_command_without_the_plugin_names_the_file_to_pass(gru_run, tmp_path, command):
    run, plugin = gru_run
    args = [a.format(tmp=tmp_path) for a in command]
    done = fresh_pskd([args[0], str(run), *args[1:]])
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and f"plugin {plugin.resolve()}" in done.stderr
    assert "--plugin" in done.stderr and "weights" not in done.stderr and "best.pt.name" not in done.stderr


def test_every_deploy_command_runs_with_the_recorded_plugin(gru_run, tmp_path):
    run, plugin = gru_run
    np.save(tmp_path / "walk.npy", np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32))
    for args in (["export", str(run), "--out", str(tmp_path / "gru.onnx")],
                 ["evaluate", str(run), "--out", str(tmp_path / "eval")],
                 ["bench", str(run), "--repeats", "5", "--warmup", "0"],
                 ["predict", str(run), "--input", str(tmp_path / "walk.npy"), "--out", str(tmp_path / "w.csv")]):
        done = fresh_pskd([*args, "--plugin", str(plugin)])
        assert done.returncode == 0, (args[0], done.stderr)
    assert (tmp_path / "gru.onnx").is_file() and (tmp_path / "eval" / "metrics.json").is_file()
    assert (tmp_path / "w.csv").read_text().count("\n") > 2


def test_a_plugin_whose_digest_is_not_recorded_is_not_imported(gru_run, tmp_path):
    run, plugin = gru_run
    canary = tmp_path / "imported"
    changed = tmp_path / "gru_model.py"
    changed.write_text(plugin.read_text() + f"\nopen({str(canary)!r}, 'w').close()\n", encoding="utf-8")
    done = fresh_pskd(["export", str(run), "--plugin", str(changed)])
    assert done.returncode == 2 and "is not that of a plugin" in done.stderr and "gru_model.py (" in done.stderr
    assert not canary.exists()  # refused before any of its code ran


def test_a_recorded_entry_loads_only_a_file_of_that_digest(gru_run, tmp_path, capsys):
    run, plugin = gru_run
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["plugins"][0]["sha256"] = "0" * 64
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(saved), encoding="utf-8")
    code, _, err = run_cli(["train", str(config), "--out", str(tmp_path / "again"), "--quiet"], capsys)
    assert code == 2 and "its SHA-256 is" in err and "recorded" in err and not (tmp_path / "again").exists()


def test_a_model_registered_in_python_without_a_file_says_how_to_make_it_loadable(tmp_path):
    code = f"""
import sys, torch, pskd
sys.path.insert(0, {str(REPO / 'tests')!r})
from test_distill_pipeline import TINY

@pskd.register_model("cell_net")
class CellNet(torch.nn.Module):
    def __init__(self, c_in, num_classes, seq_len):
        super().__init__()
        self.embedding_dim = c_in
        self.head = torch.nn.Linear(c_in, num_classes)
    def forward(self, x):
        return x.mean(dim=2), self.head(x.mean(dim=2))

pskd.train({{**TINY, "method": "ce", "student": {{"name": "cell_net"}}}}, {str(tmp_path / 'run')!r},
           log=lambda *a, **k: None)
card, classify = pskd.load_classifier({str(tmp_path / 'run')!r})   # the same process knows the class
assert card.model == "cell_net"
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    refused = fresh_pskd(["export", str(tmp_path / "run")])
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "registered by __main__" in refused.stderr and "plugin file" in refused.stderr


def test_the_bytes_hashed_are_the_bytes_run_a_planted_bytecode_cache_is_never_read(gru_run, tmp_path):
    """A __pycache__ file stamped with the genuine source's size and time would be preferred by Python's own
    loader; pskd compiles the very bytes it hashed."""
    import importlib.util
    import marshal
    import os

    run, plugin = gru_run
    canary = tmp_path / "bytecode-ran"
    st = os.stat(plugin)
    evil = plugin.read_text() + f"\nopen({str(canary)!r}, 'w').close()\n"
    header = (importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little") + (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
              + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little"))
    cached = Path(importlib.util.cache_from_source(str(plugin)))
    cached.parent.mkdir(exist_ok=True)
    cached.write_bytes(header + marshal.dumps(compile(evil, str(plugin), "exec")))
    done = fresh_pskd(["export", str(run), "--out", str(tmp_path / "m.onnx"), "--plugin", str(plugin)])
    assert done.returncode == 0, done.stderr
    assert not canary.exists()


def test_export_never_imports_the_plugins_a_run_folder_records(gru_run, tmp_path):
    """A run folder someone sent, whose config.yaml names a plugin of theirs: export, with the user's own --plugin,
    imports the user's file only."""
    import shutil

    run, plugin = gru_run
    sent = tmp_path / "sent"
    shutil.copytree(run, sent)
    canary = tmp_path / "their-code-ran"
    theirs = sent / "helper.py"
    theirs.write_text(f"open({str(canary)!r}, 'w').close()\n", encoding="utf-8")
    saved = yaml.safe_load((sent / "config.yaml").read_text())
    saved["plugins"].append({"path": str(theirs), "sha256": hashlib.sha256(theirs.read_bytes()).hexdigest()})
    (sent / "config.yaml").write_text(yaml.safe_dump(saved), encoding="utf-8")
    done = fresh_pskd(["export", str(sent), "--out", str(tmp_path / "m.onnx"), "--plugin", str(plugin)])
    assert done.returncode == 0, done.stderr
    assert not canary.exists()
