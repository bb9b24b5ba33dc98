"""The one recipe every model goes through, student or teacher: build it (standardised on its training clips), train
it with its criterion, select an epoch on validation (or keep the last), refit on every training subject, and
evaluate the delivered model once on the test split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pskd.config import ModelConfig, RunConfig, TrainConfig
from pskd.console import progress_printer
from pskd.data.batches import PairedClips
from pskd.data.clip import SKELETON, DatasetInfo
from pskd.data.layouts import dataset_layout
from pskd.data.prepared import Prepared
from pskd.data.transforms import Augmenter, Standardizer
from pskd.distill.distiller import Distiller, Stage, TeacherOutputs
from pskd.distill.terms import TermContext, check_loss
from pskd.evaluate.metrics import summarize
from pskd.models.zoo import InputSpec, build_model, count_parameters
from pskd.teacher_checkpoints import initial_weights
from pskd.training.loop import FitOptions, cross_entropy, fit, predict, seed_everything
from pskd.training.session import Session
from pskd.training.state import snapshot


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


def short_figures(figures: dict) -> dict:
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
    val_correct: np.ndarray | None = None  # per validation clip, whether the selected model was right


def build_for_training(role: str, model_config: ModelConfig, criterion_for: Callable, prepared: Prepared,
                       fit_on: np.ndarray, device: torch.device) -> tuple[torch.nn.Module, Callable, list]:
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


def fit_options(session: Session, role: str, parameters: list, stop_after: int | None = None) -> FitOptions:
    """How a training of the session's runs: its device, seed, augmentation, progress lines and checkpoint."""
    config = session.config
    return FitOptions(device=session.device, seed=config.seed, augment=make_augmenter(config, session.prepared.info),
                      progress=config.progress, description=role, parameters=parameters, stop_after=stop_after,
                      on_epoch=progress_printer(session.log), checkpoint=session.checkpoint(role))


def replay(role: str, model_config: ModelConfig, train_config: TrainConfig, criterion_for: Callable,
           session: Session, fit_on: np.ndarray, epochs: int, epoch_size: int | None = None) -> torch.nn.Module:
    """Train a fresh model on the clips `fit_on` along the configured schedule, stopped after `epochs` (an epoch
    chosen on validation by an earlier run): used to refit on every training subject and to cross-fit teachers."""
    config, prepared, device = session.config, session.prepared, session.device
    seed_everything(config.seed, config.deterministic)
    model, criterion, parameters = build_for_training(role, model_config, criterion_for, prepared, fit_on, device)
    streams = {s: prepared.streams[s] for s in model_config.streams}
    result = fit(model, PairedClips(streams, prepared.labels, fit_on, epoch_size, train_config.labelled_share), None,
                 train_config, criterion, fit_options(session, role, parameters, stop_after=epochs))
    model.load_state_dict(result.last_state)
    return model


def train_and_evaluate(role: str, model_config: ModelConfig, train_config: TrainConfig,
                       criterion_for: Callable[[torch.nn.Module], tuple[Callable, torch.nn.Module | None]],
                       session: Session) -> Trained:
    """The one recipe every model goes through, student or teacher, on the session's data and split.

    criterion_for(model) gives the training criterion and, when it has parameters of its own (projection heads),
    the module holding them: they are optimised with the model, and rebuilt fresh for the refit.
    """
    prepared, split, device = session.prepared, session.split, session.device
    # building first checks the model's streams against the dataset
    unlabelled = getattr(criterion_for, "uses_unlabelled", False)
    rows = {"train": np.concatenate([split.train, split.unlabelled]) if unlabelled else split.train,
            "val": split.val, "test": split.test}
    model, criterion, parameters = build_for_training(role, model_config, criterion_for, prepared, rows["train"], device)
    streams = {s: prepared.streams[s] for s in model_config.streams}
    parts = {name: PairedClips(streams, prepared.labels, part) for name, part in rows.items()}
    # every method takes as many steps per epoch as there are training clips, labelled or not
    parts["train"] = PairedClips(streams, prepared.labels, rows["train"], len(split.train) + len(split.unlabelled),
                                 train_config.labelled_share)
    session.log(f"{role} {model_config.name} on {', '.join(model_config.streams)}: {count_parameters(model):,} "
                f"parameters, device {device}")
    result = fit(model, parts["train"], parts["val"], train_config, criterion, fit_options(session, role, parameters))
    evaluations, outputs = evaluate_best_and_last(model, result, parts, device, prepared.info.class_names)
    delivered, delivered_state = evaluations[("best", "test")], result.best_state
    delivered_logits = outputs[("best", "test")]
    if train_config.refit:
        # The selected trajectory replayed on every training subject: same schedule, same seed, stopped at the
        # epoch validation chose. The validation subject is training data now, so this model has no validation.
        everyone = np.concatenate([split.train, split.val, *((split.unlabelled, split.unlabelled_val) if unlabelled
                                                             else ())])
        model = replay(f"{role} refit", model_config, train_config, criterion_for, session, everyone,
                       result.best_epoch, epoch_size=len(split.train) + len(split.val) + len(split.unlabelled)
                       + len(split.unlabelled_val))
        delivered_state = snapshot(model)
        _, delivered_logits = predict(model, parts["test"], device)
        delivered = summarize(parts["test"].labels.numpy(), delivered_logits, prepared.info.class_names)
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
        "val": short_figures(evaluations[("best", "val")]),
        "val_last": short_figures(evaluations[("last", "val")]),
        "test_best": short_figures(evaluations[("best", "test")]),
        "test_last": short_figures(evaluations[("last", "test")]),
    }
    val_correct = outputs[("best", "val")].argmax(axis=1) == parts["val"].labels.numpy()
    return Trained(model, summary, result.history, result.last_state, delivered_state, delivered_logits, val_correct)


def evaluate_best_and_last(model: torch.nn.Module, result, parts: dict, device: torch.device,
                           class_names: list[str]) -> tuple[dict, dict]:
    """Figures and logits of the best and the last state on the validation and test parts."""
    evaluations, outputs = {}, {}
    for tag, state in (("best", result.best_state), ("last", result.last_state)):
        model.load_state_dict(state)
        for part in ("val", "test"):
            _, outputs[(tag, part)] = predict(model, parts[part], device)
            evaluations[(tag, part)] = summarize(parts[part].labels.numpy(), outputs[(tag, part)], class_names)
    return evaluations, outputs


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
