"""The student of a run's method, taught by its teachers; with distill.gate, also trained without them, and the one
validation prefers delivered."""

from __future__ import annotations

import math

import numpy as np
import torch

from pskd.config import DistillConfig
from pskd.distill.components import teacher_components
from pskd.distill.distiller import Stage
from pskd.distill.losses.acs import own_beliefs, trusted_on_unlabelled
from pskd.distill.methods import student_stages, teachers_used
from pskd.distill.terms import check_loss
from pskd.training import recipe
from pskd.training.loop import seed_everything
from pskd.training.recipe import Distilling, Trained
from pskd.training.session import Session
from pskd.training.teachers import TrainedTeacher


def _student(session: Session, teachers: dict[str, TrainedTeacher], stages: list[Stage], role: str,
             settings: DistillConfig | None = None) -> Trained:
    config = session.config
    if settings is not None:
        config = config.model_copy(update={"distill": settings})
    seed_everything(config.seed, config.deterministic)
    criterion_for = Distilling(config, [t.outputs for t in teachers.values()], stages, config.train.label_smoothing,
                               session.prepared.info.devices, session.device)
    return recipe.train_and_evaluate(role, config.student, config.train, criterion_for, session)


# Measured (benchmarks/unlabelled_targets.py): on the blind-wrist synthetic 11-15 % at a tenth of the labels (where
# unfiltered PSKD costs the student 7.6 points), 25-45 % at a quarter, 51-68 % at half; on UTD-MHAD 26-28 % at a
# tenth with teachers `same` (PSKD neutral), 65-69 % at a quarter, 80-85 % at half, 97-100 % with `all`.
HINT_BELOW = 1 / 3
CONFIDENT = 0.9  # the confidence one agreeing teacher must reach for a clip to count as confidently agreed
# what distill.unlabelled_filter: auto switches on below HINT_BELOW: the combination that did no harm on the
# blind-wrist synthetic at every label fraction
FILTERED = {"mode": "soft", "unlabelled_threshold": CONFIDENT, "unlabelled_agree": True}


def acs_options(settings: DistillConfig):
    """ACS's own settings (distill.terms.acs), its defaults filled in."""
    return check_loss("acs", "distill.terms").Options.model_validate(settings.terms.get("acs") or {})


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


def filtered_settings(settings: DistillConfig, agreement: dict | None) -> DistillConfig | None:
    """The ACS settings distill.unlabelled_filter: auto switches to, or None when it leaves them as they are:
    teachers trusted on a third of the unlabelled clips or more, filters already set, or the filter off."""
    if settings.unlabelled_filter == "off" or agreement is None or agreement["confident_agreement"] >= HINT_BELOW:
        return None
    own = acs_options(settings)
    if own.unlabelled_threshold > 0 or own.unlabelled_agree:
        return None  # the user's own filters stand
    return settings.model_copy(update={"terms": {**settings.terms, "acs": {**settings.terms.get("acs", {}), **FILTERED}}})


def _log_agreement(session: Session, found: dict, filtered: bool) -> None:
    followed = ", ".join(f"{name} on {100 * share:.0f} %" for name, share in found["followed"].items())
    session.log(f"unlabelled clips: {found['clips']}; the teachers agree, one at least {100 * CONFIDENT:.0f} % "
                f"confident, on {100 * found['confident_agreement']:.0f} % of them (unfiltered ACS follows {followed})")
    if filtered:
        session.log(f"  fewer than {100 * HINT_BELOW:.0f} %: teachers that learnt from few labels can cost the student "
                    "accuracy here, so ACS is soft and teaches an unlabelled clip only where the teachers agree and "
                    f"one is at least {100 * CONFIDENT:.0f} % confident (distill.unlabelled_filter: auto; off keeps "
                    "the settings as given)")
    elif found["confident_agreement"] < HINT_BELOW and acs_options(session.config.distill).unlabelled_threshold == 0:
        session.log("  few confident agreements: teachers that learnt from few labels can cost the student "
                    "accuracy here; consider distill.unlabelled_filter: auto, or distill.terms.acs: {mode: soft, "
                    "unlabelled_threshold: 0.9, unlabelled_agree: true}")


COMPONENTS = 64  # principal components of each teacher's embedding measured (the feature term uses a prefix)


def measure_components(session: Session, teachers: dict[str, TrainedTeacher]) -> dict[str, float]:
    """Each teacher's embedding components over the training clips, with how much of each the student's own
    streams predict (no label read); returns, per teacher, the share of its embedding's variance they predict."""
    prepared, rows = session.prepared, session.training_clips
    streams = session.config.student.streams
    watch = np.concatenate([prepared.streams[s].reshape(len(prepared), prepared.streams[s].shape[1], -1)
                            for s in streams], axis=2)
    shares = {}
    for name, teacher in teachers.items():
        components = teacher_components(teacher.outputs.embeddings, rows, COMPONENTS, watch, prepared.subjects)
        teacher.outputs.components = components
        shares[name] = float((components.predictable * components.variance).sum() / components.variance.sum())
    return shares


def train_student(session: Session, teachers: dict[str, TrainedTeacher]) -> Trained:
    """The student of the config's method. With distill.gate, the same student is also trained without any
    teacher, and the distilled one is delivered unless validation prefers the plain one (the test split
    chooses nothing; both test figures are recorded)."""
    settings = session.config.distill
    stages = student_stages(session.config)
    predictable = measure_components(session, teachers) if teachers else {}
    if predictable:
        session.log("the watch predicts, from simple features on held-out training subjects, "
                    + ", ".join(f"{100 * share:.0f} % of teacher {name}'s embedding variance"
                                for name, share in predictable.items()))
    uses_acs = any("acs" in stage.terms for stage in stages)
    agreement = unlabelled_agreement(session, teachers) if uses_acs else None
    filtered = filtered_settings(settings, agreement)
    if agreement is not None:
        _log_agreement(session, agreement, filtered is not None)
    student = _student(session, teachers, stages, "student", filtered)
    if settings.gate != "off" and teachers_used(session.config):
        student = _gate(session, student, settings.gate)
    if agreement is not None:
        student.summary["unlabelled_agreement"] = {**agreement, "filtered": filtered is not None}
    if predictable:
        student.summary["teacher_variance_predictable"] = predictable
    return student


CLEAR = 0.05  # the sign test's level: how unlikely the plain student's lead must be under no difference
MIN_CLEAR_CLIPS = 5  # fewer validation clips cannot show a clear win at that level (0.5 ** 5 = 0.031)


def sign_test(wins: int, losses: int) -> float:
    """One-sided p-value of `wins` or more among wins + losses disagreements, each side equally likely."""
    total = wins + losses
    return sum(math.comb(total, k) for k in range(wins, total + 1)) / 2**total if total else 1.0


def _gate(session: Session, student: Trained, rule: str) -> Trained:
    """The distilled student, or the same student trained without teachers where validation prefers it: on any
    lead (rule any), or on a clear one (rule clear: a sign test over the clips on which exactly one is right); with
    rule win, the distilled student only where validation clearly prefers it (the same test the other way)."""
    clips = len(session.split.val)
    if rule == "clear" and clips < MIN_CLEAR_CLIPS:
        session.log(f"gate: {clips} validation clips cannot show a clear win; delivering the distilled student "
                    "without training a plain one")
        student.summary["gate"] = {"delivered": "distilled", "rule": rule, "validation_clips": clips,
                                   "why": "too few validation clips to judge"}
        return student
    plain = _student(session, {}, [], "student without teachers (gate)")
    val_distilled, val_plain = student.summary["val"]["accuracy"], plain.summary["val"]["accuracy"]
    wins = int((plain.val_correct & ~student.val_correct).sum())
    losses = int((student.val_correct & ~plain.val_correct).sum())
    # win: how unlikely the distilled student's lead is under no difference; otherwise the plain student's
    p_value = sign_test(losses, wins) if rule == "win" else sign_test(wins, losses)
    plain_better = {"any": val_plain > val_distilled, "win": p_value >= CLEAR}.get(rule, p_value < CLEAR)
    chosen = plain if plain_better else student
    why = (f"validation {100 * val_distilled:.2f} % distilled, {100 * val_plain:.2f} % without teachers"
           + (f"; without teachers right on {wins} clips the distilled one misses, wrong on {losses} it gets "
              f"(sign test {'for the distilled lead ' if rule == 'win' else ''}p = {p_value:.3f}, "
              f"{'below' if p_value < CLEAR else 'not below'} {CLEAR})"
              if rule in ("clear", "win") else ""))
    chosen.summary["gate"] = {
        "delivered": "cross-entropy" if plain_better else "distilled", "rule": rule, "validation_clips": clips,
        "val_distilled": val_distilled, "val_cross_entropy": val_plain, "plain_wins": wins, "plain_losses": losses,
        "p_value": p_value, "why": why,
        "test_distilled": student.summary["test"]["accuracy"], "test_cross_entropy": plain.summary["test"]["accuracy"],
    }
    session.log(f"gate ({rule}): {why}: delivering the {chosen.summary['gate']['delivered']} student")
    return chosen
