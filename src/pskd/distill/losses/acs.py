"""Adaptive-Confidence Semantic (ACS) loss, as reconstructed in method.md.

For each training sample with true label y, teacher k gives logits z_k and embedding f_k; its confidence is
c_k = softmax(z_k)[y]. Both modes produce weights over K teachers plus the ground truth ([B, K + 1], rows sum
to 1):
- hard: among the teachers that predict y, the most confident one gets weight 1; if none predicts y, the
  ground truth does;
- soft: teacher k gets c_k and the ground truth 1 - max_k c_k, normalised.
An unlabelled clip (y = -1) has no ground truth: its confidence is each teacher's in its own prediction,
hard mode picks the most confident teacher, soft mode weights the teachers by that confidence, and the ground
truth's weight is 0. Two filters keep doubtful teachers off unlabelled clips (do no harm, where teachers learnt
from as few labels as the student): a teacher whose own confidence is below `threshold` gets weight 0, and with
`agree` every teacher must predict the same class or the clip gets no weight at all (it is then taught by
nothing but the terms that need no teacher).
The soft-label target mixes the teachers' distributions at temperature T and the one-hot label with these
weights. With ground_truth="none" the one-hot share is left out of the soft-label term: the target is the
teachers' mixture alone, and each sample counts with its teachers' total weight (a sample no teacher gets right
is then taught by the cross-entropy term only, not by a one-hot target at temperature T). The semantic target
is, per teacher space, that teacher's embedding, or for the ground-truth share, a class embedding (the class
centroid of that teacher's embeddings, or a learned prototype).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pskd.config import RunConfig
from pskd.distill.distiller import Stage
from pskd.distill.losses.kd import soft_target_kl
from pskd.distill.losses.semantic import Projection, semantic_mse
from pskd.distill.methods import nearest_teacher, register_method
from pskd.distill.terms import LossTerm, TermContext, TermInputs, TermOptions, register_loss
from pskd.errors import ConfigError


def own_beliefs(probabilities: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, K] each teacher's confidence in its own prediction (from its probabilities at temperature 1), and
    that prediction."""
    return torch.stack(probabilities, dim=1).max(dim=2)


def trusted_on_unlabelled(own: torch.Tensor, predicted: torch.Tensor, threshold: float = 0.0,
                          agree: bool = False) -> torch.Tensor:
    """[B, K] booleans: which teacher may teach each clip when it is unlabelled (own, predicted: own_beliefs);
    its own confidence must reach `threshold`, and with `agree` every teacher must predict the same class."""
    trusted = own >= threshold
    if agree:
        trusted = trusted & (predicted == predicted[:, :1]).all(dim=1, keepdim=True)
    return trusted


def acs_weights(teacher_logits: list[torch.Tensor], labels: torch.Tensor, mode: str = "hard",
                threshold: float = 0.0, agree: bool = False) -> torch.Tensor:
    """[B, K + 1] weights: one column per teacher, the last for the ground truth (0 for an unlabelled clip, whose
    row is all 0 when no teacher is trusted on it: see trusted_on_unlabelled)."""
    if mode not in ("hard", "soft"):
        raise ValueError(f"ACS mode must be 'hard' or 'soft', not '{mode}'")
    rows = torch.arange(len(labels), device=labels.device)
    known = labels >= 0
    probabilities = [F.softmax(z, dim=1) for z in teacher_logits]
    confidence = torch.stack([p[rows, labels.clamp_min(0)] for p in probabilities], dim=1)
    own, predicted = own_beliefs(probabilities)  # each teacher's confidence in its own prediction
    trusted = trusted_on_unlabelled(own, predicted, threshold, agree)
    own = own.masked_fill(~trusted, 0.0)
    if mode == "soft":
        raw = torch.cat([confidence, 1 - confidence.max(dim=1, keepdim=True).values], dim=1)
        unlabelled = torch.cat([own, torch.zeros_like(own[:, :1])], dim=1)
        raw = torch.where(known[:, None], raw, unlabelled)
        return raw / raw.sum(dim=1, keepdim=True).clamp_min(1e-12)
    correct = torch.stack([z.argmax(dim=1) == labels for z in teacher_logits], dim=1)
    best = torch.where(known, confidence.masked_fill(~correct, -1.0).argmax(dim=1), own.argmax(dim=1))
    anyone = correct.any(dim=1) | (~known & trusted.any(dim=1))
    weights = torch.zeros(len(labels), len(teacher_logits) + 1, device=labels.device)
    weights[rows[anyone], best[anyone]] = 1.0
    weights[rows[known & ~anyone], -1] = 1.0
    return weights


def acs_soft_target(teacher_logits: list[torch.Tensor], labels: torch.Tensor, weights: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """The mixed target distribution [B, C]."""
    target = weights[:, -1:] * F.one_hot(labels.clamp_min(0), teacher_logits[0].shape[1]).float()
    for k, z in enumerate(teacher_logits):
        target = target + weights[:, k : k + 1] * F.softmax(z / temperature, dim=1)
    return target


def acs_terms(
    student_logits: torch.Tensor,
    projected: list[torch.Tensor],
    teacher_logits: list[torch.Tensor],
    teacher_embeddings: list[torch.Tensor],
    class_embeddings: list[torch.Tensor],
    labels: torch.Tensor,
    mode: str = "hard",
    temperature: float = 4.0,
    ground_truth: str = "onehot",
    threshold: float = 0.0,
    agree: bool = False,
) -> dict[str, torch.Tensor]:
    """The distillation terms of ACS (the caller adds cross-entropy and the weights alpha and beta).

    projected[k]: the student's embedding projected into teacher k's space; class_embeddings[k]: [C, D_k].
    threshold, agree: which teachers may teach an unlabelled clip (trusted_on_unlabelled).
    """
    weights = acs_weights(teacher_logits, labels, mode, threshold, agree).detach()
    if ground_truth == "onehot":
        target = acs_soft_target(teacher_logits, labels, weights, temperature).detach()
        kd = soft_target_kl(student_logits, target, temperature)
    elif ground_truth == "none":
        share = weights[:, :-1].sum(dim=1)  # the teachers' total weight per sample
        teachers_only = torch.cat([weights[:, :-1] / share.clamp_min(1e-12)[:, None], torch.zeros_like(share)[:, None]], 1)
        target = acs_soft_target(teacher_logits, labels, teachers_only, temperature).detach()
        kd = soft_target_kl(student_logits, target, temperature, weights=share)
    else:
        raise ValueError(f"ACS ground truth must be 'onehot' or 'none', not '{ground_truth}'")
    semantic = student_logits.new_zeros(())
    for k, (student_k, teacher_k) in enumerate(zip(projected, teacher_embeddings)):
        semantic = semantic + semantic_mse(student_k, teacher_k, weights[:, k])
        ground_truth = class_embeddings[k][labels.clamp_min(0)]
        semantic = semantic + semantic_mse(student_k, ground_truth, weights[:, -1]) / len(projected)
    return {"acs_kd": kd, "acs_semantic": semantic}


class ACSOptions(TermOptions):
    """ACS's own settings (formerly distill.acs_mode, acs_ground_truth, class_embedding, unlabelled_threshold and
    unlabelled_agree, which still read)."""

    mode: Literal["hard", "soft"] = "hard"
    # the ground-truth share of the soft-label target: a one-hot label at temperature T, or none (those clips learn
    # from the cross-entropy term alone; the semantic term still pulls them to the class embedding)
    ground_truth: Literal["onehot", "none"] = "onehot"
    class_embedding: Literal["centroid", "prototype"] = "centroid"
    # on an unlabelled clip: a teacher teaches it only if its own confidence reaches unlabelled_threshold and, with
    # unlabelled_agree, only if every teacher of the stage predicts the same class (0 / false: every clip)
    unlabelled_threshold: float = Field(0.0, ge=0, le=1)
    unlabelled_agree: bool = False


@register_loss("acs")
class ACS(LossTerm):
    """PSKD's Adaptive-Confidence Semantic loss over the stage's teachers, on every clip (an unlabelled clip
    learns from its most confident teacher): alpha * the soft-label term + beta * the semantic term. Holds the
    projections of the student's embedding into each teacher's space and, with class_embedding: prototype, the
    learned class embeddings."""

    Options = ACSOptions

    def __init__(self, context: TermContext):
        super().__init__(context)
        self.projections = nn.ModuleDict({t.name: Projection(context.student_dim, t.dim) for t in context.teachers})
        self.centroids = {t.name: t.class_embeddings for t in context.teachers}
        self.prototypes = None
        if self.options.class_embedding == "prototype":
            self.prototypes = nn.ParameterDict(
                {t.name: nn.Parameter(t.class_embeddings.clone()) for t in context.teachers})

    def forward(self, inputs: TermInputs) -> dict[str, torch.Tensor]:
        s, own, names = self.settings, self.options, inputs.teachers
        classes = self.prototypes if self.prototypes is not None else self.centroids
        terms = acs_terms(
            inputs.logits, [self.projections[n](inputs.embedding) for n in names], inputs.teacher_logits,
            inputs.teacher_embeddings, [classes[n].to(inputs.logits.device) for n in names], inputs.labels,
            own.mode, s.temperature, own.ground_truth, own.unlabelled_threshold, own.unlabelled_agree,
        )
        return {"acs_kd": s.alpha * terms["acs_kd"], "acs_semantic": s.beta * terms["acs_semantic"]}


@register_method("pskd", chain=lambda config: config.distill.progressive != "none")
def pskd(config: RunConfig) -> list[Stage]:
    """ACS over all teachers, after the teacher chain (progressive A), with an optional curriculum from the nearest
    teacher to all (progressive B)."""
    names = list(config.teachers)
    if config.distill.progressive == "B":
        if config.distill.switch_epoch > config.train.epochs:
            raise ConfigError(
                f"distill.switch_epoch ({config.distill.switch_epoch}) is after the last epoch ({config.train.epochs})"
            )
        return [Stage(1, [nearest_teacher(config)], "acs"), Stage(config.distill.switch_epoch, names, "acs")]
    return [Stage(1, names, "acs")]
