"""Confidence-aware multi-teacher KD (CA-MKD, Zhang, Chen & Wang, ICASSP 2022): each teacher's soft labels are
weighted per sample by how well that teacher predicts the true label, w_k = (1 - softmax_k(CE_k)) / (K - 1),
with CE_k the teacher's cross-entropy on the sample; a teacher that is wrong on a sample counts less there."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pskd.config import RunConfig
from pskd.distill.distiller import Stage
from pskd.distill.losses.kd import soft_target_kl
from pskd.distill.methods import register_method
from pskd.distill.terms import LossTerm, TermInputs, register_loss


def confidence_weights(teacher_logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """[B, K] weights summing to 1 over teachers (a single teacher gets weight 1)."""
    if len(teacher_logits) == 1:
        return torch.ones(len(labels), 1, device=labels.device)
    losses = torch.stack([F.cross_entropy(z, labels, reduction="none") for z in teacher_logits], dim=1)
    return (1 - F.softmax(losses, dim=1)) / (len(teacher_logits) - 1)


def camkd_loss(student_logits: torch.Tensor, teacher_logits: list[torch.Tensor], labels: torch.Tensor,
               temperature: float = 4.0) -> torch.Tensor:
    weights = confidence_weights(teacher_logits, labels).detach()
    total = student_logits.new_zeros(())
    for k, logits in enumerate(teacher_logits):
        target = F.softmax(logits / temperature, dim=1)
        total = total + soft_target_kl(student_logits, target, temperature, weights[:, k])
    return total


@register_loss("camkd")
class CAMKD(LossTerm):
    """Confidence-aware multi-teacher KD over the stage's teachers; the weights need the label."""

    needs_labels = True
    logs = ("camkd",)

    def forward(self, inputs: TermInputs) -> dict[str, torch.Tensor]:
        s = self.settings
        return {"camkd": s.alpha * camkd_loss(inputs.logits, inputs.teacher_logits, inputs.labels, s.temperature)}


@register_method("camkd", min_teachers=2)
def camkd(config: RunConfig) -> list[Stage]:
    """Confidence-aware weighting of all teachers."""
    return [Stage(1, list(config.teachers), "camkd")]
