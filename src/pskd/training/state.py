"""The state of one training, as an object: the weights and their moving average, the criterion's own
parameters, the optimizer and its schedule, every random generator, the history and the selection. One epoch
advances it (`train_epoch`, then `select`); `save` and `restore` make a killed training continue exactly where
its last checkpoint left it."""

from __future__ import annotations

import copy
import math
import pickle
import random
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pskd import optim
from pskd.config import TrainConfig
from pskd.data.batches import LABEL, PairedClips
from pskd.errors import DataError
from pskd.fileio import write_atomically
from pskd.models.checkpoint import check_members
from pskd.training import distributed
from pskd.training.inference import evaluate_loss, to_device


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


def snapshot(model: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def save_atomically(blob: dict, path: Path) -> None:
    """torch.save through pskd.fileio.write_atomically: the previous checkpoint survives a kill or a failed write.
    The state folder (made when missing) and the file are never reached through a link."""
    path = Path(path)
    write_atomically(path, lambda handle: torch.save(blob, handle), root=path.parent.parent)


def make_optimizer(parameters, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, weight_decay=config.weight_decay, momentum=0.9, nesterov=True)
    return optim.build_optimizer(parameters, config)  # a torch.optim class by name


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Linear warm-up, then constant or cosine decay to zero over the remaining steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def rng_states(order: torch.Generator, augment) -> dict:
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


def set_rng_states(states: dict, order: torch.Generator, augment) -> None:
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


class Step(nn.Module):
    """The model and its criterion as one module, so that DistributedDataParallel synchronises the gradients of
    both (a distiller has parameters of its own)."""

    def __init__(self, model: nn.Module, criterion):
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(self, batch: dict[str, torch.Tensor]):
        outputs = self.model(batch)
        return outputs, self.criterion(outputs, batch, self.model)


class Training:
    """Everything one training needs to go on: built at its start, advanced epoch by epoch, saved and restored."""

    def __init__(self, model: nn.Module, criterion, config: TrainConfig, device: torch.device, steps_per_epoch: int,
                 seed: int, augment=None, parameters=None):
        model.to(device)
        self.model, self.criterion, self.config, self.device, self.augment = model, criterion, config, device, augment
        self.optimizer = make_optimizer(parameters if parameters is not None else model.parameters(), config)
        total, warmup = steps_per_epoch * config.epochs, steps_per_epoch * config.warmup_epochs
        if config.schedule in optim.BUILT_IN_SCHEDULES:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda step: lr_factor(step, total, warmup, config.schedule))
        else:  # a torch.optim.lr_scheduler class by name, stepped once an epoch, after the same warm-up
            self.scheduler = optim.EpochSchedule(self.optimizer, config, steps_per_epoch, warmup)
        self.order = torch.Generator().manual_seed(seed)
        self.average = WeightAverage(model, config.ema) if config.ema else None
        self.holds_state = isinstance(criterion, nn.Module)  # a distiller's projections and prototypes
        self.result = FitResult()
        self.best_key: tuple[float, float] | None = None
        self.since_best = 0
        self.epoch = 0  # the last epoch done
        self.started = time.perf_counter()

    @property
    def judged(self) -> nn.Module:
        """The weights that are validated, selected and saved: the average when there is one."""
        return self.average.model if self.average else self.model

    def step_module(self) -> nn.Module:
        step = Step(self.model, self.criterion)
        if not distributed.active():
            return step
        # a distiller's heads for teachers outside the current stage get no gradient in that stage
        unused = self.holds_state and any(True for _ in self.criterion.parameters())
        return nn.parallel.DistributedDataParallel(
            step, device_ids=[self.device] if self.device.type == "cuda" else None, find_unused_parameters=unused)

    def save(self, path: Path, complete: bool) -> None:
        average = self.average
        save_atomically({
            "epoch": self.epoch, "complete": complete, "model": snapshot(self.model),
            "average": snapshot(average.model) if average else None, "average_updates": average.updates if average else 0,
            "criterion": self.criterion.state_dict() if self.holds_state else None,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "rng": rng_states(self.order, self.augment), "history": self.result.history,
            "best_epoch": self.result.best_epoch, "best_state": self.result.best_state,
            "best_key": list(self.best_key) if self.best_key else None, "since_best": self.since_best,
            "stopped_early": self.result.stopped_early, "seconds": time.perf_counter() - self.started,
        }, path)

    def restore(self, path: Path) -> bool:
        """Continue from a checkpoint; True when that training had already finished."""
        check_members(path)  # a state file is untrusted input too: its members bounded before unpacking
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            return self._restore(saved)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError, pickle.UnpicklingError,
                EOFError, zipfile.BadZipFile) as err:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
            raise DataError(f"{path}: not a state this training can continue from ({reason}); move the run "
                            "folder away to train again") from None

    def _restore(self, saved: dict) -> bool:
        self.model.load_state_dict(saved["model"])
        if self.average is not None:
            self.average.model.load_state_dict(saved["average"])
            self.average.updates = saved["average_updates"]
        if self.holds_state:
            self.criterion.load_state_dict(saved["criterion"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        set_rng_states(saved["rng"], self.order, self.augment)
        result = self.result
        result.history, result.best_epoch, result.best_state = saved["history"], saved["best_epoch"], saved["best_state"]
        self.best_key = tuple(saved["best_key"]) if saved["best_key"] else None
        self.since_best, result.stopped_early = saved["since_best"], saved["stopped_early"]
        self.started -= saved["seconds"]
        self.restored_seconds = saved["seconds"]
        self.epoch = saved["epoch"]
        return bool(saved["complete"])

    def train_epoch(self, data: PairedClips, step: nn.Module) -> dict:
        """One pass over the training batches; the epoch's record (learning rate, mean terms, accuracy)."""
        self.epoch += 1
        self.model.train()
        if hasattr(self.criterion, "set_epoch"):
            self.criterion.set_epoch(self.epoch)  # progressive schedules change teachers and losses by epoch
        tic = time.perf_counter()
        sums: dict[str, float] = {}
        correct = seen = 0
        for batch in data.batches(self.config.batch_size, shuffle=True, generator=self.order):
            if self.augment is not None:
                batch = self.augment(batch)  # the whole global batch, the same on every rank
            batch = to_device(distributed.shard(batch), self.device)
            outputs, terms = step(batch)
            loss = self._update(terms)
            size = len(batch[LABEL])
            for name, value in [*terms.items(), ("loss", loss)]:
                sums[name] = sums.get(name, 0.0) + value.item() * size
            sums["clips"] = sums.get("clips", 0.0) + size
            known = batch[LABEL] >= 0  # training accuracy over the labelled clips of the batch
            correct += (outputs[1].argmax(1)[known] == batch[LABEL][known]).sum().item()
            seen += int(known.sum())
        if distributed.active():
            names = list(sums)  # the same terms in the same order on every rank
            totals = distributed.all_sum([sums[n] for n in names] + [correct, seen])
            sums, correct, seen = dict(zip(names, totals[:-2])), totals[-2], totals[-1]
        clips = sums.pop("clips")
        record = {"epoch": self.epoch, "lr": self.optimizer.param_groups[0]["lr"]}
        record.update({f"train_{k}": v / clips for k, v in sums.items()})
        record["train_accuracy"] = correct / max(seen, 1)
        record["seconds"] = time.perf_counter() - tic
        return record

    def _update(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = sum(terms.values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.average is not None:
            self.average.update(self.model)
        return loss

    def select(self, record: dict, val: PairedClips | None) -> None:
        """Validate the epoch (into its record), keep it when it is the best so far, and note early stopping."""
        tic = time.perf_counter()
        key = (float(self.epoch), 0.0)  # no validation data, or select: last: the last epoch is the selected one
        if val is not None and len(val):
            record["val_loss"], record["val_accuracy"] = evaluate_loss(self.judged, val, self.device)
            if self.config.select == "val_accuracy":
                key = (record["val_accuracy"], -record["val_loss"])
            elif self.config.select == "val_loss":
                key = (-record["val_loss"], record["val_accuracy"])
        seconds = record.pop("seconds") + time.perf_counter() - tic
        record["seconds"] = seconds  # the epoch's time, its validation included, last in the record
        self.result.history.append(record)
        if self.best_key is None or key > self.best_key:
            self.best_key, self.result.best_epoch, self.since_best = key, self.epoch, 0
            self.result.best_state = snapshot(self.judged)
        else:
            self.since_best += 1
        if self.config.patience is not None and self.since_best >= self.config.patience:
            self.result.stopped_early = True

    def finish(self) -> FitResult:
        self.result.last_state = snapshot(self.judged)
        self.result.seconds = time.perf_counter() - self.started
        return self.result
