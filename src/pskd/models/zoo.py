"""Build a model by the name a config uses, wrapped so that it reads its named streams from a paired batch."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pskd.data.clip import SKELETON
from pskd.data.layouts import Layout
from pskd.errors import ConfigError
from pskd.models.fusion import FUSIONS, FusionNet
from pskd.models.inertial import CompactCNN, GafResNet18
from pskd.models.skeleton import SkeletonGCN, SkeletonMotion
from pskd.suggest import did_you_mean

INERTIAL_MODELS: dict[str, type[nn.Module]] = {"compact_cnn": CompactCNN, "gaf_resnet18": GafResNet18}
SKELETON_MODELS: dict[str, type[nn.Module]] = {"skeleton_gcn": SkeletonGCN, "skeleton_motion": SkeletonMotion}


def register_model(name: str, kind: str = "inertial"):
    """Class decorator: a network configs can name. kind "inertial": constructed as cls(c_in, num_classes, seq_len,
    **options) and called on [batch, channels, time]; kind "skeleton": cls(layout, num_classes, seq_len, **options)
    on [batch, time, joints, 3]. Either returns (embedding, logits) and has an `embedding_dim` attribute."""
    table = {"inertial": INERTIAL_MODELS, "skeleton": SKELETON_MODELS}.get(kind)
    if table is None:
        raise ValueError(f"register_model kind must be 'inertial' or 'skeleton', not '{kind}'")

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        if name == "fusion" or any(name in t and t[name] is not cls for t in (INERTIAL_MODELS, SKELETON_MODELS)):
            raise ValueError(f"a model named '{name}' is already registered")
        table[name] = cls
        return cls

    return decorate


def model_names() -> list[str]:
    return sorted([*INERTIAL_MODELS, *SKELETON_MODELS, "fusion"])


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


def _inertial_net(name: str, options: dict, spec: InputSpec, streams: list[str], where: str) -> nn.Module:
    if name not in INERTIAL_MODELS:
        raise ConfigError(f"{where}: '{name}' is not an inertial model; known: {', '.join(sorted(INERTIAL_MODELS))}")
    cls = INERTIAL_MODELS[name]
    c_in = sum(spec.channels[s] for s in streams)
    try:
        return cls(c_in, spec.num_classes, spec.lengths[streams[0]], **check_options(cls, options, f"{where}.options"))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where}.options: {err}") from None


def _skeleton_net(name: str, options: dict, spec: InputSpec, where: str) -> nn.Module:
    if spec.layout is None:
        raise ConfigError(f"{where}: this dataset has no skeleton layout")
    cls = SKELETON_MODELS[name]
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
    model = _build(name, streams, options, spec, where)
    model.model_name, model.num_classes = name, spec.num_classes
    return model


def _build(name: str, streams: list[str], options: dict, spec: InputSpec, where: str) -> StreamModel:
    missing = [s for s in streams if s not in spec.lengths]
    if missing or not streams:
        raise ConfigError(f"{where}.streams: {missing or streams} not in this dataset (it has {sorted(spec.lengths)})")
    inertial = [s for s in streams if s != SKELETON]
    if name in INERTIAL_MODELS:
        if SKELETON in streams:
            raise ConfigError(f"{where}: {name} reads inertial streams only, not the skeleton")
        return StreamModel(_inertial_net(name, options, spec, inertial, where), streams, *_stats(spec, inertial))
    if name in SKELETON_MODELS:
        if streams != [SKELETON]:
            raise ConfigError(f"{where}: {name} reads the skeleton stream only (streams: [skeleton])")
        return StreamModel(_skeleton_net(name, options, spec, where), streams)
    if name == "fusion":
        if SKELETON not in streams or not inertial:
            raise ConfigError(f"{where}: fusion needs the skeleton and at least one inertial stream")
        options = dict(options)
        unknown = sorted(set(options) - {"fusion", "embedding_dim", "dropout", "skeleton", "inertial", "inertial_model",
                                         "skeleton_dropout"})
        if unknown:
            raise ConfigError(f"{where}.options: unknown option(s) {unknown} for fusion")
        mode = options.get("fusion", "concat")
        if mode not in FUSIONS:
            raise ConfigError(f"{where}.options.fusion: one of {list(FUSIONS)}, not '{mode}'")
        skeleton_net = _skeleton_net("skeleton_gcn", options.get("skeleton", {}), spec, f"{where}.options.skeleton")
        inertial_net = _inertial_net(options.get("inertial_model", "compact_cnn"), options.get("inertial", {}), spec,
                                     inertial, f"{where}.options.inertial")
        try:
            net = FusionNet(skeleton_net, inertial_net, spec.num_classes, mode, int(options.get("embedding_dim", 128)),
                            float(options.get("dropout", 0.3)), float(options.get("skeleton_dropout", 0.0)))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}.options: {err}") from None
        return StreamModel(net, [SKELETON, *inertial], *_stats(spec, inertial))
    raise ConfigError(f"{where}.name: unknown model '{name}'{did_you_mean(name, model_names())}; known: "
                      f"{', '.join(model_names())}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
