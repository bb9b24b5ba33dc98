"""The distiller: the loss a student is trained with, given frozen teachers' outputs on the same clips.

Teachers are trained first and frozen; their logits and embeddings on every clip are computed once (in eval
mode) and looked up by clip index here, so a distillation target always belongs to the very clip the student is
looking at, and teachers are never in the optimizer. With cross-fitting, the outputs for a training clip come from
teachers that did not train on it.

A method is a list of stages; each stage names the teachers the student learns from during its epochs and the
loss terms it uses. Every term is returned by name, so the training loop logs each one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pskd.data.batches import INDEX, LABEL
from pskd.distill.losses.acs import acs_terms
from pskd.distill.losses.camkd import camkd_loss
from pskd.distill.losses.dkd import dkd_loss
from pskd.distill.losses.kd import kd_loss, soft_target_kl
from pskd.distill.losses.relational import relational_loss
from pskd.distill.losses.semantic import Projection, semantic_mse

LOSSES = ("kd", "avg_kd", "dkd", "camkd", "dask", "acs")


@dataclass
class TeacherOutputs:
    """A frozen teacher's outputs on every clip of the dataset, indexed like the prepared arrays."""

    name: str
    logits: torch.Tensor  # [N, C]
    embeddings: torch.Tensor  # [N, D]
    class_embeddings: torch.Tensor  # [C, D]: the centroid of each class's embeddings over training clips

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]


@dataclass
class Stage:
    """From epoch `start` (1-based, inclusive) the student learns from `teachers` with `loss`."""

    start: int
    teachers: list[str]
    loss: str


@dataclass
class LossWeights:
    temperature: float = 4.0
    alpha: float = 1.0  # soft-label term
    beta: float = 0.5  # semantic (embedding) term
    label_smoothing: float = 0.0
    dkd_alpha: float = 1.0
    dkd_beta: float = 8.0
    relational_distance: float = 1.0
    relational_angle: float = 2.0
    acs_mode: str = "hard"
    acs_ground_truth: str = "onehot"  # or "none": no one-hot share in the soft-label term
    class_embedding: str = "centroid"  # or "prototype": learned, initialised at the centroids


class Distiller(nn.Module):
    """Callable as a training-loop criterion: (student outputs, batch) -> {term name: scalar}.

    Its own parameters (projections of the student's embedding into each teacher's space, learned class
    prototypes) are trained together with the student: pass `student.parameters()` and `distiller.parameters()`
    to the optimizer.
    """

    def __init__(self, student_dim: int, teachers: list[TeacherOutputs], stages: list[Stage], weights: LossWeights):
        super().__init__()
        if not stages or stages[0].start != 1:
            raise ValueError("the first stage must start at epoch 1")
        known = {t.name for t in teachers}
        for stage in stages:
            if stage.loss not in LOSSES:
                raise ValueError(f"unknown distillation loss '{stage.loss}'; known: {', '.join(LOSSES)}")
            unknown = [name for name in stage.teachers if name not in known]
            if unknown or not stage.teachers:
                raise ValueError(f"stage at epoch {stage.start} names teachers {unknown or '[]'}; have {sorted(known)}")
        self.teachers = {t.name: t for t in teachers}
        self.stages = sorted(stages, key=lambda s: s.start)
        self.weights = weights
        self.projections = nn.ModuleDict({t.name: Projection(student_dim, t.dim) for t in teachers})
        if weights.class_embedding == "prototype":
            self.prototypes = nn.ParameterDict(
                {t.name: nn.Parameter(t.class_embeddings.clone()) for t in teachers}
            )
        else:
            self.prototypes = None
        self.stage = self.stages[0]

    def set_epoch(self, epoch: int) -> None:
        self.stage = [s for s in self.stages if s.start <= epoch][-1]

    def to(self, *args, **kwargs):
        for teacher in self.teachers.values():
            teacher.logits = teacher.logits.to(*args, **kwargs)
            teacher.embeddings = teacher.embeddings.to(*args, **kwargs)
            teacher.class_embeddings = teacher.class_embeddings.to(*args, **kwargs)
        return super().to(*args, **kwargs)

    def _class_embeddings(self, name: str) -> torch.Tensor:
        return self.prototypes[name] if self.prototypes is not None else self.teachers[name].class_embeddings

    def forward(self, outputs: tuple[torch.Tensor, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        embedding, logits = outputs
        labels, index = batch[LABEL], batch[INDEX]
        w = self.weights
        names = self.stage.teachers
        teacher_logits = [self.teachers[n].logits[index] for n in names]
        teacher_embeddings = [self.teachers[n].embeddings[index] for n in names]
        terms = {"ce": F.cross_entropy(logits, labels, label_smoothing=w.label_smoothing)}
        loss = self.stage.loss
        if loss == "kd":
            terms["kd"] = w.alpha * kd_loss(logits, teacher_logits[0], w.temperature)
        elif loss == "avg_kd":
            target = torch.stack([F.softmax(z / w.temperature, dim=1) for z in teacher_logits]).mean(dim=0)
            terms["kd"] = w.alpha * soft_target_kl(logits, target, w.temperature)
        elif loss == "dkd":
            terms["dkd"] = w.alpha * dkd_loss(logits, teacher_logits[0], labels, w.dkd_alpha, w.dkd_beta, w.temperature)
        elif loss == "camkd":
            terms["kd"] = w.alpha * camkd_loss(logits, teacher_logits, labels, w.temperature)
        elif loss == "dask":
            name = names[0]
            projected = self.projections[name](embedding)
            terms["kd"] = w.alpha * kd_loss(logits, teacher_logits[0], w.temperature)
            terms["relational"] = w.beta * relational_loss(
                projected, teacher_embeddings[0], w.relational_distance, w.relational_angle
            )
            terms["semantic"] = w.beta * semantic_mse(projected, teacher_embeddings[0])
        else:  # acs
            projected = [self.projections[n](embedding) for n in names]
            acs = acs_terms(
                logits, projected, teacher_logits, teacher_embeddings, [self._class_embeddings(n) for n in names],
                labels, w.acs_mode, w.temperature, w.acs_ground_truth,
            )
            terms["kd"] = w.alpha * acs["acs_kd"]
            terms["semantic"] = w.beta * acs["acs_semantic"]
        return terms
