"""Loss terms and their registry: the one place a new distillation or self-training loss plugs in.

A term is an `nn.Module` registered under the name configs use (`@register_loss("kd")`). It is built from a
`TermContext` (the student's embedding size, the frozen teachers' outputs, the distill settings and its own
options) and called with the `TermInputs` of one batch; it returns its named scalars, already weighted. Its own
settings live in `distill.terms.<name>` and are checked against its `Options` model; its parameters (projection
heads, prototypes) are trained with the student. A user registers a term from their own module the same way.

Unlabelled clips carry the label -1. A term that needs labels sets `needs_labels = True` and sees only the
labelled clips of the batch; any other term sees every clip, labelled or not.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from pskd.distill.components import Components
from pskd.errors import ConfigError
from pskd.suggest import did_you_mean, validation_hint


class TermOptions(BaseModel):
    """A term's own settings (distill.terms.<name>); unknown keys are errors. Every term takes `teachers`: which of
    the stage's teachers it learns from (default: every one), so that two terms of one stage can learn from
    different teachers."""

    model_config = ConfigDict(extra="forbid")

    teachers: list[str] | None = None


@dataclass
class TeacherOutputs:
    """A frozen teacher's outputs on every clip of the dataset, indexed like the prepared arrays."""

    name: str
    logits: torch.Tensor  # [N, C]
    embeddings: torch.Tensor  # [N, D]
    class_embeddings: torch.Tensor  # [C, D]: the centroid of each class's embeddings over labelled training clips
    # the embedding's principal components over the training clips, and how predictable each is from the watch
    components: Components | None = None

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]


@dataclass
class TermContext:
    """What a term is built from."""

    student_dim: int
    teachers: list[TeacherOutputs]
    settings: object  # pskd.config.DistillConfig
    label_smoothing: float = 0.0
    devices: dict[str, str] = field(default_factory=dict)  # body-worn unit of each vector stream (augmentation)
    options: dict = field(default_factory=dict)  # distill.terms.<name>, unchecked


@dataclass
class TermInputs:
    """One batch as a term sees it: the student's outputs, labels (-1: unlabelled), and the outputs of the
    stage's teachers on the same clips (looked up by clip index)."""

    embedding: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor
    teachers: list[str]
    teacher_logits: list[torch.Tensor]
    teacher_embeddings: list[torch.Tensor]
    batch: dict[str, torch.Tensor]
    model: nn.Module | None = None  # the student, for terms that look at another view of the batch

    def only(self, names: list[str]) -> "TermInputs":
        """These inputs with the teachers `names` only (in the stage's order)."""
        keep = [i for i, name in enumerate(self.teachers) if name in names]
        return replace(self, teachers=[self.teachers[i] for i in keep],
                       teacher_logits=[self.teacher_logits[i] for i in keep],
                       teacher_embeddings=[self.teacher_embeddings[i] for i in keep])

    def subset(self, rows: torch.Tensor) -> "TermInputs":
        return replace(
            self, embedding=self.embedding[rows], logits=self.logits[rows], labels=self.labels[rows],
            teacher_logits=[z[rows] for z in self.teacher_logits],
            teacher_embeddings=[f[rows] for f in self.teacher_embeddings],
            batch={k: v[rows] for k, v in self.batch.items()},
        )


class LossTerm(nn.Module):
    """Base class of a registered term. Subclasses set `Options` (a TermOptions model) when they have settings."""

    name = ""
    Options: type[TermOptions] = TermOptions
    needs_labels = False  # True: only the labelled clips of a batch reach forward()
    needs_teachers = True  # False: a term of the student alone (self-training), usable in a stage without teachers
    logs: tuple[str, ...] = ()  # the names it returns; needed when needs_labels (logged as 0 without any label)

    def __init__(self, context: TermContext):
        super().__init__()
        self.settings = context.settings
        self.options = self.Options.model_validate(context.options) if context.options is not None else self.Options()

    def set_epoch(self, epoch: int) -> None:
        """Called at the start of every epoch (1-based), for a term whose weight follows a schedule."""

    def forward(self, inputs: TermInputs) -> dict[str, torch.Tensor]:
        raise NotImplementedError


LOSSES: dict[str, type[LossTerm]] = {}


def register_loss(name: str):
    """Class decorator: make a LossTerm subclass available to configs as `name`."""

    def decorate(cls: type[LossTerm]) -> type[LossTerm]:
        if not (isinstance(cls, type) and issubclass(cls, LossTerm)):
            raise TypeError(f"@register_loss('{name}') decorates a LossTerm subclass, not {cls!r}")
        if name in LOSSES and LOSSES[name] is not cls:
            raise ValueError(f"a loss named '{name}' is already registered ({LOSSES[name].__module__})")
        cls.name = name
        LOSSES[name] = cls
        return cls

    return decorate


def loss_names() -> list[str]:
    return sorted(LOSSES)


def check_loss(name: str, where: str) -> type[LossTerm]:
    if name not in loss_names():
        raise ConfigError(f"{where}: unknown loss '{name}'{did_you_mean(name, loss_names())}; known: "
                          f"{', '.join(loss_names())}")
    return LOSSES[name]


def check_options(name: str, options: dict, where: str) -> None:
    """A term's options against its Options model, with the offending key named."""
    model = check_loss(name, where).Options
    try:
        model.model_validate(options)
    except ValidationError as err:
        item = err.errors()[0]
        key = ".".join(str(p) for p in item["loc"])
        hint = validation_hint(model, item)
        problem = ("unknown key" if item["type"] == "extra_forbidden" else item["msg"]) + hint
        raise ConfigError(f"{where}.{key}: {problem}") from None


def build_term(name: str, context: TermContext) -> LossTerm:
    return check_loss(name, "distill")(context)
