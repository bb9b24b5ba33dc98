"""A whole run: prepare the data, split it, train the student, evaluate it once on the test split, and write
the run directory (config.yaml, metrics.json, history.csv, report.md, PNGs, checkpoints/).

The run is written into `<out>.incomplete` and renamed to `<out>` only when it has finished, so an interrupted
or failed run never leaves something that looks like a result.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from pskd import __version__
from pskd.config import ModelConfig, RunConfig, TeacherConfig, TrainConfig, dump_config
from pskd.console import RunLog, log_stderr, progress_printer
from pskd.data.batches import PairedClips
from pskd.data.cache import Prepared, prepare
from pskd.data.clip import SKELETON, DatasetInfo
from pskd.data.labels import hide_labels, keep_labels
from pskd.data.layouts import dataset_layout
from pskd.data.protocols import Split, make_split
from pskd.data.transforms import Augmenter, Standardizer
from pskd.distill.distiller import Distiller, Stage, TeacherOutputs
from pskd.distill.methods import check_method, student_stages, teacher_chain_used, teachers_used
from pskd.distill.terms import TermContext, check_loss
from pskd.errors import ConfigError, UserError
from pskd.evaluate.metrics import summarize
from pskd.evaluate.report import plot_confusion, plot_learning_curves, write_report
from pskd.models.zoo import InputSpec, build_model, count_parameters, model_names
from pskd.plugins import load_plugins
from pskd.rundir import INCOMPLETE, abandon, finish, resume_run_dir, stage_run_dir, staging_of  # noqa: F401
from pskd.teacher_checkpoints import checkpoint_file, initial_weights, load_teacher_checkpoint, teacher_meta
from pskd.train import distributed
from pskd.train.loop import checkpointing, cross_entropy, fit, pick_device, predict, seed_everything

STATE = "state"  # per-epoch checkpoints of every training in the run, while it runs


def default_out_dir(config: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.name}-{config.data.dataset}-{config.method}-seed{config.seed}-{stamp}"


def split_data(config: RunConfig, prepared: Prepared) -> Split:
    options = {"scenes": prepared.scenes}
    if prepared.info.name == "folder":
        options.update(config.data.folder.model_dump())
        options["test_subjects"] = subject_numbers(options["test_subjects"], prepared.info)
    return make_split(
        prepared.info.name, config.data.protocol, prepared.subjects, prepared.trials, config.data.val_subjects,
        options,
    )


def subject_numbers(given: list, info: DatasetInfo) -> list[int]:
    """Subjects given by number or by the name the dataset gives them, as numbers."""
    numbers = {name: int(number) for number, name in info.subject_names.items()}
    unknown = [s for s in given if isinstance(s, str) and s not in numbers and not s.isdigit()]
    if unknown:
        known = ", ".join(sorted(numbers)) or "none: this dataset numbers its subjects"
        raise ConfigError(f"data.folder.test_subjects: {unknown} are not subjects of this dataset (names: {known})")
    return [numbers[s] if isinstance(s, str) and s in numbers else int(s) for s in given]


def input_spec(prepared: Prepared, fit_on: np.ndarray) -> InputSpec:
    """Shapes of every stream, and per-channel statistics of the inertial ones over the clips `fit_on` only."""
    inertial = [s for s in prepared.streams if s != SKELETON]
    mean, std = {}, {}
    for name in inertial:
        values = prepared.streams[name][fit_on]
        normal = Standardizer.fit(values.reshape(len(fit_on), values.shape[1], -1))
        mean[name], std[name] = normal.mean, normal.std
    return InputSpec(
        num_classes=prepared.info.num_classes,
        lengths={name: int(v.shape[1]) for name, v in prepared.streams.items()},
        channels={name: int(np.prod(prepared.streams[name].shape[2:])) for name in inertial},
        layout=dataset_layout(prepared.info.layout, prepared.info.layout_spec),
        mean=mean,
        std=std,
    )


def make_augmenter(config: RunConfig, info: DatasetInfo) -> Augmenter | None:
    if not config.augment.enabled:
        return None
    return Augmenter(**config.augment.model_dump(exclude={"enabled"}), seed=config.seed + 1,
                     devices=info.devices)


def _save_checkpoint(path: Path, state: dict, meta: dict) -> None:
    """Tensors and plain values only, so the file loads with torch.load(weights_only=True)."""
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": state, "meta": meta}, tmp)
    tmp.replace(path)


def _write_history(history: list[dict], path: Path) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def check_names(config: RunConfig) -> None:
    """Model names of the student and every teacher, known to the zoo; the method and its terms."""
    load_plugins(config.plugins)
    models = {"student": config.student.name,
              **{f"teachers.{name}": teacher.name for name, teacher in config.teachers.items()}}
    for where, name in models.items():
        if name not in model_names():
            raise ConfigError(f"{where}.name: unknown model '{name}'; known: {', '.join(model_names())}")
    check_method(config)
    for name, teacher in config.teachers.items():
        if teacher.checkpoint and teachers_used(config):
            checkpoint_file(teacher.checkpoint, name)  # there, before any data is read
            if config.distill.cross_fit_folds >= 2:
                raise ConfigError(f"teachers.{name}.checkpoint: a loaded teacher cannot be cross-fitted "
                                  "(distill.cross_fit_folds trains it again on folds)")


def run(config: RunConfig, out: Path | None = None, log=log_stderr,
        teachers: dict[str, "TrainedTeacher"] | None = None, resume: bool = False,
        overwrite: bool = False) -> tuple[Path, dict]:
    """Train and evaluate what `config` describes; return the run directory and its metrics.

    teachers: already trained teachers to reuse (a sweep trains them once per seed); by default they are trained
    here as the config says. Every training checkpoints each epoch under `<out>.incomplete/state/`; a run killed
    on the way continues from there with resume=True (`pskd train --resume`), to the same figures. overwrite:
    replace a run (finished or interrupted) already at `out`; without it, one there is an error.
    """
    check_names(config)  # before any data is read or any folder made
    if resume and out is None:
        raise UserError("resuming needs the run directory")
    distributed.init(pick_device(config.device))
    if distributed.active():  # rank 0 prepares (and caches) the data first; the others then read the cache
        if distributed.is_main():
            prepare(config.data, config.preprocess, log=log)
        distributed.barrier()
    if not distributed.is_main():
        return _run_as_helper(config, out, log, teachers)
    out = Path(out) if out is not None else default_out_dir(config)
    staging, lock = resume_run_dir(out, config) if resume else stage_run_dir(out, overwrite)
    _share_run_dir(out)
    run_log = RunLog(staging / "train.log", log, held=resume)
    try:
        with checkpointing(staging / STATE):
            metrics = _run_into(config, staging, run_log, teachers)
        distributed.barrier()  # every rank is done with the checkpoints
        run_log.keep()
        run_log.close()
        finish(staging, out, lock, STATE)
    except KeyboardInterrupt:
        run_log.keep()
        run_log("interrupted: the checkpoints are kept; continue with: pskd train --resume " + str(out))
        run_log.close()
        lock.release()
        raise
    except BaseException:
        run_log.close()
        abandon(staging, lock, not resume, out, log)
        raise
    return out, metrics


def _share_run_dir(out: Path | None) -> Path | None:
    """Rank 0 tells the other ranks where the run is written (its default name holds a time stamp)."""
    if not distributed.active():
        return out
    names = [str(out) if out is not None else None]
    torch.distributed.broadcast_object_list(names, src=0)
    return Path(names[0])


def _run_as_helper(config: RunConfig, out: Path | None, log, teachers) -> tuple[Path, dict]:
    """A rank other than 0: the same training, reading rank 0's checkpoints to resume, writing nothing of the run
    (its own copy of the run directory goes to a temporary folder, deleted at the end)."""
    out = _share_run_dir(out)
    staging = staging_of(out)
    with tempfile.TemporaryDirectory(prefix="pskd-rank") as private:
        with checkpointing(staging / STATE):
            metrics = _run_into(config, Path(private), lambda *a, **k: None, teachers)
        distributed.barrier()
    return out, metrics


def _short(figures: dict) -> dict:
    return {"accuracy": figures["accuracy"], "macro_f1": figures["macro_f1"]}


@dataclass
class Trained:
    """A model trained, selected on validation, optionally refit, and evaluated on the test split once."""

    model: torch.nn.Module  # holding the delivered weights
    summary: dict
    history: list[dict]
    last_state: dict
    delivered_state: dict
    test_logits: np.ndarray  # the delivered model's, in the order of the split's test clips


def _build(role: str, model_config: ModelConfig, criterion_for: Callable, prepared: Prepared, fit_on: np.ndarray,
           device: torch.device) -> tuple[torch.nn.Module, Callable, list]:
    """A fresh model (standardised on the clips `fit_on`), its criterion, and every parameter to optimise."""
    model = build_model(model_config.name, model_config.streams, model_config.options, input_spec(prepared, fit_on),
                        role)
    if model_config.init_from:
        where = "student" if role.startswith("student") else role.split(" ")[0]
        model.load_state_dict(initial_weights(model_config.init_from, model_config.name, model_config.streams,
                                              model_config.options, prepared.info.class_names, where))
    criterion, extra = criterion_for(model)
    parameters = list(model.parameters()) + (list(extra.to(device).parameters()) if extra is not None else [])
    return model, criterion, parameters


def replay(
    role: str,
    model_config: ModelConfig,
    train_config: TrainConfig,
    criterion_for: Callable,
    config: RunConfig,
    prepared: Prepared,
    fit_on: np.ndarray,
    epochs: int,
    device: torch.device,
    epoch_size: int | None = None,
    log=None,
) -> torch.nn.Module:
    """Train a fresh model on the clips `fit_on` along the configured schedule, stopped after `epochs` (an epoch
    chosen on validation by an earlier run): used to refit on every training subject and to cross-fit teachers."""
    seed_everything(config.seed, config.deterministic)
    model, criterion, parameters = _build(role, model_config, criterion_for, prepared, fit_on, device)
    streams = {s: prepared.streams[s] for s in model_config.streams}
    result = fit(
        model, PairedClips(streams, prepared.labels, fit_on, epoch_size, train_config.labelled_share), None,
        train_config, criterion, device,
        seed=config.seed, augment=make_augmenter(config, prepared.info), progress=config.progress, description=role,
        stop_after=epochs, parameters=parameters, on_epoch=progress_printer(log),
    )
    model.load_state_dict(result.last_state)
    return model


def train_and_evaluate(
    role: str,
    model_config: ModelConfig,
    train_config: TrainConfig,
    criterion_for: Callable[[torch.nn.Module], tuple[Callable, torch.nn.Module | None]],
    config: RunConfig,
    prepared: Prepared,
    split: Split,
    device: torch.device,
    log,
) -> Trained:
    """The one recipe every model goes through, student or teacher.

    criterion_for(model) gives the training criterion and, when it has parameters of its own (projection heads),
    the module holding them: they are optimised with the model, and rebuilt fresh for the refit.
    """
    # building first checks the model's streams against the dataset
    unlabelled = getattr(criterion_for, "uses_unlabelled", False)
    rows = {"train": np.concatenate([split.train, split.unlabelled]) if unlabelled else split.train,
            "val": split.val, "test": split.test}
    model, criterion, parameters = _build(role, model_config, criterion_for, prepared, rows["train"], device)
    streams = {s: prepared.streams[s] for s in model_config.streams}
    parts = {name: PairedClips(streams, prepared.labels, part) for name, part in rows.items()}
    # every method takes as many steps per epoch as there are training clips, labelled or not
    parts["train"] = PairedClips(streams, prepared.labels, rows["train"], len(split.train) + len(split.unlabelled),
                                 train_config.labelled_share)
    log(f"{role} {model_config.name} on {', '.join(model_config.streams)}: {count_parameters(model):,} parameters, "
        f"device {device}")
    result = fit(
        model, parts["train"], parts["val"], train_config, criterion, device, seed=config.seed,
        augment=make_augmenter(config, prepared.info), progress=config.progress, description=role,
        parameters=parameters, on_epoch=progress_printer(log),
    )
    class_names = prepared.info.class_names
    evaluations, outputs = {}, {}
    for tag, state in (("best", result.best_state), ("last", result.last_state)):
        model.load_state_dict(state)
        for part in ("val", "test"):
            _, outputs[(tag, part)] = predict(model, parts[part], device)
            evaluations[(tag, part)] = summarize(parts[part].labels.numpy(), outputs[(tag, part)], class_names)
    delivered, delivered_state = evaluations[("best", "test")], result.best_state
    delivered_logits = outputs[("best", "test")]
    if train_config.refit:
        # The selected trajectory replayed on every training subject: same schedule, same seed, stopped at the
        # epoch validation chose. The validation subject is training data now, so this model has no validation.
        everyone = np.concatenate([split.train, split.val, *((split.unlabelled, split.unlabelled_val) if unlabelled
                                                             else ())])
        model = replay(f"{role} refit", model_config, train_config, criterion_for, config, prepared, everyone,
                       result.best_epoch, device, epoch_size=len(split.train) + len(split.val) + len(split.unlabelled)
                       + len(split.unlabelled_val), log=log)
        delivered_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        _, delivered_logits = predict(model, parts["test"], device)
        delivered = summarize(parts["test"].labels.numpy(), delivered_logits, class_names)
    else:
        model.load_state_dict(delivered_state)
    summary = {
        "model": model_config.name,
        "streams": model_config.streams,
        "params": count_parameters(model),
        "epochs_trained": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "train_seconds": result.seconds,
        "refit": train_config.refit,
        "select": train_config.select,
        # the delivered model: best on validation, or its refit on every training subject
        "test": delivered,
        "val": _short(evaluations[("best", "val")]),
        "val_last": _short(evaluations[("last", "val")]),
        "test_best": _short(evaluations[("best", "test")]),
        "test_last": _short(evaluations[("last", "test")]),
    }
    return Trained(model, summary, result.history, result.last_state, delivered_state, delivered_logits)


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
                       session.config, prepared, clips[~inside & learns], trained.summary["best_epoch"],
                       session.device, epoch_size=int((~inside).sum()), log=session.log)
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


class Distilling:
    """criterion_for(model): cross-entropy alone without stages, else a distiller over the teachers' targets.
    uses_unlabelled: whether unlabelled clips join the training batches (a term learns from them)."""

    def __init__(self, config: RunConfig, targets: list[TeacherOutputs], stages: list[Stage], label_smoothing: float,
                 devices: dict[str, str], device: torch.device):
        self.config, self.targets, self.stages = config, targets, stages
        self.label_smoothing, self.devices, self.device = label_smoothing, devices, device
        self.uses_unlabelled = any(not check_loss(term, "distill").needs_labels for stage in stages
                                   for term in stage.terms)

    def __call__(self, model: torch.nn.Module):
        if not self.stages:
            return cross_entropy(self.label_smoothing), None
        context = TermContext(model.embedding_dim, self.targets, self.config.distill, self.label_smoothing,
                              self.devices)
        distiller = Distiller(context, self.stages, self.config.distill.terms)
        return distiller.to(self.device), distiller


@dataclass
class Session:
    """What the parts of a run share: its config, the prepared data and split, the device, the log."""

    config: RunConfig
    prepared: Prepared  # labels as the student may see them (-1 where hidden or absent)
    split: Split
    device: torch.device
    log: Callable
    teacher_prepared: Prepared | None = None  # as the teachers may see them (data.labels.teachers); default: the same
    teacher_split: Split | None = None

    def __post_init__(self):
        self.teacher_prepared = self.teacher_prepared or self.prepared
        self.teacher_split = self.teacher_split or self.split

    @property
    def training_clips(self) -> np.ndarray:
        """Every clip of the training subjects (training and validation parts, labelled or not); never a test clip."""
        return np.sort(np.concatenate([self.split.train, self.split.val, self.split.unlabelled,
                                       self.split.unlabelled_val]))


def label_views(config: RunConfig, prepared: Prepared, by_subject: Split) -> tuple[Prepared, Split, Prepared, Split]:
    """The data as the student and as the teachers may see it: labels hidden as data.labels says (never a test
    clip's), and the split's parts restricted to what each may learn from."""
    labels = config.data.labels
    training = np.concatenate([by_subject.train, by_subject.val])
    keep = keep_labels(prepared.labels, prepared.subjects, training, labels.fraction, labels.seed, labels.subjects)
    student = replace(prepared, labels=hide_labels(prepared.labels, keep))
    teacher = prepared if labels.teachers == "all" else student
    return student, by_subject.labelled_by(student.labels), teacher, by_subject.labelled_by(teacher.labels)


def open_session(config: RunConfig, log=log_stderr) -> Session:
    load_plugins(config.plugins)
    if config.threads:
        torch.set_num_threads(config.threads)
    elif distributed.active():  # ranks on one machine share its cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    seed_everything(config.seed, config.deterministic)
    device = pick_device(config.device)
    tic = time.perf_counter()
    prepared = prepare(config.data, config.preprocess, log=log)
    for note in prepared.info.notes:
        log(f"note: {note}")
    student, split, teacher, teacher_split = label_views(config, prepared, split_data(config, prepared))
    log(f"{prepared.info.name}: {len(prepared)} clips, {prepared.info.num_classes} classes, "
        f"prepared in {time.perf_counter() - tic:.1f} s; {split.describe()}")
    if teacher is not student:
        log(f"teachers learn from every training label: {teacher_split.describe()}")
    unseen = unlearnable_classes(student, split)
    if unseen:
        log(f"warning: no labelled training clip of {len(unseen)} class(es), which the student cannot learn from "
            f"its labels: {', '.join(unseen[:5])}{' ...' if len(unseen) > 5 else ''}")
    return Session(config, student, split, device, log, teacher, teacher_split)


def unlearnable_classes(prepared: Prepared, split: Split) -> list[str]:
    """Classes without a labelled training or validation clip (present in test subjects only, say)."""
    seen = set(prepared.labels[np.concatenate([split.train, split.val])].tolist())
    return [name for index, name in enumerate(prepared.info.class_names) if index not in seen]


@dataclass
class TrainedTeacher:
    trained: Trained
    outputs: TeacherOutputs


def train_teachers(session: Session, ready: dict[str, TrainedTeacher] | None = None) -> dict[str, TrainedTeacher]:
    """The configured teachers, each after the one it distils from; a teacher with distill_from (when the method
    uses the chain) learns from that already trained teacher too. Each is frozen, its outputs computed once.
    Teachers in `ready` (trained earlier on the same split and seed) are taken as they are."""
    config, device = session.config, session.device
    prepared, split = session.teacher_prepared, session.teacher_split
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
        trained = train_and_evaluate(f"teachers.{name}", teacher, teacher.train, criterion_for, config,
                                     prepared, split, device, session.log)
        if config.distill.cross_fit_folds >= 2:
            outputs = cross_fit(name, teacher, criterion_for, session, trained, config.distill.cross_fit_folds)
        else:
            outputs = teacher_outputs(name, trained.model, teacher.streams, prepared, session.training_clips, device)
        teachers[name] = TrainedTeacher(trained, outputs)
        session.log(f"teacher {name}: test accuracy {100 * trained.summary['test']['accuracy']:.2f} %")
    return teachers


def _student(session: Session, teachers: dict[str, TrainedTeacher], stages: list[Stage], role: str) -> Trained:
    config = session.config
    seed_everything(config.seed, config.deterministic)
    criterion_for = Distilling(config, [t.outputs for t in teachers.values()], stages, config.train.label_smoothing,
                               session.prepared.info.devices, session.device)
    return train_and_evaluate(role, config.student, config.train, criterion_for, config, session.prepared,
                              session.split, session.device, session.log)


def load_teacher(session: Session, name: str) -> Trained:
    """A teacher from an earlier run's checkpoint (checked to fit this run), evaluated as a trained one is."""
    config, prepared, split = session.config, session.teacher_prepared, session.teacher_split
    teacher = config.teachers[name]
    state, path = load_teacher_checkpoint(config, name, prepared.info.class_names, prepared.info.name, split)
    model, _, _ = _build(f"teachers.{name}", teacher, lambda m: (None, None), prepared, split.train, session.device)
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
               "val": _short(figures["val"]), "val_last": _short(figures["val"]),
               "test_best": _short(figures["test"]), "test_last": _short(figures["test"])}
    return Trained(model, summary, [], state, state, logits["test"])


def train_student(session: Session, teachers: dict[str, TrainedTeacher]) -> Trained:
    """The student of the config's method. With distill.gate, the same student is also trained without any
    teacher, and the distilled one is delivered unless validation prefers the plain one (the test split
    chooses nothing; both test figures are recorded)."""
    stages = student_stages(session.config)
    student = _student(session, teachers, stages, "student")
    if not (session.config.distill.gate and teachers_used(session.config)):
        return student
    plain = _student(session, {}, [], "student without teachers (gate)")
    keep = student.summary["val"]["accuracy"] >= plain.summary["val"]["accuracy"]
    chosen = student if keep else plain
    chosen.summary["gate"] = {
        "delivered": "distilled" if keep else "cross-entropy",
        "val_distilled": student.summary["val"]["accuracy"], "val_cross_entropy": plain.summary["val"]["accuracy"],
        "test_distilled": student.summary["test"]["accuracy"],
        "test_cross_entropy": plain.summary["test"]["accuracy"],
    }
    session.log(f"gate: validation {100 * chosen.summary['gate']['val_distilled']:.2f} % distilled, "
                f"{100 * chosen.summary['gate']['val_cross_entropy']:.2f} % without teachers: delivering the "
                f"{chosen.summary['gate']['delivered']} student")
    return chosen


def _time_before(run_dir: Path) -> float:
    """Seconds an interrupted run had spent: from the writing of its config.yaml to its last checkpoint (0 for a
    fresh run). The epoch a kill cut short is work lost, not counted."""
    config, stamps = run_dir / "config.yaml", [p.stat().st_mtime for p in (run_dir / STATE).glob("*.pt")]
    return max(0.0, max(stamps) - config.stat().st_mtime) if stamps and config.is_file() else 0.0


def _run_into(config: RunConfig, run_dir: Path, log, teachers: dict[str, TrainedTeacher] | None = None) -> dict:
    before = _time_before(run_dir)
    started = time.perf_counter() - before
    if not before:  # a resumed run keeps the config.yaml it started with (and its time)
        (run_dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")
    session = open_session(config, log)
    if teachers is None:  # a cross-entropy student uses no teacher: none is trained for it
        teachers = train_teachers(session) if teachers_used(config) else {}
    student = train_student(session, teachers)
    return write_run(session, run_dir, teachers, student, started)


def _write_predictions(session: Session, logits: np.ndarray, path: Path) -> dict[str, dict]:
    """One row per test clip for the delivered model (its test logits): who, what it was, what was predicted,
    how sure. Returns the accuracy per test subject."""
    prepared, test = session.prepared, session.split.test
    probabilities = torch.softmax(torch.as_tensor(logits), dim=1).numpy()
    names = prepared.info.class_names
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
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
        "stages": [{"start": s.start, "teachers": s.teachers, "loss": s.loss} for s in student_stages(config)],
        "labels": _label_counts(session),
        "teachers": {name: t.trained.summary for name, t in teachers.items()},
        "student": student.summary,
    }

    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir()
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
    }
    _save_checkpoint(checkpoints / "best.pt", student.delivered_state,
                     {**meta, "epoch": student.summary["best_epoch"], "refit": config.train.refit})
    _save_checkpoint(checkpoints / "last.pt", student.last_state, {**meta, "epoch": len(result_history)})
    if teachers:
        (run_dir / "teachers").mkdir()
        for name, teacher_run in teachers.items():
            _save_checkpoint(run_dir / "teachers" / f"{name}.pt", teacher_run.trained.delivered_state,
                             teacher_meta(config, name, class_names, prepared.info.name, session.teacher_split))
    _write_history(result_history, run_dir / "history.csv")
    metrics["student"]["test_per_subject"] = _write_predictions(session, student.test_logits, run_dir / "predictions.csv")
    title = f"{config.name}: {config.method} student on {prepared.info.name} {split.protocol}, seed {config.seed}"
    plot_confusion(metrics["student"]["test"]["confusion_matrix"], class_names, run_dir / "confusion_matrix.png",
                   f"{title}\ntest accuracy {100 * metrics['student']['test']['accuracy']:.2f} %")
    plot_learning_curves(result_history, student.summary["best_epoch"], run_dir / "learning_curves.png", title)
    metrics["wall_time_s"] = time.perf_counter() - started  # a resumed run's included
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    write_report(metrics, class_names, run_dir / "report.md")
    return metrics
