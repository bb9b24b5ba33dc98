"""Build a model by the name a config uses, wrapped so that it reads named streams from a paired batch."""

from __future__ import annotations

import inspect

import numpy as np
import torch
from torch import nn

from pskd.errors import ConfigError
from pskd.models.inertial import CompactCNN, GafResNet18

INERTIAL_MODELS: dict[str, type[nn.Module]] = {"compact_cnn": CompactCNN, "gaf_resnet18": GafResNet18}


class StreamModel(nn.Module):
    """Reads the streams it declares from a batch ({name: [B, T, channels]} in physical units), standardises
    them with statistics fitted on training clips (kept as buffers, so a saved or exported model needs no other
    file), concatenates them as channels and runs the network: forward(batch) -> (embedding, logits)."""

    def __init__(self, net: nn.Module, streams: list[str], mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.net = net
        self.streams = list(streams)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1))

    def channels_first(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = torch.cat([batch[name].flatten(2) for name in self.streams], dim=-1)
        return ((x.transpose(1, 2) - self.mean) / self.std).contiguous()

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(self.channels_first(batch))

    @property
    def embedding_dim(self) -> int:
        return self.net.embedding_dim


def check_options(cls: type, options: dict, where: str) -> dict:
    signature = inspect.signature(cls.__init__)
    allowed = [p for p in signature.parameters if p not in ("self", "c_in", "num_classes", "seq_len")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {unknown} for {cls.__name__}; allowed: {allowed}")
    out = {}
    for key, value in options.items():
        default = signature.parameters[key].default
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        if isinstance(default, bool) != isinstance(value, bool) or (
            isinstance(default, (int, float)) and not isinstance(value, (int, float))
        ) or (isinstance(default, tuple) and not isinstance(value, tuple)):
            raise ConfigError(f"{where}.{key}: expected {type(default).__name__}, got {value!r}")
        out[key] = value
    return out


def build_inertial(
    name: str, streams: list[str], options: dict, num_classes: int, seq_len: int, mean: np.ndarray, std: np.ndarray,
    where: str = "student",
) -> StreamModel:
    if name not in INERTIAL_MODELS:
        raise ConfigError(f"{where}.name: unknown model '{name}'; known: {', '.join(sorted(INERTIAL_MODELS))}")
    cls = INERTIAL_MODELS[name]
    kwargs = check_options(cls, options, f"{where}.options")
    net = cls(len(mean), num_classes, seq_len, **kwargs)
    return StreamModel(net, streams, mean, std)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
