"""The one training loop every model and method goes through.

A method differs only by its criterion: a callable (outputs, batch) -> {term name: scalar loss}; the loop sums
the terms, logs each, and selects the checkpoint on the validation split (never the test split).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import math
import os
import random
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pskd.config import TrainConfig
from pskd.data.batches import LABEL, PairedClips
from pskd.distill.losses.supervised import supervised_cross_entropy
from pskd.errors import ConfigError
from pskd.train import distributed

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


def make_optimizer(parameters, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(parameters, lr=config.lr, weight_decay=config.weight_decay, momentum=0.9, nesterov=True)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Linear warm-up, then constant or cosine decay to zero over the remaining steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def predict(model: nn.Module, data: PairedClips, device: torch.device, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and logits of every clip of `data`, in order."""
    model.eval()
    embeddings, logits = [], []
    for batch in data.batches(batch_size):
        embedding, logit = model(to_device(batch, device))
        embeddings.append(embedding.float().cpu())
        logits.append(logit.float().cpu())
    return torch.cat(embeddings).numpy(), torch.cat(logits).numpy()


@torch.no_grad()
def evaluate_loss(model: nn.Module, data: PairedClips, device: torch.device, batch_size: int = 256) -> tuple[float, float]:
    """Mean cross-entropy (no smoothing) and accuracy on `data`."""
    _, logits = predict(model, data, device, batch_size)
    labels = data.labels.numpy()
    loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    return loss, float((logits.argmax(1) == labels).mean())


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_state: dict | None = None
    last_state: dict | None = None
    stopped_early: bool = False
    seconds: float = 0.0


class WeightAverage:
    """Exponential moving average of a model's parameters; buffers (BatchNorm statistics) are copied as they are.

    The decay warms up as min(decay, (1 + t) / (10 + t)) over update t, so that a short run is not dominated by
    the random initial weights.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        for average, current in zip(self.model.parameters(), model.parameters()):
            average.lerp_(current.detach(), 1.0 - decay)
        for average, current in zip(self.model.buffers(), model.buffers()):
            average.copy_(current)


def _state(model: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


# Where fit() keeps its per-epoch checkpoints: set by the pipeline for the run being written (a folder), unset
# elsewhere (then nothing is written). Each fit writes <folder>/<its description>.pt.
_CHECKPOINTS: contextvars.ContextVar[Path | None] = contextvars.ContextVar("checkpoints", default=None)


@contextlib.contextmanager
def checkpointing(folder: Path | None) -> Iterator[None]:
    """Within this block every fit() checkpoints each epoch under `folder`, and resumes from what it finds."""
    token = _CHECKPOINTS.set(folder)
    try:
        yield
    finally:
        _CHECKPOINTS.reset(token)


def checkpoint_file(description: str) -> Path | None:
    folder = _CHECKPOINTS.get()
    if folder is None:
        return None
    return folder / (re.sub(r"[^A-Za-z0-9_.-]+", "_", description).strip("_") + ".pt")


def save_atomically(blob: dict, path: Path) -> None:
    """Write then rename: a kill at any moment leaves either the previous file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _rng_states(order: torch.Generator, augment) -> dict:
    numpy_state = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "order": order.get_state(),
        "python": random.getstate(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    generator = getattr(augment, "generator", None)
    if generator is not None:
        states["augment"] = generator.get_state()
    return states


def _set_rng_states(states: dict, order: torch.Generator, augment) -> None:
    torch.set_rng_state(states["torch"])
    order.set_state(states["order"])
    random.setstate(_tuples(states["python"]))
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    generator = getattr(augment, "generator", None)
    if generator is not None and "augment" in states:
        generator.set_state(states["augment"])


def _tuples(value):
    """random.setstate wants the nested tuples random.getstate gave (a checkpoint may hold lists)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


class _Step(nn.Module):
    """The model and its criterion as one module, so that DistributedDataParallel synchronises the gradients of
    both (a distiller has parameters of its own)."""

    def __init__(self, model: nn.Module, criterion):
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(self, batch: dict[str, torch.Tensor]):
        outputs = self.model(batch)
        return outputs, self.criterion(outputs, batch, self.model)


def fit(
    model: nn.Module,
    train: PairedClips,
    val: PairedClips | None,
    config: TrainConfig,
    criterion: Criterion,
    device: torch.device,
    seed: int = 0,
    augment: BatchTransform | None = None,
    progress: bool = True,
    description: str = "train",
    parameters=None,
    stop_after: int | None = None,
    on_epoch: Callable[[str, bool, str, dict], None] | None = None,
) -> FitResult:
    """Train `model` on `train`; keep the state that is best on `val` (by config.select) and the last one.

    parameters: what the optimizer updates (default: every parameter of the model). stop_after: end after this
    many epochs while keeping the schedule of config.epochs (to replay a selected trajectory). Augmentation runs
    on the CPU with its own generator, so the random stream does not depend on the device. on_epoch(line, show)
    receives one plain progress line per epoch; show is true when a progress display is wanted and stderr is not
    a terminal (where the progress bar would print carriage-return frames), and the training's description and
    the epoch's history record.
    """
    model.to(device)
    optimizer = make_optimizer(parameters if parameters is not None else model.parameters(), config)
    steps_per_epoch = train.num_batches(config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = steps_per_epoch * config.warmup_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, config.schedule)
    )
    order = torch.Generator().manual_seed(seed)
    average = WeightAverage(model, config.ema) if config.ema else None
    judged = average.model if average else model  # the weights that are validated, selected and saved
    result = FitResult()
    best_key: tuple[float, float] | None = None
    since_best = 0
    start = time.perf_counter()
    last_epoch = min(config.epochs, stop_after or config.epochs)
    first_epoch = 1
    checkpoint = checkpoint_file(description)
    holds_state = isinstance(criterion, nn.Module)  # a distiller's projections and prototypes

    def save(epoch: int, complete: bool) -> None:
        save_atomically({
            "epoch": epoch, "complete": complete, "model": _state(model),
            "average": _state(average.model) if average else None, "average_updates": average.updates if average else 0,
            "criterion": criterion.state_dict() if holds_state else None,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_states(order, augment),
            "history": result.history, "best_epoch": result.best_epoch, "best_state": result.best_state,
            "best_key": list(best_key) if best_key else None, "since_best": since_best,
            "stopped_early": result.stopped_early, "seconds": time.perf_counter() - start,
        }, checkpoint)

    step = _Step(model, criterion)
    if distributed.active():
        # a distiller's heads for teachers outside the current stage get no gradient in that stage
        unused = holds_state and any(True for _ in criterion.parameters())
        step = nn.parallel.DistributedDataParallel(
            step, device_ids=[device] if device.type == "cuda" else None, find_unused_parameters=unused
        )
    if checkpoint is not None and checkpoint.is_file():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        if average is not None:
            average.model.load_state_dict(saved["average"])
            average.updates = saved["average_updates"]
        if holds_state:
            criterion.load_state_dict(saved["criterion"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        _set_rng_states(saved["rng"], order, augment)
        result.history, result.best_epoch, result.best_state = saved["history"], saved["best_epoch"], saved["best_state"]
        best_key = tuple(saved["best_key"]) if saved["best_key"] else None
        since_best, result.stopped_early = saved["since_best"], saved["stopped_early"]
        start -= saved["seconds"]
        first_epoch = saved["epoch"] + 1
        if saved["complete"]:
            result.last_state = _state(judged)
            result.seconds = saved["seconds"]
            return result
    terminal = sys.stderr.isatty()
    bar = tqdm(range(first_epoch, last_epoch + 1), desc=description, disable=not (progress and terminal),
               unit="epoch", leave=False, initial=first_epoch - 1, total=last_epoch)
    for epoch in bar:
        model.train()
        if hasattr(criterion, "set_epoch"):
            criterion.set_epoch(epoch)  # progressive schedules change teachers and losses by epoch
        tic = time.perf_counter()
        sums: dict[str, float] = {}
        correct = seen = 0
        for batch in train.batches(config.batch_size, shuffle=True, generator=order):
            if augment is not None:
                batch = augment(batch)  # the whole global batch, the same on every rank
            batch = to_device(distributed.shard(batch), device)
            outputs, terms = step(batch)
            loss = sum(terms.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            if average is not None:
                average.update(model)
            size = len(batch[LABEL])
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.item() * size
            sums["loss"] = sums.get("loss", 0.0) + loss.item() * size
            sums["clips"] = sums.get("clips", 0.0) + size
            known = batch[LABEL] >= 0  # training accuracy over the labelled clips of the batch
            correct += (outputs[1].argmax(1)[known] == batch[LABEL][known]).sum().item()
            seen += int(known.sum())
        if distributed.active():
            names = list(sums)  # the same terms in the same order on every rank
            totals = distributed.all_sum([sums[n] for n in names] + [correct, seen])
            sums, correct, seen = dict(zip(names, totals[:-2])), totals[-2], totals[-1]
        record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        clips = sums.pop("clips")
        record.update({f"train_{k}": v / clips for k, v in sums.items()})
        record["train_accuracy"] = correct / max(seen, 1)
        key = (float(epoch), 0.0)  # no validation data, or select: last: the last epoch is the selected one
        if val is not None and len(val):
            record["val_loss"], record["val_accuracy"] = evaluate_loss(judged, val, device)
            if config.select == "val_accuracy":
                key = (record["val_accuracy"], -record["val_loss"])
            elif config.select == "val_loss":
                key = (-record["val_loss"], record["val_accuracy"])
        record["seconds"] = time.perf_counter() - tic
        result.history.append(record)
        if best_key is None or key > best_key:
            best_key, result.best_epoch, result.best_state, since_best = key, epoch, _state(judged), 0
        else:
            since_best += 1
        shown = {"loss": f"{record['train_loss']:.3f}"}
        if "val_accuracy" in record:  # a refit or a cross-fitting replay has no validation to show
            shown.update(val=f"{record['val_accuracy']:.3f}", best=str(result.best_epoch))
        bar.set_postfix(shown)
        if on_epoch is not None:
            on_epoch(f"{description}: epoch {epoch}/{last_epoch} " + " ".join(f"{k} {v}" for k, v in shown.items())
                     + f" ({record['seconds']:.1f} s)", progress and not terminal, description, record)
        if config.patience is not None and since_best >= config.patience:
            result.stopped_early = True
        if checkpoint is not None and distributed.is_main():  # the other ranks only read it, to resume
            save(epoch, complete=result.stopped_early or epoch == last_epoch)
        if result.stopped_early:
            break
    bar.close()
    result.last_state = _state(judged)
    result.seconds = time.perf_counter() - start
    return result
