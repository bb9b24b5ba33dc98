"""Hinton et al. (2015): match the teacher's softened class distribution."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pskd.distill.terms import LossTerm, TermInputs, register_loss


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
