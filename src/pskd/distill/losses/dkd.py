"""Decoupled knowledge distillation (Zhao et al., CVPR 2022): the KD loss split into a target-class term
(TCKD: the binary split target / rest) and a non-target term (NCKD: the distribution over the other classes),
weighted separately: alpha * TCKD + beta * NCKD, ramped in over the first epochs (distill.terms.dkd.warmup)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from pskd.config import RunConfig
from pskd.distill.distiller import Stage
from pskd.distill.methods import register_method, single_teacher
from pskd.distill.terms import LossTerm, TermInputs, TermOptions, register_loss


def _kl(target: torch.Tensor, log_student: torch.Tensor) -> torch.Tensor:
    return (torch.special.xlogy(target, target) - target * log_student).sum(dim=1).mean()


def binary_log_probabilities(scaled_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B, 2]: log p(target class) and log p(any other class), from logits already divided by T, computed by
    log-sum-exp so that a very sure prediction keeps a finite, exact log(1 - p_target) (1 - p_target itself rounds
    to 0 in float32 once p_target is within 6e-8 of 1)."""
    everything = torch.logsumexp(scaled_logits, dim=1)
    own = scaled_logits.gather(1, target[:, None]).squeeze(1)
    rest = torch.logsumexp(scaled_logits.masked_fill(F.one_hot(target, scaled_logits.shape[1]).bool(), float("-inf")),
                           dim=1)
    return torch.stack([own - everything, rest - everything], dim=1)


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
             alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> torch.Tensor:
    gt = F.one_hot(labels, student_logits.shape[1]).bool()
    # binary (target, all others) split: the student's in log space, the teacher's as probabilities (the others'
    # share is the sum of their probabilities, as in the reference implementation, never 1 - p_target)
    log_student = binary_log_probabilities(student_logits / temperature, labels)
    teacher = binary_log_probabilities(teacher_logits / temperature, labels).exp()
    tckd = _kl(teacher, log_student) * temperature**2
    # distribution over the non-target classes: mask the target out of both softmaxes
    masked = torch.finfo(student_logits.dtype).min / 4
    log_student_rest = F.log_softmax((student_logits / temperature).masked_fill(gt, masked), dim=1)
    teacher_rest = F.softmax((teacher_logits / temperature).masked_fill(gt, masked), dim=1)
    nckd = _kl(teacher_rest, log_student_rest.masked_fill(gt, 0.0)) * temperature**2
    return alpha * tckd + beta * nckd


class DKDOptions(TermOptions):
    # the loss is ramped in linearly over the first `warmup` epochs (epoch e counts e / warmup), as the reference
    # implementation does (20 epochs); 0: at full weight from the first epoch
    warmup: int = Field(20, ge=0, le=100_000)
    alpha: float = Field(1.0, ge=0)  # weight of the target-class part (formerly distill.dkd_alpha)
    beta: float = Field(8.0, ge=0)  # weight of the non-target part (formerly distill.dkd_beta)


@register_loss("dkd")
class DKD(LossTerm):
    """Decoupled KD from the stage's first teacher; its target-class split needs the label."""

    Options = DKDOptions
    needs_labels = True
    logs = ("dkd",)

    def __init__(self, context):
        super().__init__(context)
        self.ramp = 1.0

    def set_epoch(self, epoch: int) -> None:
        self.ramp = min(epoch / self.options.warmup, 1.0) if self.options.warmup else 1.0

    def forward(self, inputs: TermInputs) -> dict[str, torch.Tensor]:
        s = self.settings
        return {"dkd": self.ramp * s.alpha * dkd_loss(inputs.logits, inputs.teacher_logits[0], inputs.labels,
                                                      self.options.alpha, self.options.beta, s.temperature)}


@register_method("dkd")
def dkd(config: RunConfig) -> list[Stage]:
    """Decoupled KD from one teacher."""
    return [Stage(1, [single_teacher(config)], "dkd")]
