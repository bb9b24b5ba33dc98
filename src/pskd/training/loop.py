"""The one training loop every model and method goes through.

A method differs only by its criterion: a callable (outputs, batch) -> {term name: scalar loss}; the loop sums
the terms, logs each, and selects the checkpoint on the validation split (never the test split).
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from pskd.config import TrainConfig
from pskd.data.batches import LABEL, PairedClips
from pskd.distill.losses.supervised import supervised_cross_entropy
from pskd.errors import ConfigError, TrainingDiverged
from pskd.training import distributed
from pskd.training.inference import evaluate_loss, predict, to_device
from pskd.training.state import FitResult, Training, WeightAverage, lr_factor, make_optimizer, save_atomically

# what other modules take from here
__all__ = ["FitOptions", "FitResult", "WeightAverage", "cross_entropy", "evaluate_loss", "fit",
           "lr_factor", "make_optimizer", "pick_device", "predict", "save_atomically", "seed_everything", "to_device"]

Outputs = tuple[torch.Tensor, torch.Tensor]  # (embedding, logits)
Criterion = Callable[[Outputs, dict[str, torch.Tensor]], dict[str, torch.Tensor]]
BatchTransform = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic


def pick_device(name: str) -> torch.device:
    device = distributed.local_device(name)  # under torchrun: this rank's GPU, or the CPU
    if device is not None:
        return device
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


def cross_entropy(label_smoothing: float = 0.0) -> Criterion:
    def criterion(outputs: Outputs, batch: dict[str, torch.Tensor], model=None) -> dict[str, torch.Tensor]:
        return {"ce": supervised_cross_entropy(outputs[1], batch[LABEL], label_smoothing)}

    return criterion


def check_loss(record: dict, description: str, epoch: int) -> None:
    """A TrainingDiverged when an epoch's mean training loss is NaN or infinite (the epoch is not saved, so the
    checkpoint left is the last epoch that trained on finite numbers). Every rank sees the same summed loss."""
    loss = record["train_loss"]
    if not math.isfinite(loss):
        raise TrainingDiverged(f"{description}: the training loss is {loss} at epoch {epoch}; the run is stopped "
                               "(a learning rate or loss weight too large for these data, or inputs of huge values?)")


@dataclass
class FitOptions:
    """How one training runs, besides its data, schedule and criterion.

    parameters: what the optimizer updates (default: every parameter of the model). stop_after: end after this
    many epochs while keeping the schedule of config.epochs (to replay a selected trajectory). augment runs on the
    CPU with its own generator, so the random stream does not depend on the device. on_epoch(line, show,
    description, record) receives one plain progress line per epoch; show is true when a progress display is
    wanted and stderr is not a terminal (where the progress bar would print carriage-return frames). checkpoint:
    the file this training saves its state to after every epoch, and resumes from when it is there (None: nothing
    is written)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    augment: BatchTransform | None = None
    progress: bool = True
    description: str = "train"
    parameters: list | None = None
    stop_after: int | None = None
    on_epoch: Callable[[str, bool, str, dict], None] | None = None
    checkpoint: Path | None = None


def fit(model: nn.Module, train: PairedClips, val: PairedClips | None, config: TrainConfig, criterion: Criterion,
        options: FitOptions | None = None) -> FitResult:
    """Train `model` on `train`; keep the state that is best on `val` (by config.select) and the last one."""
    options = options or FitOptions()
    device, description, progress = options.device, options.description, options.progress
    checkpoint, on_epoch = options.checkpoint, options.on_epoch
    training = Training(model, criterion, config, device, train.num_batches(config.batch_size), options.seed,
                        options.augment, options.parameters)
    last_epoch = min(config.epochs, options.stop_after or config.epochs)
    step = training.step_module()
    if checkpoint is not None and checkpoint.is_file() and training.restore(checkpoint):
        result = training.finish()
        result.seconds = training.restored_seconds
        return result
    terminal = sys.stderr.isatty()
    bar = tqdm(range(training.epoch + 1, last_epoch + 1), desc=description, disable=not (progress and terminal),
               unit="epoch", leave=False, initial=training.epoch, total=last_epoch)
    for epoch in bar:
        record = training.train_epoch(train, step)
        check_loss(record, description, epoch)
        training.select(record, val)
        shown = {"loss": f"{record['train_loss']:.3f}"}
        if "val_accuracy" in record:  # a refit or a cross-fitting replay has no validation to show
            shown.update(val=f"{record['val_accuracy']:.3f}", best=str(training.result.best_epoch))
        bar.set_postfix(shown)
        if on_epoch is not None:
            on_epoch(f"{description}: epoch {epoch}/{last_epoch} " + " ".join(f"{k} {v}" for k, v in shown.items())
                     + f" ({record['seconds']:.1f} s)", progress and not terminal, description, record)
        stopped = training.result.stopped_early
        if checkpoint is not None and distributed.is_main():  # the other ranks only read it, to resume
            training.save(checkpoint, complete=stopped or epoch == last_epoch)
        if stopped:
            break
    bar.close()
    return training.finish()
