"""Each method name as the stages a student is trained with (teachers used, loss, from which epoch).

ce: no teacher. kd: Hinton KD from one teacher. dkd: decoupled KD from one teacher. dask: VSKD's loss (KD plus
relational distance/angle and semantic terms) from one teacher. avg_kd: the average of all teachers' soft labels.
camkd: confidence-aware weighting of all teachers. takd: KD from the teacher assistant (a teacher that was itself
distilled from a stronger one). pskd: ACS over all teachers, after the teacher chain (progressive A), with an
optional curriculum from the nearest teacher to all (progressive B).
"""

from __future__ import annotations

from pskd.config import RunConfig
from pskd.data.clip import SKELETON
from pskd.distill.distiller import Stage
from pskd.errors import ConfigError


def teacher_chain_used(config: RunConfig) -> bool:
    """Whether teachers distil into each other as their `distill_from` says (off for pskd without PL)."""
    return not (config.method == "pskd" and config.distill.progressive == "none")


def nearest_teacher(config: RunConfig) -> str:
    """The teacher closest to the student: the one that also reads the student's own streams."""
    if config.distill.nearest:
        return config.distill.nearest
    student = set(config.student.streams)
    for name, teacher in config.teachers.items():
        if student & set(teacher.streams) and SKELETON in teacher.streams:
            return name
    for name, teacher in config.teachers.items():
        if student & set(teacher.streams):
            return name
    raise ConfigError("distill.nearest: no teacher reads the student's streams; name the nearest teacher")


def student_stages(config: RunConfig) -> list[Stage]:
    """The stages of `config.method` (empty for ce), or the stages the config spells out."""
    if config.method == "ce":
        return []
    if config.distill.stages is not None:
        return [Stage(s.start, list(s.teachers), s.loss) for s in config.distill.stages]
    names = list(config.teachers)
    single = config.distill.teacher or names[0]
    method = config.method
    if method in ("kd", "dkd", "dask"):
        return [Stage(1, [single], method)]
    if method in ("avg_kd", "camkd"):
        return [Stage(1, names, method)]
    if method == "takd":
        assistant = config.distill.assistant or next(
            (n for n, t in config.teachers.items() if t.distill_from is not None), None
        )
        if assistant is None:
            raise ConfigError("takd needs a teacher assistant: set distill_from on one teacher or distill.assistant")
        return [Stage(1, [assistant], "kd")]
    # pskd
    if config.distill.progressive == "B":
        if config.distill.switch_epoch > config.train.epochs:
            raise ConfigError(
                f"distill.switch_epoch ({config.distill.switch_epoch}) is after the last epoch ({config.train.epochs})"
            )
        return [Stage(1, [nearest_teacher(config)], "acs"), Stage(config.distill.switch_epoch, names, "acs")]
    return [Stage(1, names, "acs")]
