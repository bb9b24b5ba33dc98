"""pskd: distilling skeleton-trained teachers into an accelerometer-only action recogniser.

The Python API (imported on first use, so `import pskd` stays light):

    config = pskd.load_config("configs/utd_mhad/label_scarce.yaml", ["seed=1"])   # or a dict
    run_dir, metrics = pskd.train(config, "runs/mine")
    card, classify = pskd.load_classifier("runs/mine")        # run directory, .pt checkpoint or .onnx file
    probabilities = classify(clips)                           # [N, card.seq_len, card.channels] float32

    data = pskd.load_dataset(config)                          # arrays, labels, subjects and the protocol's split
    student = pskd.StudentClassifier(method="pskd").fit(data.X("train"), data.y("train"),
                                                        teachers=pskd.load_teachers("runs/mine"))
    figures = pskd.metrics(student, data.X("test"), data.y("test"))
    net = pskd.build_model("compact_cnn", "accelerometer", dataset=data)   # a plain nn.Module

Extensions register themselves: `@pskd.register_loss("name")` on a `pskd.LossTerm` subclass (its settings a
`pskd.TermOptions` model), `@pskd.register_method("name")` on a function config -> stages, and
`@pskd.register_model("name")` on a network class, `@pskd.register_dataset("name", protocols=...)` on a loader
(its settings a `pskd.DatasetOptions` model). See docs/extending.md, "Extending pskd", and docs/api.md.
"""

from __future__ import annotations

import sys
import types

from pskd.version import __version__

_LAZY = {
    "register_loss": ("pskd.distill.terms", "register_loss"),
    "LossTerm": ("pskd.distill.terms", "LossTerm"),
    "TermOptions": ("pskd.distill.terms", "TermOptions"),
    "register_method": ("pskd.distill.methods", "register_method"),
    "Stage": ("pskd.distill.distiller", "Stage"),
    "register_model": ("pskd.models.zoo", "register_model"),
    "register_dataset": ("pskd.data.registry", "register_dataset"),
    "DatasetOptions": ("pskd.data.registry", "DatasetOptions"),
    "Clip": ("pskd.data.clip", "Clip"),
    "DatasetInfo": ("pskd.data.clip", "DatasetInfo"),
    "RunConfig": ("pskd.config", "RunConfig"),
    "load_dataset": ("pskd.api", "load_dataset"),
    "Dataset": ("pskd.api", "Dataset"),
    "build_model": ("pskd.api", "build_model"),
    "load_teachers": ("pskd.api", "load_teachers"),
    "metrics": ("pskd.api", "metrics"),
    "StudentClassifier": ("pskd.estimator", "StudentClassifier"),
}

__all__ = ["__version__", "load_config", "train", "load_classifier", *_LAZY]


def load_config(source, overrides: list[str] | tuple[str, ...] = ()):
    """A checked RunConfig from a YAML file's path or a dict, with dotted `key=value` overrides."""
    from pskd.config import build_config
    from pskd.config import load_config as from_file

    if isinstance(source, dict):
        return build_config(source, overrides, source="config dict")
    return from_file(source, overrides)


def train(config, out=None, log=None):
    """Train and evaluate what `config` describes (a RunConfig, a dict or a YAML path); returns (run directory,
    metrics). Teachers are trained first when the method uses them."""
    from pskd.console import log_stderr
    from pskd.pipeline import run

    if not hasattr(config, "model_dump"):
        config = load_config(config)
    return run(config, out, log=log or log_stderr)


def load_classifier(path, threads: int = 1):
    """(card, classify) for a run directory, a .pt checkpoint or an exported .onnx or .tflite model: card describes the input
    (streams, channels, seq_len, rate, unit, class names); classify(clips) returns class probabilities."""
    from pathlib import Path

    from pskd.deploy.predict import open_classifier

    return open_classifier(Path(path), threads)


class _Package(types.ModuleType):
    """pskd itself: importing the deprecated package pskd.train (old import paths) must not replace the function
    pskd.train, which Python's import system would otherwise do by setting the attribute to the submodule."""

    def __setattr__(self, name: str, value) -> None:
        if name == "train" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'pskd' has no attribute '{name}'")
