"""Relational knowledge distillation (Park et al., CVPR 2019), the distance and angle terms that VSKD's DASK
loss builds on: the student's embeddings should keep the teacher's pairwise distances (normalised by their mean)
and the angles formed by every triplet, compared with the smooth L1 (Huber) loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pskd.config import RunConfig
from pskd.distill.distiller import Stage
from pskd.distill.losses.kd import kd_loss
from pskd.distill.losses.semantic import Projection, semantic_mse
from pskd.distill.methods import register_method, single_teacher
from pskd.distill.terms import LossTerm, TermContext, TermInputs, TermOptions, register_loss


def _pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    squared = (x.unsqueeze(0) - x.unsqueeze(1)).pow(2).sum(-1)
    return squared.clamp_min(1e-12).sqrt() * (1 - torch.eye(len(x), device=x.device))


def distance_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        t = _pairwise_distances(teacher)
        t = t / t[t > 0].mean()
    s = _pairwise_distances(student)
    s = s / s[s > 0].mean()
    return F.smooth_l1_loss(s, t)


def _angles(x: torch.Tensor) -> torch.Tensor:
    """cos of the angle at anchor j between i and k, for every triplet: [B, B, B]."""
    difference = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), p=2, dim=2)  # [j, i] = x_i - x_j, normalised
    return torch.bmm(difference, difference.transpose(1, 2))


def angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        t = _angles(teacher)
    return F.smooth_l1_loss(_angles(student), t)


def relational_loss(student: torch.Tensor, teacher: torch.Tensor, distance_weight: float = 1.0,
                    angle_weight: float = 2.0) -> torch.Tensor:
    return distance_weight * distance_loss(student, teacher) + angle_weight * angle_loss(student, teacher)


class DASKOptions(TermOptions):
    distance: float = Field(1.0, ge=0)  # weight of the relational distance term (formerly distill.relational_distance)
    angle: float = Field(2.0, ge=0)  # weight of the relational angle term (formerly distill.relational_angle)


@register_loss("dask")
class DASK(LossTerm):
    """VSKD's DASK loss from the stage's first teacher, on every clip: KD, plus the relational distance and angle
    terms and the semantic term on the student's embedding projected into that teacher's space."""

    Options = DASKOptions

    def __init__(self, context: TermContext):
        super().__init__(context)
        self.projections = nn.ModuleDict({t.name: Projection(context.student_dim, t.dim) for t in context.teachers})

    def forward(self, inputs: TermInputs) -> dict[str, torch.Tensor]:
        s, own = self.settings, self.options
        projected = self.projections[inputs.teachers[0]](inputs.embedding)
        target = inputs.teacher_embeddings[0]
        return {
            "dask_kd": s.alpha * kd_loss(inputs.logits, inputs.teacher_logits[0], s.temperature),
            "dask_relational": s.beta * relational_loss(projected, target, own.distance, own.angle),
            "dask_semantic": s.beta * semantic_mse(projected, target),
        }


@register_method("dask")
def dask(config: RunConfig) -> list[Stage]:
    """VSKD's loss (KD plus relational distance and angle and the semantic term) from one teacher."""
    return [Stage(1, [single_teacher(config)], "dask")]
