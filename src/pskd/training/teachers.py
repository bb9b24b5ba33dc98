"""Teachers: trained (each after the one it distils from), or loaded from an earlier run; frozen, and their logits
and embeddings computed once for every clip (out-of-fold for training clips with cross-fitting)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pskd.config import TeacherConfig
from pskd.data.batches import PairedClips
from pskd.data.prepared import Prepared
from pskd.distill.distiller import Stage, TeacherOutputs
from pskd.distill.methods import teacher_chain_used
from pskd.errors import ConfigError
from pskd.evaluate.metrics import summarize
from pskd.models.zoo import count_parameters
from pskd.teacher_checkpoints import load_teacher_checkpoint
from pskd.training import recipe
from pskd.training.loop import predict, seed_everything
from pskd.training.recipe import Distilling, Trained, build_for_training, replay, short_figures
from pskd.training.session import Session


def cross_fit(name: str, teacher: TeacherConfig, criterion_for: Callable, session: "Session", trained: Trained,
              folds: int) -> TeacherOutputs:
    """Out-of-fold outputs for the training clips: k folds over the training subjects; for each, the teacher's
    selected trajectory is replayed without that fold and predicts the fold's clips. Other clips keep the outputs
    of the teacher trained on every training subject (they are never distillation targets)."""
    prepared, clips = session.teacher_prepared, session.training_clips
    outputs = teacher_outputs(name, trained.model, teacher.streams, prepared, clips, session.device)
    subjects = np.unique(prepared.subjects[clips])
    if folds > len(subjects):
        raise ConfigError(f"distill.cross_fit_folds: {folds} folds, but only {len(subjects)} training subjects")
    streams = {s: prepared.streams[s] for s in teacher.streams}
    learns = np.ones(len(clips), dtype=bool) if getattr(criterion_for, "uses_unlabelled", False) \
        else prepared.labels[clips] >= 0  # the clips the teacher trains on: labelled ones, unless a term uses others
    for held_out in np.array_split(subjects, folds):
        inside = np.isin(prepared.subjects[clips], held_out)
        model = replay(f"teachers.{name} fold {list(map(int, held_out))}", teacher, teacher.train, criterion_for,
                       session.as_teachers_see_it(), clips[~inside & learns], trained.summary["best_epoch"],
                       epoch_size=int((~inside).sum()))
        embeddings, logits = predict(model, PairedClips(streams, prepared.labels, clips[inside]), session.device)
        outputs.logits[clips[inside]] = torch.from_numpy(logits)
        outputs.embeddings[clips[inside]] = torch.from_numpy(embeddings)
    outputs.class_embeddings = class_centroids(outputs.embeddings, prepared, clips)  # of the out-of-fold embeddings
    return outputs


def class_centroids(embeddings: torch.Tensor, prepared: Prepared, rows: np.ndarray) -> torch.Tensor:
    """[classes, D]: the mean embedding of each class over the clips `rows` (zeros for a class absent there)."""
    centroids = torch.zeros(prepared.info.num_classes, embeddings.shape[1])
    for label in range(prepared.info.num_classes):
        members = rows[prepared.labels[rows] == label]
        if len(members):
            centroids[label] = embeddings[members].mean(dim=0)
    return centroids


def teacher_outputs(name: str, model: torch.nn.Module, streams: list[str], prepared: Prepared, fit_on: np.ndarray,
                    device: torch.device) -> TeacherOutputs:
    """A frozen teacher's logits and embeddings on every clip, and its class centroids over the clips `fit_on`."""
    data = PairedClips({s: prepared.streams[s] for s in streams}, prepared.labels, np.arange(len(prepared)))
    embeddings, logits = predict(model, data, device)
    embeddings = torch.from_numpy(embeddings)
    return TeacherOutputs(name, torch.from_numpy(logits), embeddings, class_centroids(embeddings, prepared, fit_on))


@dataclass
class TrainedTeacher:
    trained: Trained
    outputs: TeacherOutputs


def train_teachers(session: Session, ready: dict[str, TrainedTeacher] | None = None) -> dict[str, TrainedTeacher]:
    """The configured teachers, each after the one it distils from; a teacher with distill_from (when the method
    uses the chain) learns from that already trained teacher too. Each is frozen, its outputs computed once.
    Teachers in `ready` (trained earlier on the same split and seed) are taken as they are."""
    config, device = session.config, session.device
    prepared = session.teacher_prepared
    teachers: dict[str, TrainedTeacher] = {}
    chain = teacher_chain_used(config)
    for name in config.teacher_order():
        if ready and name in ready:
            teachers[name] = ready[name]
            continue
        teacher = config.teachers[name]
        if teacher.checkpoint:
            trained = load_teacher(session, name)
            teachers[name] = TrainedTeacher(trained, teacher_outputs(name, trained.model, teacher.streams, prepared,
                                                                     session.training_clips, device))
            session.log(f"teacher {name}: loaded from {trained.summary['loaded_from']}, test accuracy "
                        f"{100 * trained.summary['test']['accuracy']:.2f} %")
            continue
        stages = [Stage(1, [teacher.distill_from], "kd")] if chain and teacher.distill_from else []
        targets = [t.outputs for t in teachers.values()]
        criterion_for = Distilling(config, targets, stages, teacher.train.label_smoothing, prepared.info.devices,
                                   device)
        seed_everything(config.seed, config.deterministic)
        trained = recipe.train_and_evaluate(f"teachers.{name}", teacher, teacher.train, criterion_for,
                                            session.as_teachers_see_it())
        if config.distill.cross_fit_folds >= 2:
            outputs = cross_fit(name, teacher, criterion_for, session, trained, config.distill.cross_fit_folds)
        else:
            outputs = teacher_outputs(name, trained.model, teacher.streams, prepared, session.training_clips, device)
        teachers[name] = TrainedTeacher(trained, outputs)
        session.log(f"teacher {name}: test accuracy {100 * trained.summary['test']['accuracy']:.2f} %")
    return teachers


def load_teacher(session: Session, name: str) -> Trained:
    """A teacher from an earlier run's checkpoint (checked to fit this run), evaluated as a trained one is."""
    config, prepared, split = session.config, session.teacher_prepared, session.teacher_split
    teacher = config.teachers[name]
    state, path = load_teacher_checkpoint(config, name, prepared.info.class_names, prepared.info.name, split)
    model, _, _ = build_for_training(f"teachers.{name}", teacher, lambda m: (None, None), prepared, split.train, session.device)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ConfigError(f"teachers.{name}.checkpoint ({path}): its weights do not fit "
                          f"({str(err).splitlines()[0][:120]})") from None
    model.to(session.device)
    parts = {part: PairedClips({s: prepared.streams[s] for s in teacher.streams}, prepared.labels,
                               getattr(split, part)) for part in ("val", "test")}
    logits = {part: predict(model, data, session.device)[1] for part, data in parts.items()}
    figures = {part: summarize(parts[part].labels.numpy(), logits[part], prepared.info.class_names)
               for part in parts}
    summary = {"model": teacher.name, "streams": teacher.streams, "params": count_parameters(model),
               "loaded_from": str(path), "epochs_trained": 0, "best_epoch": 0, "test": figures["test"],
               "val": short_figures(figures["val"]), "val_last": short_figures(figures["val"]),
               "test_best": short_figures(figures["test"]), "test_last": short_figures(figures["test"])}
    return Trained(model, summary, [], state, state, logits["test"])
