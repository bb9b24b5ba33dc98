"""Build a model by the name a config uses, wrapped so that it reads its named streams from a paired batch."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pskd.data.clip import SKELETON
from pskd.data.layouts import Layout
from pskd.errors import ConfigError
from pskd.suggest import did_you_mean

KINDS = ("inertial", "skeleton", "paired")
MAX_PARAMETERS = 50_000_000  # 200 MB of float32 weights, 800 MB with the optimizer's state: the 1 GB bound


@dataclass(frozen=True)
class Entry:
    kind: str
    make: Callable  # the network class (inertial, skeleton), or a builder (paired)


# name -> entry; this module imports none of its models: pskd.models imports the built-in ones, which register
# themselves here as a user's plugin does
MODELS: dict[str, Entry] = {}


def register_model(name: str, kind: str = "inertial"):
    """Decorator: a network configs can name. kind "inertial": a class constructed as cls(c_in, num_classes, seq_len,
    **options) and called on [batch, channels, time]; kind "skeleton": cls(layout, num_classes, seq_len, **options)
    on [batch, time, joints, 3]. Either returns (embedding, logits) and has an `embedding_dim` attribute. kind
    "paired": a function (streams, options, spec, where) -> network called on (skeleton, inertial), for a model
    that reads the skeleton and inertial streams together (the fusion teacher). Decorating again a class of the
    same module and name (a notebook cell run twice) replaces it."""
    if kind not in KINDS:
        raise ValueError(f"register_model kind must be one of {KINDS}, not '{kind}'")

    def decorate(make: Callable) -> Callable:
        known = MODELS.get(name)
        if known is not None and known.make is not make and not _same_definition(known.make, make):
            raise ValueError(f"a model named '{name}' is already registered ({known.make.__module__})")
        MODELS[name] = Entry(kind, make)
        return make

    return decorate


def _same_definition(old: Callable, new: Callable) -> bool:
    """Whether `new` is `old` defined again (a notebook cell run twice): same module and qualified name."""
    return (getattr(old, "__module__", None), getattr(old, "__qualname__", None)) == \
        (getattr(new, "__module__", None), getattr(new, "__qualname__", None))


def model_names() -> list[str]:
    return sorted(MODELS)


@dataclass
class InputSpec:
    """What a model needs to know about its inputs, fitted on training clips only."""

    num_classes: int
    lengths: dict[str, int]  # samples per clip of each stream
    channels: dict[str, int]  # channels of each inertial stream
    layout: Layout | None = None
    mean: dict[str, np.ndarray] = field(default_factory=dict)  # per inertial stream, per channel
    std: dict[str, np.ndarray] = field(default_factory=dict)


class StreamModel(nn.Module):
    """Reads the streams it declares from a batch ({name: [B, T, ...]} in physical units) and runs its network:
    the skeleton goes in as [B, T, J, 3]; inertial streams are standardised with statistics fitted on training
    clips (kept as buffers, so a saved or exported model needs no other file) and concatenated as channels
    [B, C, T]. forward(batch) -> (embedding, logits)."""

    def __init__(self, net: nn.Module, streams: list[str], mean: np.ndarray | None = None,
                 std: np.ndarray | None = None):
        super().__init__()
        self.net = net
        self.streams = list(streams)
        self.reads_skeleton = SKELETON in self.streams
        self.inertial_streams = [s for s in self.streams if s != SKELETON]
        channels = 0 if mean is None else len(mean)
        self.register_buffer("mean", torch.as_tensor(np.zeros(channels) if mean is None else mean,
                                                     dtype=torch.float32).view(1, -1, 1))
        self.register_buffer("std", torch.as_tensor(np.ones(channels) if std is None else std,
                                                    dtype=torch.float32).view(1, -1, 1))

    def channels_first(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = torch.cat([batch[name].flatten(2) for name in self.inertial_streams], dim=-1)
        return ((x.transpose(1, 2) - self.mean) / self.std).contiguous()

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = []
        if self.reads_skeleton:
            inputs.append(batch[SKELETON])
        if self.inertial_streams:
            inputs.append(self.channels_first(batch))
        return self.net(*inputs)

    @property
    def embedding_dim(self) -> int:
        return self.net.embedding_dim


def _example_of(annotation, value):
    """A value of the numeric type an optional option is annotated with (None when it names none: anything goes)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    for name, example in (("bool", False), ("float", 0.0), ("int", 0)):
        if name in text.replace("|", " ").split():
            return example
    return value


def check_options(cls: type, options: dict, where: str,
                  fixed: tuple[str, ...] = ("c_in", "num_classes", "seq_len")) -> dict:
    """Check a config's options against a model constructor: known names, and values of the default's type."""
    signature = inspect.signature(cls.__init__)
    allowed = [p for p in signature.parameters if p != "self" and p not in fixed]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {unknown} for {cls.__name__}{did_you_mean(unknown[0], allowed)}; "
                          f"allowed: {allowed}")
    out = {}
    for key, value in options.items():
        default = signature.parameters[key].default
        if default is None and value is not None:  # "float | None = None": typed by the annotation instead
            default = _example_of(signature.parameters[key].annotation, value)
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        if isinstance(default, bool) != isinstance(value, bool) or (
            isinstance(default, (int, float)) and not isinstance(value, (int, float))
        ) or (isinstance(default, tuple) and not isinstance(value, tuple)):
            raise ConfigError(f"{where}.{key}: expected {type(default).__name__}, got {value!r}")
        out[key] = value
    return out


def _of_kind(kind: str) -> list[str]:
    return sorted(name for name, entry in MODELS.items() if entry.kind == kind)


def inertial_net(name: str, options: dict, spec: InputSpec, streams: list[str], where: str) -> nn.Module:
    """The network of an inertial model, reading the channels of `streams` concatenated."""
    if name not in _of_kind("inertial"):
        raise ConfigError(f"{where}: '{name}' is not an inertial model{did_you_mean(name, _of_kind('inertial'))}; "
                          f"known: {', '.join(_of_kind('inertial'))}")
    cls = MODELS[name].make
    c_in = sum(spec.channels[s] for s in streams)
    try:
        return cls(c_in, spec.num_classes, spec.lengths[streams[0]], **check_options(cls, options, f"{where}.options"))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where}.options: {err}") from None


def skeleton_net(name: str, options: dict, spec: InputSpec, where: str) -> nn.Module:
    """The network of a skeleton model, on the spec's layout."""
    if spec.layout is None:
        raise ConfigError(f"{where}: this dataset has no skeleton layout")
    if name not in _of_kind("skeleton"):
        raise ConfigError(f"{where}: '{name}' is not a skeleton model; known: {', '.join(_of_kind('skeleton'))}")
    cls = MODELS[name].make
    kwargs = check_options(cls, options, f"{where}.options", fixed=("layout", "num_classes", "seq_len"))
    try:
        return cls(spec.layout, spec.num_classes, spec.lengths[SKELETON], **kwargs)
    except ValueError as err:
        raise ConfigError(f"{where}.options: {err}") from None


def _stats(spec: InputSpec, streams: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return (np.concatenate([spec.mean[s] for s in streams]), np.concatenate([spec.std[s] for s in streams]))


def build_model(name: str, streams: list[str], options: dict, spec: InputSpec, where: str = "student") -> StreamModel:
    """A model by config name, reading `streams` from paired batches; it records its name and classes
    (model_name, num_classes) for whoever is handed it."""
    try:
        with torch.device("meta"):  # counted first, without memory: options cannot ask for a model of any size
            parameters = sum(p.numel() for p in _build(name, streams, options, spec, where).parameters())
    except ConfigError:
        raise
    except Exception:  # a plugin model that computes on its tensors while it is built: counted as it is built
        parameters = 0
    if parameters > MAX_PARAMETERS:
        raise ConfigError(f"{where}.options: a {name} of {parameters:,} parameters, more than the {MAX_PARAMETERS:,} "
                          "pskd builds (a watch model has 0.1-2 M)")
    model = _build(name, streams, options, spec, where)
    model.model_name, model.num_classes = name, spec.num_classes
    return model


def _build(name: str, streams: list[str], options: dict, spec: InputSpec, where: str) -> StreamModel:
    missing = [s for s in streams if s not in spec.lengths]
    if missing or not streams:
        raise ConfigError(f"{where}.streams: {missing or streams} not in this dataset (it has {sorted(spec.lengths)})")
    if name not in MODELS:
        raise ConfigError(f"{where}.name: unknown model '{name}'{did_you_mean(name, MODELS)}; known: "
                          f"{', '.join(model_names())}")
    kind, inertial = MODELS[name].kind, [s for s in streams if s != SKELETON]
    if kind == "inertial":
        if SKELETON in streams:
            raise ConfigError(f"{where}: {name} reads inertial streams only, not the skeleton")
        return StreamModel(inertial_net(name, options, spec, inertial, where), streams, *_stats(spec, inertial))
    if kind == "skeleton":
        if streams != [SKELETON]:
            raise ConfigError(f"{where}: {name} reads the skeleton stream only (streams: [skeleton])")
        return StreamModel(skeleton_net(name, options, spec, where), streams)
    if SKELETON not in streams or not inertial:
        raise ConfigError(f"{where}: {name} needs the skeleton and at least one inertial stream")
    net = MODELS[name].make(streams, dict(options), spec, where)
    return StreamModel(net, [SKELETON, *inertial], *_stats(spec, inertial))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
