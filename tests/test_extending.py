"""The examples of docs/extending.md ("Extending pskd"), exactly as written there: each is one file of the user's, named by a
config's `plugins`, and trains through the `pskd` command."""

from __future__ import annotations

import json
import re

import numpy as np
import yaml
from conftest import REPO, run_cli
from test_distill_pipeline import TINY

from pskd.data import synthetic


def docs_example(name: str) -> str:
    text = (REPO / "docs" / "extending.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- example: {re.escape(name)} -->\n```python\n(.*?)```", text, re.S)
    assert match, f"docs/extending.md has no example {name}"
    return match.group(1)


def train(tmp_path, capsys, name: str, tree: dict) -> dict:
    (tmp_path / name).write_text(docs_example(name), encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**TINY, **tree, "plugins": [str(tmp_path / name)]}), encoding="utf-8")
    code, _, err = run_cli(["train", str(config), "--out", str(tmp_path / "run"), "--quiet"], capsys)
    assert code == 0, err
    return json.loads((tmp_path / "run" / "metrics.json").read_text())


def test_the_documented_loss_is_one_file(tmp_path, capsys):
    metrics = train(tmp_path, capsys, "cosine_term.py", {
        "method": "pskd", "distill": {"add_terms": ["cosine"], "terms": {"cosine": {"weight": 0.5}}}})
    assert metrics["stages"][0]["loss"] == ["acs", "cosine"]
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()[0].split(",")
    assert "train_cosine" in history


def test_the_documented_model_is_one_file(tmp_path, capsys):
    metrics = train(tmp_path, capsys, "gru_model.py", {
        "method": "ce", "student": {"name": "gru", "streams": ["accelerometer"], "options": {"hidden": 8}}})
    assert metrics["student"]["model"] == "gru" and metrics["student"]["params"] > 0


def test_the_documented_dataset_is_one_file(tmp_path, capsys):
    """Arrays from the synthetic generator saved as the example's .npz; PSKD trains on them through the plugin."""
    info, clips = synthetic.load(subjects=3, trials=2, classes=3)

    def stacked(stream):  # clips of one length, as a preprocessed archive would hold them
        shortest = min(len(c.streams[stream]) for c in clips)
        return np.stack([c.streams[stream][:shortest] for c in clips]).astype(np.float32)

    np.savez(tmp_path / "pairs.npz", skeleton=stacked("skeleton"), accelerometer=stacked("accelerometer"),
             label=np.array([c.label for c in clips]), subject=np.array([c.subject for c in clips]),
             class_names=np.array(info.class_names))
    metrics = train(tmp_path, capsys, "pairs_npz.py", {
        "method": "pskd", "data": {"dataset": "pairs_npz", "data_dir": str(tmp_path), "protocol": "holdout",
                                   "cache": False, "pairs_npz": {"test_subjects": [2]}}})
    assert metrics["dataset"] == "pairs_npz" and metrics["split"]["test_subjects"] == [2]
    assert metrics["student"]["test"]["accuracy"] >= 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"]["pairs_npz"] == {"file": "pairs.npz", "test_subjects": [2], "layout": "utd_kinect_v1"}


def test_a_plugin_dataset_checks_its_own_options(tmp_path, capsys):
    (tmp_path / "pairs_npz.py").write_text(docs_example("pairs_npz.py"), encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**TINY, "plugins": [str(tmp_path / "pairs_npz.py")],
                                      "data": {"dataset": "pairs_npz", "data_dir": str(tmp_path), "protocol": "holdout",
                                               "pairs_npz": {"test_subject": [2]}}}))
    code, _, err = run_cli(["train", str(config), "--out", str(tmp_path / "run")], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("pskd: error: ")
    assert lines[0].endswith("data.pairs_npz.test_subject: unknown key (did you mean 'test_subjects'?)")
    assert not (tmp_path / "run").exists()


def test_a_broken_plugin_is_one_error_line(tmp_path, capsys):
    (tmp_path / "bad.py").write_text("raise RuntimeError('no GPU here')\n")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**TINY, "plugins": [str(tmp_path / "bad.py")]}))
    code, _, err = run_cli(["train", str(config), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and err.strip().splitlines() == [f"pskd: error: plugins: {tmp_path / 'bad.py'}: "
                                                      "RuntimeError: no GPU here"]
    assert not (tmp_path / "run").exists()
