"""Defects a hostile review found, each a plain regression test: one error line (exit code 2 from the command
line), nothing trained or allocated first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from test_distill_pipeline import TINY

import pskd
from pskd.config import build_config
from pskd.errors import ConfigError, UserError


@pytest.mark.parametrize("override", [
    "student.options." + ".".join(["a"] * 5000) + "=1",
    "student.options." + ".".join(["a"] * 40) + "=1",
    "train.optimizer={name: Rprop, options: {etas: []}}",
    "train.optimizer={name: Adam, options: {betas: [0.9]}}",
    "train.optimizer={name: Adam, options: {differentiable: true}}",
    "train.schedule={name: StepLR, options: {step_size: 0}}",
    "train.schedule={name: CosineAnnealingLR, options: {T_max: 0}}",
    "train.schedule={name: OneCycleLR, options: {max_lr: 0.1, total_steps: 1}}",
    "train.schedule={name: StepLR, options: {step_size: {a: 1}}}",
])
def test_an_override_torch_or_the_tree_cannot_take_is_one_config_error(override):
    with pytest.raises(ConfigError) as caught:
        build_config({}, [override])
    assert "\n" not in str(caught.value)


def test_exponent_numbers_are_numbers_in_options():
    config = build_config({}, ["train.schedule={name: StepLR, options: {step_size: 1, gamma: 5e-1}}",
                               "train.optimizer={name: Adam, options: {eps: 1e-8}}"])
    assert config.train.schedule.options["gamma"] == 0.5 and config.train.optimizer.options["eps"] == 1e-8


def test_a_grid_too_large_is_refused_before_anything_is_planned(tmp_path, capsys):
    values = ",".join(str(i) for i in range(1, 2001))
    config = tmp_path / "c.yaml"
    import yaml

    config.write_text(yaml.safe_dump({**TINY, "method": "ce"}), encoding="utf-8")
    code, _, err = run_cli(["sweep", str(config), "--methods", "ce", "--seeds", "1", "--grid", f"train.epochs={values}",
                            "--grid", f"train.batch_size={values}", "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and "4,000,000 runs" in err and not (tmp_path / "s").exists()


def test_grid_values_that_would_share_a_folder_are_refused_before_training(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    import yaml

    config.write_text(yaml.safe_dump({**TINY, "method": "ce"}), encoding="utf-8")
    code, _, err = run_cli(["sweep", str(config), "--methods", "ce", "--seeds", "1", "--grid",
                            f"data.cache_dir={tmp_path}/c x,{tmp_path}/c_x", "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and "would share the folder" in err and not (tmp_path / "s").exists()


@pytest.mark.parametrize("scores, y, message", [
    (np.full((4, 3), np.nan), [0, 1, 2, 0], "NaN or infinite"),
    (np.eye(3), [0.5, 1, 2], "integer label"),
    (np.eye(3), [[0], [1], [2]], "integer label"),
    (np.eye(3), ["a", "b", "c"], "integer label"),
    (np.array([["a", "b"]] * 4, dtype=object), [0, 1, 0, 1], "not real numbers"),
    (np.zeros((2, 200_000), "f"), [0, 199_999], "at most 10000 classes"),
    (np.eye(4).astype(complex), np.arange(4), "not real numbers"),
    (np.zeros((0, 4)), np.zeros(0, int), "at least one"),
    (np.eye(2), np.array([1, 2], dtype="timedelta64[s]"), "integer label"),
])
def test_metrics_refuse_hostile_arrays(scores, y, message):
    with pytest.raises(UserError, match=message):
        pskd.metrics(scores, y=y)


def test_the_estimator_bounds_the_label_values():
    X = np.random.default_rng(0).normal(size=(24, 32, 3)).astype("f")
    y = np.arange(24) % 4
    y[0] = 3_000_000
    with pytest.raises(UserError, match="at most 10000"):
        pskd.StudentClassifier(config={"train": {"epochs": 1}}).fit(X, y)
    with pytest.raises(UserError, match="an array"):
        pskd.StudentClassifier(config={"train": {"epochs": 1}}).fit({"accelerometer": "abc"}, y % 4)


# ---- the second review ----------------------------------------------------------------------------------------------

def _interrupted(tmp_path, tree: dict) -> Path:
    import yaml

    staging = tmp_path / "run.incomplete"
    (staging / "state").mkdir(parents=True)
    (staging / "config.yaml").write_text(yaml.safe_dump(build_config(tree).model_dump(mode="json")), encoding="utf-8")
    return staging


def test_resume_never_runs_the_plugins_a_run_folder_names(tmp_path, capsys):
    canary = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(canary)!r}, 'w').close()\n", encoding="utf-8")
    staging = _interrupted(tmp_path, {**TINY, "method": "ce"})
    text = (staging / "config.yaml").read_text().replace("plugins: []", f"plugins: [{evil}]")
    (staging / "config.yaml").write_text(text, encoding="utf-8")
    code, _, err = run_cli(["train", "--resume", str(tmp_path / "run"), "--quiet"], capsys)
    assert code == 2 and "does not run code" in err and not canary.exists()


@pytest.mark.parametrize("state", ["deflated", "no model", "garbage"])
def test_a_hostile_state_file_is_one_error_line_and_the_run_is_kept(tmp_path, capsys, state):
    import zipfile

    import torch

    staging = _interrupted(tmp_path, {**TINY, "method": "ce"})
    path = staging / "state" / "student.pt"
    if state == "deflated":
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("archive/data.pkl", b"\0" * 1_000_000)
    elif state == "no model":
        torch.save({"epoch": 1}, path)
    else:
        path.write_bytes(b"garbage")
    code, _, err = run_cli(["train", "--resume", str(tmp_path / "run"), "--quiet"], capsys)
    errors = [line for line in err.splitlines() if line.startswith("pskd: error:")]
    assert code == 2 and len(errors) == 1 and "student.pt" in errors[0] and "Traceback" not in err
    assert path.is_file()  # the interrupted run is left as it was


@pytest.mark.parametrize("sub, name", [("tensorboard", "notes.txt"), ("export", "labels-annotated.json"),
                                       ("history", "notes.tmp"), (".", "draft.tmp")])
def test_overwrite_refuses_names_pskd_does_not_write(tmp_path, capsys, sub, name):
    import yaml

    from pskd.pipeline import run

    out, _ = run(build_config({**TINY, "method": "ce"}), tmp_path / "run", log=lambda *a, **k: None)
    (out / sub).mkdir(exist_ok=True)
    (out / sub / name).write_text("mine", encoding="utf-8")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**TINY, "method": "ce"}), encoding="utf-8")
    code, _, err = run_cli(["train", str(config), "--out", str(out), "--overwrite", "--quiet"], capsys)
    assert code == 2 and name in err and (out / sub / name).read_text() == "mine"


def test_a_model_of_too_many_parameters_is_refused_without_allocating_it():
    with pytest.raises(ConfigError, match="parameters, more than"):
        pskd.build_model("compact_cnn", "accelerometer", num_classes=4, lengths=32, channels=3,
                         widths=[100_000, 100_000])


def test_the_estimator_checks_clip_shapes_on_fit_and_predict():
    X = np.random.default_rng(0).normal(size=(16, 32, 3)).astype("f")
    y = np.arange(16) % 4
    with pytest.raises(UserError, match="at least 8"):
        pskd.StudentClassifier(config={"train": {"epochs": 1}}).fit(X[:, :1], y)
    with pytest.raises(UserError, match="not fitted"):
        pskd.StudentClassifier().predict(X)
    fitted = pskd.StudentClassifier(config={"train": {"epochs": 1, "batch_size": 8}}).fit(X, y)
    with pytest.raises(UserError, match="fitted on"):
        fitted.predict(X[:, :, :2])
