"""What a finished run writes: checkpoints of the student and its teachers, metrics.json, history.csv,
predictions.csv, report.md and the pictures."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np
import torch

from pskd.data.clip import SKELETON
from pskd.data.layouts import dataset_layout
from pskd.distill.methods import student_stages
from pskd.evaluate.report import plot_confusion, plot_learning_curves, write_report
from pskd.fileio import StagedText, create_folder, write_file
from pskd.plugins import record, source_of
from pskd.teacher_checkpoints import teacher_meta
from pskd.training.recipe import Trained
from pskd.training.session import Session
from pskd.training.teachers import TrainedTeacher
from pskd.version import __version__


def _save_checkpoint(path: Path, state: dict, meta: dict, root: Path) -> None:
    """Tensors and plain values only, so the file loads with torch.load(weights_only=True)."""
    write_file(path, lambda handle: torch.save({"state_dict": state, "meta": meta}, handle), root=root)


def input_shapes(prepared, streams: list[str]) -> dict:
    """What a model reading `streams` needs, beside its weights, to be built again outside a run (pskd.load_teachers):
    samples per clip of each stream, channels of each inertial stream, the skeleton layout."""
    layout = dataset_layout(prepared.info.layout, prepared.info.layout_spec)
    return {"lengths": {s: int(prepared.streams[s].shape[1]) for s in streams},
            "channels": {s: int(np.prod(prepared.streams[s].shape[2:])) for s in streams if s != SKELETON},
            "layout": layout.to_json() if layout is not None and SKELETON in streams else None}


def _write_history(history: list[dict], path: Path, root: Path) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    write_file(path, text.getvalue(), root=root)


def _write_predictions(session: Session, logits: np.ndarray, path: Path, root: Path) -> dict[str, dict]:
    """One row per test clip for the delivered model (its test logits): who, what it was, what was predicted,
    how sure. Returns the accuracy per test subject."""
    prepared, test = session.prepared, session.split.test
    probabilities = torch.softmax(torch.as_tensor(logits), dim=1).numpy()
    names = prepared.info.class_names
    with StagedText(path, root) as staged:
        writer = csv.writer(staged.handle)
        writer.writerow(["clip_id", "subject", "trial", "label", "predicted", "correct", "confidence",
                         "confidence_of_label"])
        for row, clip in enumerate(test):
            label, guess = int(prepared.labels[clip]), int(probabilities[row].argmax())
            writer.writerow([prepared.clip_ids[clip], prepared.info.subject_name(prepared.subjects[clip]),
                             int(prepared.trials[clip]),
                             names[label], names[guess], int(label == guess), f"{probabilities[row, guess]:.4f}",
                             f"{probabilities[row, label]:.4f}"])
    right = probabilities.argmax(axis=1) == prepared.labels[test]
    subjects = prepared.subjects[test]
    return {prepared.info.subject_name(subject): {"accuracy": float(right[subjects == subject].mean()),
                                "clips": int((subjects == subject).sum())} for subject in np.unique(subjects)}


def _label_counts(session: Session) -> dict:
    """Which training clips the student and the teachers learnt labels from."""
    config, split, teacher = session.config.data.labels, session.split, session.teacher_split
    return {"fraction": config.fraction, "seed": config.seed, "subjects": config.subjects, "teachers": config.teachers,
            "student_labelled": int(len(split.train) + len(split.val)),
            "unlabelled": int(len(split.unlabelled) + len(split.unlabelled_val)),
            "teachers_labelled": int(len(teacher.train) + len(teacher.val))}


def write_run(session: Session, run_dir: Path, teachers: dict[str, TrainedTeacher], student: Trained,
              started: float) -> dict:
    config, prepared, split = session.config, session.prepared, session.split
    result_history = student.history
    class_names = prepared.info.class_names
    metrics = {
        "name": config.name,
        "dataset": prepared.info.name,
        "protocol": split.protocol,
        "method": config.method,
        "seed": config.seed,
        "device": str(session.device),
        "pskd_version": __version__,
        "torch_version": torch.__version__,
        "split": {
            "train": len(split.train), "val": len(split.val), "test": len(split.test),
            "train_subjects": split.train_subjects, "val_subjects": split.val_subjects,
            "test_subjects": split.test_subjects, "subject_names": prepared.info.subject_names,
        },
        "left_out": prepared.info.left_out,  # rows the loader left out, each with its reason
        "stages": [{"start": s.start, "teachers": s.teachers, "loss": s.loss} for s in student_stages(config)],
        "labels": _label_counts(session),
        "teachers": {name: t.trained.summary for name, t in teachers.items()},
        "student": student.summary,
    }

    checkpoints = run_dir / "checkpoints"
    create_folder(checkpoints, root=run_dir, exist_ok=True)  # a resume may find it made
    streams = config.student.streams
    meta = {
        "model": config.student.name, "streams": streams, "options": config.student.options,
        "num_classes": prepared.info.num_classes, "class_names": class_names,
        "seq_len": int(prepared.streams[streams[0]].shape[1]),
        "rates": {s: prepared.info.rates[s] for s in streams},
        # what a deployed model needs to cut a live stream the way its training clips were cut
        "channels": {s: int(np.prod(prepared.streams[s].shape[2:])) for s in streams},
        "units": {s: prepared.info.units.get(s, "unknown") for s in streams},
        "window_s": float(np.median(prepared.source_lengths[streams[0]][session.training_clips])
                          / prepared.info.rates[streams[0]]),
        "dataset": prepared.info.name, "method": config.method, "seed": config.seed,
        # where the model's code comes from, for commands that load it again (pskd.plugins)
        "plugins": record(config.plugins), "model_source": source_of(type(student.model.net)),
    }
    _save_checkpoint(checkpoints / "best.pt", student.delivered_state,
                     {**meta, "epoch": student.summary["best_epoch"], "refit": config.train.refit}, run_dir)
    _save_checkpoint(checkpoints / "last.pt", student.last_state, {**meta, "epoch": len(result_history)}, run_dir)
    if teachers:
        create_folder(run_dir / "teachers", root=run_dir, exist_ok=True)
        for name, teacher_run in teachers.items():
            _save_checkpoint(run_dir / "teachers" / f"{name}.pt", teacher_run.trained.delivered_state,
                             {**teacher_meta(config, name, class_names, prepared.info.name, session.teacher_split),
                              **input_shapes(prepared, config.teachers[name].streams)}, run_dir)
    _write_history(result_history, run_dir / "history.csv", run_dir)
    metrics["student"]["test_per_subject"] = _write_predictions(session, student.test_logits,
                                                                run_dir / "predictions.csv", run_dir)
    title = f"{config.name}: {config.method} student on {prepared.info.name} {split.protocol}, seed {config.seed}"
    plot_confusion(metrics["student"]["test"]["confusion_matrix"], class_names, run_dir / "confusion_matrix.png",
                   f"{title}\ntest accuracy {100 * metrics['student']['test']['accuracy']:.2f} %", root=run_dir)
    plot_learning_curves(result_history, student.summary["best_epoch"], run_dir / "learning_curves.png", title,
                         root=run_dir)
    metrics["wall_time_s"] = time.perf_counter() - started  # a resumed run's included
    write_report(metrics, class_names, run_dir / "report.md", root=run_dir)
    # last: a staged run with its metrics.json has written everything (a resume then only gives it its name)
    write_file(run_dir / "metrics.json", json.dumps(metrics, indent=2), root=run_dir)
    return metrics
