"""The Python API as a notebook uses it: pskd.train called again and again, old import paths still working."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from test_distill_pipeline import TINY

import pskd
from pskd.errors import ConfigError, UserError


def test_pskd_train_can_be_called_three_times_in_one_process(tmp_path):
    quiet = lambda *a, **k: None  # noqa: E731
    config = {**TINY, "method": "ce"}
    runs = [pskd.train({**config, "seed": seed}, tmp_path / f"seed{seed}", log=quiet) for seed in range(3)]
    assert [out.name for out, _ in runs] == ["seed0", "seed1", "seed2"]
    assert all((out / "metrics.json").is_file() for out, _ in runs)
    assert callable(pskd.train)


def test_the_former_import_paths_warn_and_give_the_same_modules():
    code = ("import warnings, pskd\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    import pskd.train.loop as old\n"
            "import pskd.training.loop as new\n"
            "assert old is new, (old, new)\n"
            "assert callable(pskd.train), pskd.train\n"
            "assert any(issubclass(w.category, DeprecationWarning) and 'pskd.training' in str(w.message) "
            "for w in caught)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_benchmark_script_imports():
    """A benchmark the docs tell users to run must at least import (its main() is not run here)."""
    import importlib.util
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(folder))
    try:
        for path in sorted(folder.glob("*.py")):
            spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            assert callable(getattr(module, "main", None)), path.name
    finally:
        sys.path.remove(str(folder))


def _arrays(seed: int = 0, clips: int = 40, classes: int = 3):
    rng = np.random.default_rng(seed)
    y = np.arange(clips) % classes
    X = rng.normal(size=(clips, 32, 3)).astype(np.float32)
    X[:, :, 0] += y[:, None]  # a class shows in the first channel's level
    return X, y


SMALL = {"student": {"options": {"widths": [8, 8], "embedding_dim": 8}},
         "train": {"epochs": 15, "batch_size": 8, "warmup_epochs": 1}}


def test_the_estimator_learns_from_arrays_and_follows_scikit_learn_conventions():
    X, y = _arrays()
    student = pskd.StudentClassifier(config=SMALL, seed=1)
    assert student.get_params()["seed"] == 1 and student.set_params(seed=2) is student
    assert student.fit(X, y) is student
    assert list(student.classes_) == [0, 1, 2] and student.predict(X).shape == (40,)
    assert student.score(X, y) > 0.6  # the class is in the first channel's level: easy
    with pytest.raises(ConfigError, match="unknown parameter"):
        student.set_params(nonsense=1)


@pytest.mark.parametrize("bad, message", [
    (lambda X, y: (X[:, :, :2][:, 0], y), "expected a numeric array"),
    (lambda X, y: (np.where(X > 2, np.inf, X), y), "NaN or infinite"),
    (lambda X, y: (X, y[:-1]), "integer labels"),
    (lambda X, y: (X, y * 0), "at least two classes"),
    (lambda X, y: (X, y - 2), "-1 for an unlabelled"),
    (lambda X, y: ({"accelerometer": X, "gyroscope": X[:-1]}, y), "same number of clips"),
    (lambda X, y: ({"gyroscope": X}, y), "reads \\['accelerometer'\\]"),
])
def test_the_estimator_refuses_bad_arrays_with_one_line(bad, message):
    X, y = bad(*_arrays())
    with pytest.raises(UserError, match=message) as caught:
        pskd.StudentClassifier(config=SMALL).fit(X, y)
    assert "\n" not in str(caught.value)


def test_metrics_score_arrays_and_refuse_what_they_cannot():
    scores = np.eye(3)[[0, 1, 2, 2]]
    figures = pskd.metrics(scores, y=np.array([0, 1, 2, 1]))
    assert figures["accuracy"] == 0.75 and figures["confusion_matrix"][1] == [0, 1, 1]
    with pytest.raises(UserError, match="labels must lie"):
        pskd.metrics(scores, y=np.array([0, 1, 2, 3]))
    with pytest.raises(UserError, match="not a finished run"):
        pskd.metrics("/nonexistent-run")


def test_no_public_name_of_the_package_is_also_a_subpackage_or_module():
    import pkgutil

    modules = {info.name for info in pkgutil.iter_modules(pskd.__path__)} - {"train"}  # train: deprecated alias
    assert not modules & set(pskd.__all__), modules & set(pskd.__all__)


def test_the_estimator_round_trips_on_utd_mhad_arrays(utd_root):
    data = pskd.load_dataset({"data": {"dataset": "utd_mhad", "data_dir": str(utd_root / "utd_mhad")}})
    assert len(data.labels) == 861 and data.streams["accelerometer"].shape[1:] == (128, 3)
    fit_on = np.concatenate([data.part("train"), data.part("val")])
    student = pskd.StudentClassifier(config={"train": {"epochs": 6}}, class_names=data.class_names)
    student.fit(data.streams["accelerometer"][fit_on], data.student_labels[fit_on], groups=data.subjects[fit_on])
    test_X, test_y = data.X("test", "accelerometer"), data.y("test")
    probabilities = student.predict_proba(test_X)
    assert probabilities.shape == (430, 27) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    figures = pskd.metrics(student, test_X, test_y)
    assert figures["accuracy"] == student.score(test_X, test_y) > 3 / 27  # six epochs: well above chance
    assert [row["class"] for row in figures["per_class"]] == data.class_names
