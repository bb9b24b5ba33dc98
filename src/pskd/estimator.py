"""A watch student as a scikit-learn-style estimator over arrays: fit(X, y, teachers=...), predict, predict_proba.

X is float32 [clips, time, channels] (the student's one stream), or a dict {stream: array} when the student or a
teacher reads several streams (the skeleton as [clips, time, joints, 3]); y holds integer classes 0..K-1, -1 for a
clip without a label (distillation and self-training methods learn from those). The student goes through the same
recipe as a run's (validation selection, refit, the method's terms, the gate), on a validation part drawn from the
labelled clips: whole groups (subjects) when `groups` is given, else a stratified share of clips.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch

from pskd.api import as_config
from pskd.data.clip import DatasetInfo
from pskd.data.prepared import Prepared
from pskd.data.protocols import Split
from pskd.errors import ConfigError, DataError
from pskd.models.zoo import StreamModel

UNLABELLED = -1
MAX_CLASSES = 10_000  # as pskd.metrics bounds them
MIN_SAMPLES = 8  # samples per clip, as preprocess.sensor_length allows


def _as_streams(X, default: list[str]) -> dict[str, np.ndarray]:  # noqa: N803 (scikit-learn's name)
    if isinstance(X, dict):
        streams = {str(k): np.asarray(v) for k, v in X.items()}
        if any(v.ndim == 0 for v in streams.values()):
            raise DataError("X: every stream must be an array [clips, time, channels]")
    elif len(default) == 1:
        streams = {default[0]: np.asarray(X)}
    else:
        raise ConfigError(f"X: the student reads {default}: give a dict of arrays")
    sizes = {len(v) for v in streams.values()}
    if len(sizes) != 1 or not sizes.pop():
        counts = {k: len(v) for k, v in streams.items()}
        raise DataError(f"X: every stream needs the same number of clips, at least one ({counts})")
    for name, values in streams.items():
        if values.ndim not in (3, 4) or not np.issubdtype(values.dtype, np.number):
            raise DataError(f"X[{name}]: expected a numeric array [clips, time, channels], got {values.dtype} "
                            f"{values.shape}")
        if values.shape[1] < MIN_SAMPLES or any(d < 1 for d in values.shape[2:]):
            raise DataError(f"X[{name}]: {values.shape[1]} samples per clip; at least {MIN_SAMPLES} are needed")
        streams[name] = np.ascontiguousarray(values, dtype=np.float32)
        if not np.isfinite(streams[name]).all():
            raise DataError(f"X[{name}]: holds NaN or infinite values (or values beyond float32)")
    return streams


def _labels(y, clips: int, num_classes: int | None) -> tuple[np.ndarray, int]:
    y = np.asarray(y)
    if y.shape != (clips,) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"y: expected {clips} integer labels, got {y.dtype} {y.shape}")
    if (y < UNLABELLED).any():
        raise DataError("y: labels are 0..K-1, or -1 for an unlabelled clip")
    known = y[y >= 0]
    if len(known) and known.max() >= MAX_CLASSES:
        raise DataError(f"y: a label of {known.max()}; classes are numbered 0..K-1, at most {MAX_CLASSES}")
    classes = int(num_classes or (known.max() + 1 if len(known) else 0))
    if len(np.unique(known)) < 2 or known.max() >= classes:
        raise DataError(f"y: needs labelled clips of at least two classes, all below {classes}")
    return y.astype(np.int64), classes


def _teacher_models(teachers) -> dict[str, StreamModel]:
    """{name: model}: from one model or run folder, a list of them, or a dict; a run folder gives its teachers."""
    if teachers is None:
        return {}
    if isinstance(teachers, (StreamModel, str, Path)):
        teachers = [teachers]
    if not isinstance(teachers, dict):
        teachers = {f"teacher{i}": t for i, t in enumerate(teachers)}
    found = {}
    for name, teacher in teachers.items():
        if isinstance(teacher, (str, Path)):
            from pskd.api import load_teachers

            loaded = load_teachers(teacher)
            found.update(loaded if len(teachers) == 1 else {f"{name}.{k}": v for k, v in loaded.items()})
        elif isinstance(teacher, StreamModel):
            found[str(name)] = teacher
        else:
            raise ConfigError(f"teachers: {name} is a {type(teacher).__name__}; give a model of pskd.build_model "
                              "or a run folder")
    return found


def _validation(y: np.ndarray, groups: np.ndarray | None, share: float, seed: int) -> np.ndarray:
    """Which clips validate: whole groups when given, else a share of each class's labelled clips."""
    rng = np.random.default_rng(seed)
    labelled = y >= 0
    if groups is not None:
        names = np.unique(groups[labelled])
        if len(names) < 2:
            raise DataError("groups: the labelled clips need at least two groups to validate on one")
        held = rng.choice(names, max(1, round(share * len(names))), replace=False)
        return np.isin(groups, held)
    val = np.zeros(len(y), dtype=bool)
    members = [rng.permutation(np.flatnonzero(y == label)) for label in np.unique(y[labelled])]
    counts = [int(round(share * len(m))) for m in members]
    if not sum(counts):  # few clips: one of each class that has two or more
        counts = [int(len(m) >= 2) for m in members]
    if not sum(counts):
        raise DataError("validation: too few labelled clips to hold any out (each class has one)")
    for chosen, count in zip(members, counts):
        val[chosen[:count]] = True
    return val


def _split(y: np.ndarray, val: np.ndarray, groups: np.ndarray | None) -> Split:
    labelled = y >= 0
    rows = lambda mask: np.flatnonzero(mask).astype(np.int64)  # noqa: E731
    subjects = (lambda mask: sorted({int(g) if str(g).isdigit() else 0 for g in groups[mask]})) if groups is not None \
        else (lambda mask: [])
    return Split("arrays", rows(labelled & ~val), rows(labelled & val), rows(labelled & val),
                 subjects(~val), subjects(val), subjects(val), rows(~labelled & ~val), rows(~labelled & val))


class StudentClassifier:
    """A watch student trained on arrays with a method's teachers, in scikit-learn's conventions.

    method: a registered method (default: pskd with teachers, ce without); config: a RunConfig, dict or YAML path
    whose student, train, augment and distill sections are used (default: pskd's defaults); model, model_options,
    epochs, seed, device override them. validation: the share of labelled clips (or of groups) held out to select
    the epoch and run the gate. Fitted: model_ (the trained nn.Module), classes_, summary_, history_, config_."""

    def __init__(self, method: str | None = None, config=None, model: str | None = None,
                 model_options: dict | None = None, epochs: int | None = None, seed: int = 0,
                 validation: float = 0.2, device: str = "cpu", class_names: list[str] | None = None,
                 verbose: bool = False):
        self.method, self.config, self.model, self.model_options = method, config, model, model_options
        self.epochs, self.seed, self.validation, self.device = epochs, seed, validation, device
        self.class_names, self.verbose = class_names, verbose

    def get_params(self, deep: bool = True) -> dict:
        return {name: getattr(self, name) for name in inspect.signature(type(self).__init__).parameters
                if name != "self"}

    def set_params(self, **params) -> "StudentClassifier":
        for name, value in params.items():
            if name not in self.get_params():
                raise ConfigError(f"StudentClassifier: unknown parameter '{name}'")
            setattr(self, name, value)
        return self

    def _run_config(self, teachers: dict[str, StreamModel]):
        config = as_config(self.config if self.config is not None else {})
        tree = config.model_dump(mode="json")
        tree.update(method=self.method or ("pskd" if teachers else "ce"), seed=self.seed, device=self.device,
                    progress=False)
        if self.model:
            tree["student"].update(name=self.model, options=self.model_options or {})
        elif self.model_options is not None:
            tree["student"]["options"] = self.model_options
        if self.epochs:
            tree["train"]["epochs"] = self.epochs
        tree["teachers"] = {name: {"name": getattr(t, "model_name", "skeleton_gcn"), "streams": t.streams}
                            for name, t in teachers.items()}
        return as_config(tree)

    def fit(self, X, y, teachers=None, groups=None) -> "StudentClassifier":  # noqa: N803
        """Train the student on X, y (-1: unlabelled) with `teachers` (trained models of pskd.build_model, run
        folders whose teachers are taken, a list or a dict of them); groups: each clip's subject, to validate on
        whole subjects."""
        from pskd.distill.methods import check_method
        from pskd.training.loop import pick_device
        from pskd.training.session import Session
        from pskd.training.student import train_student
        from pskd.training.teachers import TrainedTeacher, teacher_outputs

        models = _teacher_models(teachers)
        config = self._run_config(models)
        check_method(config)
        streams = _as_streams(X, config.student.streams)
        clips = len(next(iter(streams.values())))
        num_classes = len(self.class_names) if self.class_names else None
        num_classes = num_classes or next((int(m.num_classes) for m in models.values()
                                           if getattr(m, "num_classes", None)), None)
        labels, num_classes = _labels(y, clips, num_classes)
        groups = None if groups is None else np.asarray(groups)
        if groups is not None and groups.shape != (clips,):
            raise DataError(f"groups: expected one group per clip ({clips}), got {groups.shape}")
        for name, model in {"student": config.student, **config.teachers}.items():
            missing = [s for s in model.streams if s not in streams]
            if missing:
                raise ConfigError(f"X: {name} reads {missing}; give X as a dict holding them")
        names = list(self.class_names or [str(i) for i in range(num_classes)])
        prepared = self._prepared(streams, labels, groups, names)
        split = _split(labels, _validation(labels, groups, self.validation, self.seed), groups)
        log = print if self.verbose else (lambda *a, **k: None)
        session = Session(config, prepared, split, pick_device(config.device), log)
        trained = {}
        for name, model in models.items():
            model.to(session.device).eval()
            trained[name] = TrainedTeacher(None, teacher_outputs(name, model, model.streams, prepared,
                                                                 session.training_clips, session.device))
        student = train_student(session, trained)
        self.model_, self.summary_, self.history_, self.config_ = student.model, student.summary, student.history, config
        self.classes_, self.class_names_ = np.arange(num_classes), names
        self.streams_ = list(config.student.streams)
        self.shapes_ = {s: streams[s].shape[1:] for s in self.streams_}
        return self

    @staticmethod
    def _prepared(streams: dict[str, np.ndarray], labels: np.ndarray, groups, names: list[str]) -> Prepared:
        clips = len(labels)
        info = DatasetInfo(name="arrays", class_names=names, streams=list(streams),
                           rates={s: 1.0 for s in streams})
        subjects = np.zeros(clips, dtype=np.int64) if groups is None else np.unique(groups, return_inverse=True)[1]
        return Prepared(info, streams, labels, subjects.astype(np.int64), np.zeros(clips, dtype=np.int64),
                        [str(i) for i in range(clips)], {s: np.full(clips, v.shape[1]) for s, v in streams.items()})

    def predict_proba(self, X) -> np.ndarray:  # noqa: N803
        """[clips, classes] probabilities of each class."""
        from pskd.data.batches import PairedClips
        from pskd.training.inference import predict

        if not hasattr(self, "model_"):
            raise ConfigError("StudentClassifier: not fitted yet; call fit first")
        given = _as_streams(X, self.streams_)
        missing = [s for s in self.streams_ if s not in given]
        if missing:
            raise ConfigError(f"X: the student reads {missing}; give X as a dict holding them")
        streams = {s: given[s] for s in self.streams_}
        for name, values in streams.items():
            if values.shape[1:] != self.shapes_[name]:
                raise DataError(f"X[{name}]: clips of shape {values.shape[1:]}; the student was fitted on "
                                f"{self.shapes_[name]}")
        clips = len(next(iter(streams.values())))
        data = PairedClips(streams, np.zeros(clips, dtype=np.int64), np.arange(clips))
        _, logits = predict(self.model_, data, next(self.model_.parameters()).device)
        return torch.softmax(torch.from_numpy(logits), dim=1).numpy()

    def predict(self, X) -> np.ndarray:  # noqa: N803
        probabilities = self.predict_proba(X)
        return self.classes_[probabilities.argmax(axis=1)]

    def score(self, X, y) -> float:  # noqa: N803
        """Accuracy on X, y (scikit-learn's score)."""
        return float((self.predict(X) == np.asarray(y)).mean())
