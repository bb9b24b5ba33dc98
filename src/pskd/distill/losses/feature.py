"""Feature distillation through a learned projector (in the spirit of FitNets, Romero et al., ICLR 2015): the
student's embedding, through a small head, regresses the leading principal components of each teacher's embedding
of the same clip, on every paired clip, labelled or not.

`focus: predictable` weights each component by how much of it the watch signal predicts on held-out training
subjects (pskd.distill.components), so the student is asked only for what its sensor can carry ("modality
focusing", Xue et al., ICLR 2023). A teacher that is a fixed description of the skeleton's motion
(`skeleton_motion`) makes this term the cross-modal auxiliary target: the student regresses the skeleton's motion
from the watch.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from pskd.distill.terms import LossTerm, TermContext, TermInputs, TermOptions, register_loss


class FeatureOptions(TermOptions):
    weight: float = Field(1.0, ge=0)
    components: int = Field(32, ge=1, le=4096)  # leading principal components of each teacher's embedding
    focus: Literal["none", "predictable"] = "none"
    hidden: int = Field(0, ge=0, le=4096)  # the projector: linear (0) or one hidden layer of this width


def component_loss(predicted: torch.Tensor, target: torch.Tensor, variance: torch.Tensor,
                   weights: torch.Tensor | None = None) -> torch.Tensor:
    """The squared error on each component, relative to the components' total variance (so a loss of 1 is that of
    predicting the mean), optionally weighted per component; averaged over the batch."""
    per_component = (predicted - target.detach()).pow(2)
    scale = variance.clamp_min(1e-12)
    if weights is not None:
        per_component, scale = per_component * weights, scale * weights
    return per_component.sum(dim=1).mean() / scale.sum().clamp_min(1e-12)


@register_loss("feature")
class Feature(LossTerm):
    Options = FeatureOptions

    def __init__(self, context: TermContext):
        super().__init__(context)
        self.components = {}
        heads = {}
        for teacher in context.teachers:
            if teacher.components is None:
                raise ValueError(f"the feature term needs the principal components of teacher {teacher.name}")
            count = min(self.options.components, teacher.components.basis.shape[1])
            self.components[teacher.name] = teacher.components
            width = self.options.hidden
            heads[teacher.name] = (nn.Linear(context.student_dim, count) if not width else
                                   nn.Sequential(nn.Linear(context.student_dim, width), nn.ReLU(), nn.Linear(width, count)))
        self.heads = nn.ModuleDict(heads)

    def forward(self, inputs: TermInputs) -> dict[str, torch.Tensor]:
        total, used = inputs.logits.new_zeros(()), 0
        for name, embedding in zip(inputs.teachers, inputs.teacher_embeddings):
            if name not in self.heads:
                continue
            components = self.components[name].to(embedding.device)
            count = self.heads[name][-1].out_features if isinstance(self.heads[name], nn.Sequential) \
                else self.heads[name].out_features
            target = components.project(embedding)[:, :count]
            weights = None
            if self.options.focus == "predictable":
                weights = components.predictable[:count]
            total = total + component_loss(self.heads[name](inputs.embedding), target, components.variance[:count],
                                           weights)
            used += 1
        return {"feature": self.options.weight * total / max(used, 1)}
