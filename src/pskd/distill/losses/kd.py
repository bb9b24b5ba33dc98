"""Hinton et al. (2015): match the teacher's softened class distribution."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pskd.config import RunConfig
from pskd.distill.distiller import Stage
from pskd.distill.methods import register_method, single_teacher
from pskd.distill.terms import LossTerm, TermInputs, register_loss
from pskd.errors import ConfigError


def soft_target_kl(student_logits: torch.Tensor, target: torch.Tensor, temperature: float,
                   weights: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 * KL(target || softmax(student / T)), averaged over the batch (optionally weighted per sample).

    target holds probability vectors [B, C]; a one-hot row is allowed (0 log 0 counts as 0).
    """
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    per_sample = (torch.special.xlogy(target, target) - target * log_student).sum(dim=1)
    if weights is not None:
        per_sample = per_sample * weights
    return per_sample.mean() * temperature**2


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton KD: T^2 * KL(softmax(teacher / T) || softmax(student / T))."""
    return soft_target_kl(student_logits, F.softmax(teacher_logits / temperature, dim=1), temperature)


@register_loss("kd")
class KD(LossTerm):
    """Hinton KD from the stage's first teacher, on every clip (it needs no label): alpha * kd_loss."""

    def forward(self, inputs: TermInputs) -> dict[str, torch.Tensor]:
        s = self.settings
        return {"kd": s.alpha * kd_loss(inputs.logits, inputs.teacher_logits[0], s.temperature)}


@register_loss("avg_kd")
class AverageKD(LossTerm):
    """The average of the stage's teachers' soft labels at temperature T, on every clip."""

    def forward(self, inputs: TermInputs) -> dict[str, torch.Tensor]:
        s = self.settings
        target = torch.stack([F.softmax(z / s.temperature, dim=1) for z in inputs.teacher_logits]).mean(dim=0)
        return {"avg_kd": s.alpha * soft_target_kl(inputs.logits, target, s.temperature)}


@register_method("kd")
def kd(config: RunConfig) -> list[Stage]:
    """Hinton KD from one teacher."""
    return [Stage(1, [single_teacher(config)], "kd")]


@register_method("avg_kd", min_teachers=2)
def avg_kd(config: RunConfig) -> list[Stage]:
    """KD from the average of all teachers' soft labels."""
    return [Stage(1, list(config.teachers), "avg_kd")]


@register_method("takd", min_teachers=2)
def takd(config: RunConfig) -> list[Stage]:
    """KD from the teacher assistant: a teacher that was itself distilled from a stronger one."""
    assistant = config.distill.assistant or next(
        (n for n, t in config.teachers.items() if t.distill_from is not None), None)
    if assistant is None:
        raise ConfigError("takd needs a teacher assistant: set distill_from on one teacher or distill.assistant")
    return [Stage(1, [assistant], "kd")]
