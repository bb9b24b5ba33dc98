"""Teachers saved by one run and loaded by another (`teachers.<name>.checkpoint`), so that a new student, method
or sweep does not train them again.

A teacher's checkpoint says what it learnt from: the dataset, its classes and streams, the protocol, the
subjects whose clips it trained on, and which labels it saw. A loaded teacher is refused, with the field named,
when it does not fit: other classes, streams or model; a training set that holds a subject this run tests on;
or labels other than those this run allows its teachers (a teacher that saw every label would leak them into a
run whose teachers may see a quarter).
"""

from __future__ import annotations

from pathlib import Path

from pskd.config import RunConfig
from pskd.data.protocols import Split
from pskd.errors import ConfigError
from pskd.models.checkpoint import read_checkpoint


def teacher_meta(config: RunConfig, name: str, class_names: list[str], dataset: str, split: Split) -> dict:
    """What a teacher's checkpoint records (beside its weights) so that another run can check it."""
    teacher = config.teachers[name]
    return {
        "model": teacher.name, "streams": teacher.streams, "options": teacher.options,
        "num_classes": len(class_names), "class_names": class_names, "dataset": dataset,
        "protocol": split.protocol, "training_subjects": sorted(split.train_subjects + split.val_subjects),
        "labels": teacher_labels(config), "seed": config.seed,
    }


def teacher_labels(config: RunConfig) -> dict:
    """The labels a run's teachers learn from: every training label, or the labelled set the config draws."""
    labels = config.data.labels
    if labels.teachers == "all" or not labels.hides_any:
        return {"fraction": 1.0, "seed": None, "subjects": None}
    return {"fraction": labels.fraction, "seed": labels.seed, "subjects": labels.subjects}


def checkpoint_file(path: str, name: str) -> Path:
    """A run directory means its teachers/<name>.pt."""
    found = Path(path).expanduser()
    if found.is_dir():
        found = found / "teachers" / f"{name}.pt"
    if not found.is_file():
        raise ConfigError(f"teachers.{name}.checkpoint: {found}: no such teacher checkpoint (give a run directory "
                          "or a teacher's .pt file)")
    return found


def load_teacher_checkpoint(config: RunConfig, name: str, class_names: list[str], dataset: str,
                            split: Split) -> tuple[dict, Path]:
    """The state dict of teacher `name` from its configured checkpoint, after checking that it fits this run."""
    path = checkpoint_file(config.teachers[name].checkpoint, name)
    state, meta = read_checkpoint(path)
    where = f"teachers.{name}.checkpoint ({path})"
    if "training_subjects" not in meta:
        raise ConfigError(f"{where}: written by an older pskd; what it trained on cannot be checked")
    expected = teacher_meta(config, name, class_names, dataset, split)
    for field in ("dataset", "model", "streams", "options", "class_names", "labels"):
        if meta.get(field) != expected[field]:
            raise ConfigError(f"{where}: its {field} {meta.get(field)!r} is not this run's {expected[field]!r}")
    seen = sorted(set(meta["training_subjects"]) & set(split.test_subjects))
    if seen:
        raise ConfigError(f"{where}: it trained on subjects {seen}, which this run tests on")
    return state, path


def initial_weights(path: str, model: str, streams: list[str], options: dict, class_names: list[str],
                    where: str) -> dict:
    """The state dict to start a model from (`init_from`), after checking it is the same model on the same
    streams and classes. A run directory means its delivered student."""
    found = Path(path).expanduser()
    if found.is_dir():
        found = found / "checkpoints" / "best.pt"
    if not found.is_file():
        raise ConfigError(f"{where}.init_from: {found}: no such checkpoint (give a run directory or a .pt file)")
    state, meta = read_checkpoint(found)
    expected = {"model": model, "streams": streams, "options": options, "class_names": class_names}
    for field, value in expected.items():
        if meta.get(field) != value:
            raise ConfigError(f"{where}.init_from ({found}): its {field} {meta.get(field)!r} is not {value!r}")
    return state
