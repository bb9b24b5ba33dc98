"""Optimizers and learning-rate schedules named by a config: pskd's own (`adamw`, `adam`, `sgd`; `cosine`,
`constant`) or any class of `torch.optim` and `torch.optim.lr_scheduler` with keyword options, e.g.
`optimizer: {name: RAdam, options: {betas: [0.9, 0.99]}}`, `schedule: {name: StepLR, options: {step_size: 30}}`.

A name and its options are checked when the config is (pskd.config): the name against the classes torch offers,
the options against the constructor's signature, then the class built once on a dummy parameter so that a bad
value is refused before any data is read. `lr` is always train.lr, and `weight_decay` train.weight_decay (passed
when the optimizer takes one). A torch scheduler is stepped once an epoch (its counts are epochs), and
train.warmup_epochs multiplies its rate by the same linear warm-up, step by step, as pskd's own schedules.
torch is imported only when a torch name is used.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from pskd.suggest import did_you_mean

BUILT_IN_OPTIMIZERS = ("adamw", "adam", "sgd")  # sgd: momentum 0.9, Nesterov
BUILT_IN_SCHEDULES = ("cosine", "constant")  # after the linear warm-up; cosine decays to zero at the last step

# classes of torch.optim that a config cannot use, and why
NOT_OPTIMIZERS = {"Optimizer": "the base class", "LBFGS": "its step needs a closure",
                  "SparseAdam": "it takes sparse gradients only"}
NOT_SCHEDULERS = {"LRScheduler": "the base class", "LambdaLR": "it takes a function",
                  "MultiplicativeLR": "it takes a function", "SequentialLR": "it takes other schedulers",
                  "ChainedScheduler": "it takes other schedulers",
                  "ReduceLROnPlateau": "it steps on a metric, not by epoch"}
# what pskd passes itself, and the config key that sets it
SET_BY = {"params": "the model", "optimizer": "the optimizer", "lr": "train.lr", "weight_decay": "train.weight_decay",
          "last_epoch": "pskd (a resumed training continues its schedule)"}


def _classes(kind: str) -> dict[str, type]:
    import torch

    module, base = ((torch.optim, torch.optim.Optimizer) if kind == "optimizer"
                    else (torch.optim.lr_scheduler, torch.optim.lr_scheduler.LRScheduler))
    return {name: cls for name, cls in vars(module).items()
            if inspect.isclass(cls) and issubclass(cls, base) and not name.startswith("_")}


def names(kind: str) -> list[str]:
    """What a config may name as its optimizer (kind 'optimizer') or schedule ('schedule')."""
    built_in, refused = ((BUILT_IN_OPTIMIZERS, NOT_OPTIMIZERS) if kind == "optimizer"
                         else (BUILT_IN_SCHEDULES, NOT_SCHEDULERS))
    return [*built_in, *sorted(name for name in _classes(kind) if name not in refused)]


def split(spec) -> tuple[str, dict]:
    """(name, options) of a config's optimizer or schedule: a name, or a section with name and options."""
    return (spec, {}) if isinstance(spec, str) else (spec.name, dict(spec.options))


def torch_class(kind: str, name: str) -> type:
    """The torch class a name stands for; ValueError (with 'did you mean') for a name torch does not offer."""
    refused = NOT_OPTIMIZERS if kind == "optimizer" else NOT_SCHEDULERS
    if name in refused:
        raise ValueError(f"{name} cannot be used ({refused[name]})")
    classes = _classes(kind)
    if name not in classes:
        home = "torch.optim" if kind == "optimizer" else "torch.optim.lr_scheduler"
        raise ValueError(f"unknown {kind} '{name}'{did_you_mean(name, names(kind))}; pskd's own: "
                         f"{', '.join(BUILT_IN_OPTIMIZERS if kind == 'optimizer' else BUILT_IN_SCHEDULES)}, "
                         f"or a class of {home}")
    return classes[name]


def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    return {name: p for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _finite(value: Any, where: str) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{where}: {item} is not a finite number")
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif not isinstance(item, (str, int, float, bool, type(None))):
            raise ValueError(f"{where}: {item!r} is not a number, string, list or mapping")


def keyword_arguments(kind: str, name: str, options: dict) -> tuple[type, dict]:
    """The torch class and the keyword arguments a config's options give it (lists become tuples where the
    constructor's default is a tuple); ValueError naming the option when the signature does not take it."""
    cls = torch_class(kind, name)
    parameters = _parameters(cls)
    taken = [key for key in parameters if key not in SET_BY]
    kwargs = {}
    for key, value in options.items():
        if key in SET_BY:
            raise ValueError(f"options.{key}: set by {SET_BY[key]}, not here")
        if key not in parameters:
            raise ValueError(f"options.{key}: not an option of {name}{did_you_mean(key, taken)}; "
                             f"it takes: {', '.join(taken) or 'none'}")
        _finite(value, f"options.{key}")
        default = parameters[key].default
        kwargs[key] = tuple(value) if isinstance(default, tuple) and isinstance(value, list) else value
    missing = [key for key in taken if parameters[key].default is inspect.Parameter.empty and key not in kwargs]
    if missing:
        raise ValueError(f"{name} needs options.{missing[0]}")
    return cls, kwargs


def takes_weight_decay(spec) -> bool:
    name, _ = split(spec)
    return name in BUILT_IN_OPTIMIZERS or "weight_decay" in _parameters(torch_class("optimizer", name))


MAX_CHECKED_STEPS = 10_000  # epochs a schedule is stepped through when the config is checked


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _dummy_optimizer():
    import torch

    return torch.optim.SGD([torch.zeros(2, 2, requires_grad=True)], lr=1e-3)


def check(kind: str, spec, epochs: int = 1) -> None:
    """A config's optimizer or schedule, checked as fully as can be without the model: built on a dummy parameter
    and stepped (an optimizer once with a gradient, a schedule once per epoch of `epochs`, at most
    MAX_CHECKED_STEPS); ValueError with the first line of what torch said otherwise."""
    name, options = split(spec)
    built_in = BUILT_IN_OPTIMIZERS if kind == "optimizer" else BUILT_IN_SCHEDULES
    if name in built_in:
        if options:
            raise ValueError(f"{name} takes no options (name a torch class to give some, e.g. "
                             f"{'SGD' if kind == 'optimizer' else 'CosineAnnealingLR'})")
        return
    cls, kwargs = keyword_arguments(kind, name, options)
    import torch

    try:
        if kind == "optimizer":
            weight = torch.zeros(2, 2, requires_grad=True)
            optimizer = cls([weight], lr=1e-3, **kwargs)
            weight.grad = torch.ones_like(weight)
            optimizer.step()
        else:
            optimizer = _dummy_optimizer()
            schedule = cls(optimizer, **kwargs)
            for _ in range(min(int(epochs), MAX_CHECKED_STEPS)):
                optimizer.step()
                schedule.step()
            _finite(float(optimizer.param_groups[0]["lr"]), "the learning rate it gives")
    except Exception as err:  # whatever torch raises for options it cannot take, named in one line
        raise ValueError(f"{name}: {_first_line(err)}") from None


def build_optimizer(parameters, config):
    """The optimizer of a TrainConfig whose optimizer is a torch class (pskd's own are built in pskd.training)."""
    from pskd.errors import ConfigError

    name, options = split(config.optimizer)
    cls, kwargs = keyword_arguments("optimizer", name, options)
    if "weight_decay" in _parameters(cls):
        kwargs["weight_decay"] = config.weight_decay
    try:
        return cls(parameters, lr=config.lr, **kwargs)
    except (TypeError, ValueError, RuntimeError) as err:  # e.g. an optimizer for 2-D weights only (Muon)
        raise ConfigError(f"train.optimizer: {name}: {_first_line(err)}") from None


class EpochSchedule:
    """A torch scheduler stepped once every `steps_per_epoch` steps, its rate multiplied by the linear warm-up
    over the first `warmup_steps` steps (the factor pskd's own schedules use). Saved and restored with the
    training's checkpoint like a torch scheduler."""

    def __init__(self, optimizer, config, steps_per_epoch: int, warmup_steps: int):
        name, options = split(config.schedule)
        cls, kwargs = keyword_arguments("schedule", name, options)
        self.optimizer = optimizer
        self.inner = cls(optimizer, **kwargs)
        self.steps_per_epoch, self.warmup_steps, self.steps = max(1, steps_per_epoch), warmup_steps, 0
        self.rates = [group["lr"] for group in optimizer.param_groups]  # the torch scheduler's, before warm-up
        self._apply()

    def _apply(self) -> None:
        factor = (self.steps + 1) / self.warmup_steps if self.steps < self.warmup_steps else 1.0
        for group, rate in zip(self.optimizer.param_groups, self.rates):
            group["lr"] = rate * factor

    def step(self) -> None:
        self.steps += 1
        if self.steps % self.steps_per_epoch == 0:  # an epoch ended: the torch scheduler sees its own rates
            for group, rate in zip(self.optimizer.param_groups, self.rates):
                group["lr"] = rate
            self.inner.step()
            self.rates = [group["lr"] for group in self.optimizer.param_groups]
        self._apply()

    def state_dict(self) -> dict:
        return {"inner": self.inner.state_dict(), "rates": list(self.rates), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state["inner"])
        self.rates, self.steps = list(state["rates"]), int(state["steps"])
        self._apply()
