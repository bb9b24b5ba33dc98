"""The student of a run's method, taught by its teachers; with distill.gate, also trained without them, and the one
validation prefers delivered."""

from __future__ import annotations

from pskd.distill.distiller import Stage
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


def train_student(session: Session, teachers: dict[str, TrainedTeacher]) -> Trained:
    """The student of the config's method. With distill.gate, the same student is also trained without any
    teacher, and the distilled one is delivered unless validation prefers the plain one (the test split
    chooses nothing; both test figures are recorded)."""
    stages = student_stages(session.config)
    student = _student(session, teachers, stages, "student")
    if not (session.config.distill.gate and teachers_used(session.config)):
        return student
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
