"""Defects a hostile review found, each a plain regression test: one error line (exit code 2 from the command
line), nothing trained or allocated first."""

from __future__ import annotations

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
    (np.array([["a", "b"]] * 4, dtype=object), [0, 1, 0, 1], "not numbers"),
    (np.zeros((2, 200_000), "f"), [0, 199_999], "at most 10000 classes"),
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
