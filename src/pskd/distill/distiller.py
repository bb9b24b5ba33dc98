"""The distiller: the loss a student is trained with, given frozen teachers' outputs on the same clips.

Teachers are trained first and frozen; their logits and embeddings on every clip are computed once (in eval
mode) and looked up by clip index here, so a distillation target always belongs to the very clip the student is
looking at, and teachers are never in the optimizer. With cross-fitting, the outputs for a training clip come from
teachers that did not train on it.

A method is a list of stages; each stage names the teachers the student learns from during its epochs and the
registered loss terms (pskd.distill.terms) it sums. Every term is returned by name, so the training loop logs
each one. The supervised cross-entropy sees labelled clips only; the terms see unlabelled clips too unless they
need labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pskd.data.batches import INDEX, LABEL
from pskd.distill.losses.supervised import supervised_cross_entropy
from pskd.distill.terms import TeacherOutputs, TermContext, TermInputs, build_term, check_loss

__all__ = ["Distiller", "Stage", "TeacherOutputs"]


@dataclass
class Stage:
    """From epoch `start` (1-based, inclusive) the student learns from `teachers` with the loss term(s) `loss`."""

    start: int
    teachers: list[str]
    loss: str | list[str]

    @property
    def terms(self) -> list[str]:
        return [self.loss] if isinstance(self.loss, str) else list(self.loss)


class Distiller(nn.Module):
    """Callable as a training-loop criterion: (student outputs, batch, student) -> {term name: scalar}.

    Its own parameters (the terms' projection heads, learned class prototypes) are trained together with the
    student: pass `student.parameters()` and `distiller.parameters()` to the optimizer.
    """

    def __init__(self, context: TermContext, stages: list[Stage], term_options: dict[str, dict] | None = None):
        super().__init__()
        if not stages or min(s.start for s in stages) != 1:
            raise ValueError("the first stage must start at epoch 1")
        known = {t.name for t in context.teachers}
        for stage in stages:
            unknown = [name for name in stage.teachers if name not in known]
            needs = any(check_loss(term, "distill.stages").needs_teachers for term in stage.terms)
            if unknown or (needs and not stage.teachers) or not stage.terms:
                raise ValueError(f"stage at epoch {stage.start} names teachers {unknown or '[]'} and terms "
                                 f"{stage.terms}; have teachers {sorted(known)}")
        self.teachers = {t.name: t for t in context.teachers}
        self.stages = sorted(stages, key=lambda s: s.start)
        self.label_smoothing = context.label_smoothing
        names = list(dict.fromkeys(term for stage in self.stages for term in stage.terms))
        options = term_options or {}
        chosen = {name: (options.get(name) or {}).get("teachers") for name in names}
        for name, wanted in chosen.items():
            unknown = sorted(set(wanted or []) - known)
            if unknown:
                raise ValueError(f"distill.terms.{name}.teachers: {unknown} are not teachers ({sorted(known)})")
        self.term_teachers = {name: wanted for name, wanted in chosen.items() if wanted is not None}
        self.terms = nn.ModuleDict({
            name: build_term(name, TermContext(
                context.student_dim, [t for t in context.teachers if chosen[name] is None or t.name in chosen[name]],
                context.settings, context.label_smoothing, context.devices, options.get(name, {})))
            for name in names
        })
        self.stage = self.stages[0]

    @property
    def uses_unlabelled(self) -> bool:
        """Whether any term learns from unlabelled clips (then they join the training batches)."""
        return any(not term.needs_labels for term in self.terms.values())

    def set_epoch(self, epoch: int) -> None:
        self.stage = [s for s in self.stages if s.start <= epoch][-1]
        for term in self.terms.values():
            term.set_epoch(epoch)

    def to(self, *args, **kwargs):
        for teacher in self.teachers.values():
            teacher.logits = teacher.logits.to(*args, **kwargs)
            teacher.embeddings = teacher.embeddings.to(*args, **kwargs)
            teacher.class_embeddings = teacher.class_embeddings.to(*args, **kwargs)
            if teacher.components is not None:
                teacher.components = teacher.components.to(*args, **kwargs)
        return super().to(*args, **kwargs)

    def forward(self, outputs: tuple[torch.Tensor, torch.Tensor], batch: dict[str, torch.Tensor],
                model: nn.Module | None = None) -> dict[str, torch.Tensor]:
        embedding, logits = outputs
        labels, index = batch[LABEL], batch[INDEX]
        names = self.stage.teachers
        everything = TermInputs(
            embedding, logits, labels, list(names), [self.teachers[n].logits[index] for n in names],
            [self.teachers[n].embeddings[index] for n in names], batch, model,
        )
        terms = {"ce": supervised_cross_entropy(logits, labels, self.label_smoothing)}
        known = labels >= 0
        for name in self.stage.terms:
            term = self.terms[name]
            inputs = everything
            if name in self.term_teachers:  # this term learns from some of the stage's teachers only
                inputs = everything.only(self.term_teachers[name])
                if term.needs_teachers and not inputs.teachers:
                    for key in term.logs:
                        terms[key] = terms.get(key, 0.0) + logits.sum() * 0.0
                    continue
            if term.needs_labels and not bool(known.all()):
                if not bool(known.any()):  # nothing for it in this batch: logged as 0, like a batch of zeros
                    for key in term.logs:
                        terms[key] = terms.get(key, 0.0) + logits.sum() * 0.0
                    continue
                share = known.float().mean()  # the term counts in proportion to the clips it could see
                for key, value in term(inputs.subset(known)).items():
                    terms[key] = terms.get(key, 0.0) + share * value
                continue
            for key, value in term(inputs).items():
                terms[key] = terms.get(key, 0.0) + value
        return terms
