"""The student of a run's method, taught by its teachers; with distill.gate, also trained without them, and the one
validation prefers delivered."""

from __future__ import annotations

import torch

from pskd.distill.distiller import Stage
from pskd.distill.losses.acs import own_beliefs, trusted_on_unlabelled
from pskd.distill.methods import student_stages, teachers_used
from pskd.train import recipe
from pskd.train.loop import seed_everything
from pskd.train.recipe import Distilling, Trained
from pskd.train.session import Session
from pskd.train.teachers import TrainedTeacher


def _student(session: Session, teachers: dict[str, TrainedTeacher], stages: list[Stage], role: str) -> Trained:
    config = session.config
    seed_everything(config.seed, config.deterministic)
    criterion_for = Distilling(config, [t.outputs for t in teachers.values()], stages, config.train.label_smoothing,
                               session.prepared.info.devices, session.device)
    return recipe.train_and_evaluate(role, config.student, config.train, criterion_for, session)


# Measured (benchmarks/unlabelled_targets.py): on the blind-wrist synthetic 11-15 % at a tenth of the labels (where
# unfiltered PSKD costs the student 7.6 points), 25-45 % at a quarter, 51-68 % at half; on UTD-MHAD 26-28 % at a
# tenth with teachers `same` (PSKD neutral), 65-69 % at a quarter, 80-85 % at half, 97-100 % with `all`.
HINT_BELOW = 1 / 3
CONFIDENT = 0.9  # the confidence one agreeing teacher must reach for a clip to count as confidently agreed


def unlabelled_agreement(session: Session, teachers: dict[str, TrainedTeacher]) -> dict | None:
    """How far the teachers can be trusted on the unlabelled training clips, without any label: the share of clips
    on which every teacher predicts the same class and one is at least 90 % confident, and how often unfiltered
    ACS would follow each teacher (its most confident). None without unlabelled clips or teachers."""
    rows = torch.as_tensor(session.split.unlabelled, dtype=torch.long)
    if not teachers or len(rows) == 0:
        return None
    own, predicted = own_beliefs([torch.softmax(t.outputs.logits[rows], dim=1) for t in teachers.values()])
    agreed = trusted_on_unlabelled(own, predicted, CONFIDENT, agree=True).any(dim=1).float().mean().item()
    followed = torch.bincount(own.argmax(dim=1), minlength=len(teachers)).float() / len(rows)
    return {"clips": len(rows), "confident_agreement": agreed,
            "followed": {name: share.item() for name, share in zip(teachers, followed)}}


def _log_agreement(session: Session, found: dict) -> None:
    followed = ", ".join(f"{name} on {100 * share:.0f} %" for name, share in found["followed"].items())
    session.log(f"unlabelled clips: {found['clips']}; the teachers agree, one at least {100 * CONFIDENT:.0f} % "
                f"confident, on {100 * found['confident_agreement']:.0f} % of them (unfiltered ACS follows {followed})")
    if found["confident_agreement"] < HINT_BELOW and session.config.distill.unlabelled_threshold == 0:
        session.log("  few confident agreements: teachers that learnt from few labels can cost the student "
                    "accuracy here; consider distill.acs_mode: soft with distill.unlabelled_threshold: 0.9 and "
                    "distill.unlabelled_agree: true, or distill.gate (README: Do no harm)")


def train_student(session: Session, teachers: dict[str, TrainedTeacher]) -> Trained:
    """The student of the config's method. With distill.gate, the same student is also trained without any
    teacher, and the distilled one is delivered unless validation prefers the plain one (the test split
    chooses nothing; both test figures are recorded)."""
    stages = student_stages(session.config)
    uses_acs = any("acs" in stage.terms for stage in stages)
    agreement = unlabelled_agreement(session, teachers) if uses_acs else None
    if agreement is not None:
        _log_agreement(session, agreement)
    student = _student(session, teachers, stages, "student")
    if session.config.distill.gate and teachers_used(session.config):
        student = _gate(session, student)
    if agreement is not None:
        student.summary["unlabelled_agreement"] = agreement
    return student


def _gate(session: Session, student: Trained) -> Trained:
    """The distilled student, or the same student trained without teachers where validation prefers it."""
    plain = _student(session, {}, [], "student without teachers (gate)")
    keep = student.summary["val"]["accuracy"] >= plain.summary["val"]["accuracy"]
    chosen = student if keep else plain
    chosen.summary["gate"] = {
        "delivered": "distilled" if keep else "cross-entropy",
        "val_distilled": student.summary["val"]["accuracy"], "val_cross_entropy": plain.summary["val"]["accuracy"],
        "test_distilled": student.summary["test"]["accuracy"],
        "test_cross_entropy": plain.summary["test"]["accuracy"],
    }
    session.log(f"gate: validation {100 * chosen.summary['gate']['val_distilled']:.2f} % distilled, "
                f"{100 * chosen.summary['gate']['val_cross_entropy']:.2f} % without teachers: delivering the "
                f"{chosen.summary['gate']['delivered']} student")
    return chosen
