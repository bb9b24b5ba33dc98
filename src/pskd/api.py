"""The Python API a notebook uses: a dataset's arrays and split, a model by its zoo name as a plain nn.Module, and a
run's or a model's metrics. `import pskd` exposes these (and the estimator of pskd.estimator) lazily."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pskd.config import RunConfig
from pskd.data.clip import SKELETON
from pskd.data.layouts import Layout, dataset_layout, get_layout
from pskd.data.prepared import Prepared
from pskd.data.protocols import Split
from pskd.errors import ConfigError, DataError
from pskd.models.zoo import InputSpec, StreamModel
from pskd.models.zoo import build_model as build_from_spec

PARTS = ("train", "val", "test", "unlabelled", "unlabelled_val")


def as_config(config, overrides=()) -> RunConfig:
    """A RunConfig from a RunConfig, a dict or a YAML file's path, with dotted `key=value` overrides."""
    from pskd.config import build_config, load_config

    if isinstance(config, RunConfig):
        return build_config(config.model_dump(mode="json"), overrides, source="config") if overrides else config
    if isinstance(config, dict):
        return build_config(config, overrides, source="config dict")
    return load_config(config, overrides)


@dataclass(frozen=True)
class Dataset:
    """A dataset as a config prepares it: every clip's streams in physical units, time-major ([clips, time,
    channels]; the skeleton [clips, time, joints, 3]), and the protocol's split as index arrays.

    `labels` are the true labels; `student_labels` are those the student may learn from (-1 where data.labels hides
    one; never a test clip's). `split` is the student's view (its train and val parts hold labelled clips only, the
    other clips of those subjects are in `unlabelled` and `unlabelled_val`); `teacher_split` the teachers'."""

    prepared: Prepared
    split: Split
    teacher_split: Split
    student_labels: np.ndarray

    @property
    def name(self) -> str:
        return self.prepared.info.name

    @property
    def class_names(self) -> list[str]:
        return list(self.prepared.info.class_names)

    @property
    def streams(self) -> dict[str, np.ndarray]:
        return self.prepared.streams

    @property
    def labels(self) -> np.ndarray:
        return self.prepared.labels

    @property
    def subjects(self) -> np.ndarray:
        return self.prepared.subjects

    @property
    def layout(self) -> Layout | None:
        return dataset_layout(self.prepared.info.layout, self.prepared.info.layout_spec)

    def part(self, name: str) -> np.ndarray:
        """The clip indices of one part of the split: train, val, test, unlabelled or unlabelled_val."""
        if name not in PARTS:
            raise ConfigError(f"part: one of {', '.join(PARTS)}, not '{name}'")
        return getattr(self.split, name)

    def X(self, part: str, streams: str | list[str] | None = None):  # noqa: N802 (scikit-learn's name)
        """The clips of `part`: one stream's array when `streams` names one, else a dict of arrays (default: every
        stream)."""
        rows = self.part(part)
        if isinstance(streams, str):
            return self._stream(streams)[rows]
        return {name: self._stream(name)[rows] for name in (streams or self.streams)}

    def y(self, part: str) -> np.ndarray:
        """The labels of `part` as the student may see them (-1: unlabelled); a test part's are the true ones."""
        labels = self.labels if part == "test" else self.student_labels
        return labels[self.part(part)]

    def _stream(self, name: str) -> np.ndarray:
        if name not in self.streams:
            raise ConfigError(f"streams: {self.name} has no stream '{name}' (it has {', '.join(self.streams)})")
        return self.streams[name]


def load_dataset(config, overrides=(), log: Callable | None = None) -> Dataset:
    """The clips of the dataset a config names (a RunConfig, a dict or a YAML path), prepared as a run prepares them
    (the cache included), with its protocol's split and the labels data.labels keeps."""
    from pskd.data.cache import prepare
    from pskd.pipeline import check_names
    from pskd.training.session import label_views, split_data

    config = as_config(config, overrides)
    check_names(config)
    prepared = prepare(config.data, config.preprocess, log=log or (lambda *a, **k: None))
    student, split, _, teacher_split = label_views(config, prepared, split_data(config, prepared))
    return Dataset(prepared, split, teacher_split, student.labels)


def _per_stream(value, streams: list[str], what: str) -> dict[str, int]:
    if isinstance(value, dict):
        missing = [s for s in streams if s not in value]
        if missing:
            raise ConfigError(f"build_model: {what} of {missing} not given")
        return {s: int(value[s]) for s in streams}
    if value is None:
        raise ConfigError(f"build_model: {what} is needed without a dataset")
    return {s: int(value) for s in streams}


def _spec(streams: list[str], num_classes, lengths, channels, layout) -> InputSpec:
    inertial = [s for s in streams if s != SKELETON]
    if num_classes is None or int(num_classes) < 2:
        raise ConfigError("build_model: num_classes (at least 2) is needed without a dataset")
    if isinstance(layout, str):
        layout = get_layout(layout)
    if SKELETON in streams and not isinstance(layout, Layout):
        raise ConfigError("build_model: a model reading the skeleton needs layout= (a Layout or a layout's name)")
    widths = _per_stream(channels, inertial, "channels") if inertial else {}
    return InputSpec(num_classes=int(num_classes), lengths=_per_stream(lengths, streams, "lengths"), channels=widths,
                     layout=layout, mean={s: np.zeros(c) for s, c in widths.items()},
                     std={s: np.ones(c) for s, c in widths.items()})


def build_model(name: str, streams: str | list[str], *, dataset: Dataset | None = None, num_classes: int | None = None,
                lengths: int | dict[str, int] | None = None, channels: int | dict[str, int] | None = None,
                layout: Layout | str | None = None, **options) -> StreamModel:
    """A fresh model of the zoo (built-in or registered) as a plain nn.Module reading `streams` from a batch dict
    ({stream: tensor [B, time, ...]}); forward(batch) -> (embedding, logits). With `dataset`, the shapes, classes and
    layout are the dataset's and inertial streams are standardised with its training clips' statistics; without
    one, give num_classes, lengths (samples per clip), channels (of each inertial stream) and, for the skeleton,
    layout. `options` go to the model's constructor, checked as a config's are."""
    from pskd.training.recipe import input_spec

    streams = [streams] if isinstance(streams, str) else list(streams)
    if dataset is not None:
        spec = input_spec(dataset.prepared, dataset.split.train)
    else:
        spec = _spec(streams, num_classes, lengths, channels, layout)
    return build_from_spec(name, streams, options, spec, where="build_model")


def metrics(model, X=None, y=None, class_names: list[str] | None = None) -> dict:
    """Accuracy, macro-F1, per-class figures and the confusion matrix.

    metrics(run) returns a run directory's recorded metrics (metrics.json). metrics(model, X, y) evaluates a model
    on clips X (an array [clips, time, channels] of its input) with labels y (integers): `model` a run directory,
    .pt, .onnx or .tflite file, a fitted pskd.StudentClassifier, or any callable X -> class probabilities.
    metrics(scores, y=y) scores an array [clips, classes] of probabilities or logits directly."""
    from pskd.evaluate.metrics import summarize

    if X is None and y is None:
        return _recorded_metrics(Path(model))
    if y is None:
        raise ConfigError("metrics: labels y are needed to score a model")
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu" or not len(y):
        raise DataError(f"metrics: y must be one integer label per clip, at least one, got {y.dtype} {y.shape}")
    if X is None:
        scores = _numbers(model, "scores")
    else:
        scores, names = _scores_of(model, X)
        class_names = class_names or names
    if scores.ndim != 2 or len(scores) != len(y) or not 0 < scores.shape[1] <= MAX_CLASSES:
        raise DataError(f"metrics: scores of shape {scores.shape} for {len(y)} labels (at most {MAX_CLASSES} "
                        "classes)")
    if not np.isfinite(scores).all():
        raise DataError("metrics: the scores hold NaN or infinite values")
    names = class_names or [str(i) for i in range(scores.shape[1])]
    if len(y) and (y.min() < 0 or y.max() >= len(names)):
        raise DataError(f"metrics: labels must lie in 0..{len(names) - 1}")
    return summarize(y.astype(np.int64), scores, list(names))


MAX_CLASSES = 10_000  # classes a model scores (UTD-MHAD has 27); bounds the confusion matrix


def _numbers(values, what: str) -> np.ndarray:
    given = np.asarray(values) if not isinstance(values, np.ndarray) else values
    if given.dtype.kind not in "biuf":  # complex, dates, durations, text, objects
        raise DataError(f"metrics: the {what} are not real numbers ({given.dtype})")
    return given.astype(np.float64)


def _scores_of(model, X) -> tuple[np.ndarray, list[str] | None]:
    if isinstance(model, (str, Path)):
        from pskd.deploy.predict import open_classifier

        card, classify = open_classifier(Path(model))
        clips = _numbers(X, "clips").astype(np.float32)
        if clips.ndim != 3 or clips.shape[1:] != (card.seq_len, card.channels) or not np.isfinite(clips).all():
            raise DataError(f"metrics: the model reads finite clips [N, {card.seq_len}, {card.channels}], got "
                            f"{clips.shape}")
        return _numbers(classify(np.ascontiguousarray(clips)), "scores"), list(card.class_names)
    if hasattr(model, "predict_proba"):
        return _numbers(model.predict_proba(X), "scores"), getattr(model, "class_names_", None)
    if callable(model):
        return _numbers(model(X), "scores"), None
    raise ConfigError(f"metrics: cannot score a {type(model).__name__} (give a run, a model file, an estimator or "
                      "a callable)")


def _recorded_metrics(run: Path) -> dict:
    from pskd.bounded import loads_json, read_text
    from pskd.limits import METADATA_BYTES

    path = run / "metrics.json"
    if not path.is_file():
        raise DataError(f"{run}: not a finished run (no metrics.json); to score a model give X and y")
    try:
        found = loads_json(read_text(path, METADATA_BYTES))
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable ({err})") from None
    if not isinstance(found, dict):
        raise DataError(f"{path}: not a metrics object")
    return found


def load_teachers(run) -> dict[str, StreamModel]:
    """The teachers a finished run saved (teachers/<name>.pt), each rebuilt as its run built it and frozen in eval
    mode: {name: model}. They read the streams their run's dataset has (model.streams)."""
    from pskd.models.checkpoint import load_fitting, read_checkpoint

    folder = Path(run) / "teachers"
    paths = sorted(folder.glob("*.pt")) if folder.is_dir() and not folder.is_symlink() else []
    if not paths:
        raise DataError(f"{run}: no teachers/*.pt (a run whose method used teachers saves them)")
    teachers = {}
    for path in paths:
        state, meta = read_checkpoint(path)
        if not isinstance(meta.get("lengths"), dict):
            raise DataError(f"{path}: written by an older pskd, without its input shapes; train the run again")
        try:
            layout = _saved_layout(meta.get("layout"))
            spec = _spec(list(meta["streams"]), meta["num_classes"], meta["lengths"], meta.get("channels") or None,
                         layout)
            model = load_fitting(lambda: build_from_spec(meta["model"], list(meta["streams"]),
                                                         dict(meta.get("options") or {}), spec, where=str(path)),
                                 state, str(path))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as err:
            raise DataError(f"{path}: not a loadable teacher ({str(err).splitlines()[0][:160]})") from None
        teachers[path.stem] = model.eval().requires_grad_(False)
    return teachers


def _saved_layout(saved) -> Layout | None:
    """A layout as a checkpoint recorded it (Layout.to_json), checked: joints within the limit, bones inside."""
    from pskd.limits import LAYOUT_JOINTS

    if saved is None:
        return None
    layout = dataset_layout(None, saved)
    joints = layout.num_joints
    if not 0 < joints <= LAYOUT_JOINTS or not all(0 <= i < joints for bone in layout.bones for i in bone):
        raise ValueError(f"a layout of {joints} joints with bones {list(layout.bones)[:4]}...")
    return layout
