"""Cross-modal contrastive distillation (in the spirit of CRD, Tian et al., ICLR 2020, and CMC): the student's
embedding of a clip and a teacher's embedding of the same clip, each through a small learned head onto the unit
sphere, should be closer to each other than to the other clips of the batch (InfoNCE, both directions).

It uses the pairing itself as the signal, needs no label, and stays informative where a teacher's soft labels on
its own training clips are nearly one-hot. Negatives are the other clips of the batch (no memory bank).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pskd.distill.terms import LossTerm, TermContext, TermInputs, TermOptions, register_loss


def info_nce(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between row-aligned embeddings [B, D] (normalised here): the mean of the cross-entropy
    of each student row against the teacher rows, and of each teacher row against the student rows, where the
    row of the same clip is the right answer."""
    s, t = F.normalize(student, dim=1), F.normalize(teacher, dim=1)
    similarity = s @ t.T / temperature
    target = torch.arange(len(s), device=s.device)
    return 0.5 * (F.cross_entropy(similarity, target) + F.cross_entropy(similarity.T, target))


class ContrastiveOptions(TermOptions):
    weight: float = Field(0.5, ge=0)
    temperature: float = Field(0.1, gt=0)
    dim: int = Field(64, ge=1, le=4096)  # the shared space the heads map both embeddings into


@register_loss("contrastive")
class Contrastive(LossTerm):
    Options = ContrastiveOptions

    def __init__(self, context: TermContext):
        super().__init__(context)
        dim = self.options.dim
        self.student_heads = nn.ModuleDict({t.name: nn.Linear(context.student_dim, dim) for t in context.teachers})
        self.teacher_heads = nn.ModuleDict({t.name: nn.Linear(t.dim, dim) for t in context.teachers})

    def forward(self, inputs: TermInputs) -> dict[str, torch.Tensor]:
        total = inputs.logits.new_zeros(())
        for name, teacher in zip(inputs.teachers, inputs.teacher_embeddings):
            total = total + info_nce(self.student_heads[name](inputs.embedding),
                                     self.teacher_heads[name](teacher.detach()), self.options.temperature)
        return {"contrastive": self.options.weight * total / len(inputs.teachers)}
