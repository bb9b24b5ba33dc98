"""Decoupled knowledge distillation (Zhao et al., CVPR 2022): the KD loss split into a target-class term
(TCKD: the binary split target / rest) and a non-target term (NCKD: the distribution over the other classes),
weighted separately: alpha * TCKD + beta * NCKD."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pskd.distill.terms import LossTerm, TermInputs, register_loss


def _kl(target: torch.Tensor, log_student: torch.Tensor) -> torch.Tensor:
    return (torch.special.xlogy(target, target) - target * log_student).sum(dim=1).mean()


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
             alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> torch.Tensor:
    gt = F.one_hot(labels, student_logits.shape[1]).bool()
    p_student = F.softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits / temperature, dim=1)
    # binary (target, all others) probabilities
    b_student = torch.stack([p_student[gt], 1 - p_student[gt]], dim=1).clamp_min(1e-12)
    b_teacher = torch.stack([p_teacher[gt], 1 - p_teacher[gt]], dim=1)
    tckd = _kl(b_teacher, b_student.log()) * temperature**2
    # distribution over the non-target classes: mask the target out of both softmaxes
    masked = torch.finfo(student_logits.dtype).min / 4
    log_student_rest = F.log_softmax((student_logits / temperature).masked_fill(gt, masked), dim=1)
    teacher_rest = F.softmax((teacher_logits / temperature).masked_fill(gt, masked), dim=1)
    nckd = _kl(teacher_rest, log_student_rest.masked_fill(gt, 0.0)) * temperature**2
    return alpha * tckd + beta * nckd


@register_loss("dkd")
class DKD(LossTerm):
    """Decoupled KD from the stage's first teacher; its target-class split needs the label."""

    needs_labels = True
    logs = ("dkd",)

    def forward(self, inputs: TermInputs) -> dict[str, torch.Tensor]:
        s = self.settings
        return {"dkd": s.alpha * dkd_loss(inputs.logits, inputs.teacher_logits[0], inputs.labels, s.dkd_alpha,
                                          s.dkd_beta, s.temperature)}
