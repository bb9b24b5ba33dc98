"""Methods: each name a configs uses, as the stages a student is trained with (teachers, loss terms, from which
epoch). A method registers itself with `@register_method(name)` on a function config -> stages, next to its loss
(the built-in ones sit in pskd/distill/losses/, a user's in a plugin file); `distill.stages` in a config spells
stages out instead. This registry imports none of its methods; only ce, which has no loss of its own, is here.

ce: no teacher. kd: Hinton KD from one teacher. dkd: decoupled KD from one teacher. dask: VSKD's loss (KD plus
relational distance/angle and semantic terms) from one teacher. avg_kd: the average of all teachers' soft labels.
camkd: confidence-aware weighting of all teachers. takd: KD from the teacher assistant (a teacher that was itself
distilled from a stronger one). pskd: ACS over all teachers, after the teacher chain (progressive A), with an
optional curriculum from the nearest teacher to all (progressive B). self_train: no teacher; the student
pseudo-labels unlabelled clips itself (FixMatch), the control for distillation from unlabelled pairs.

`distill.add_terms` adds registered terms (e.g. fixmatch, contrastive) to every stage of a distillation method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pskd.config import RunConfig
from pskd.data.clip import SKELETON
from pskd.distill.distiller import Stage
from pskd.distill.terms import check_loss, check_options
from pskd.errors import ConfigError
from pskd.suggest import did_you_mean


@dataclass
class Method:
    name: str
    stages: Callable[[RunConfig], list[Stage]]
    min_teachers: int  # teachers the config must name (0: none used)
    chain: bool = True  # whether teachers distil into each other as their distill_from says


METHODS: dict[str, Method] = {}


def register_method(name: str, min_teachers: int = 1, chain: Callable[[RunConfig], bool] | bool = True):
    """Function decorator: `function(config) -> list[Stage]` becomes the method `name`."""

    def decorate(function: Callable[[RunConfig], list[Stage]]):
        if name in METHODS and METHODS[name].stages is not function:
            raise ValueError(f"a method named '{name}' is already registered")
        METHODS[name] = Method(name, function, min_teachers, chain)
        return function

    return decorate


def method_names() -> list[str]:
    return list(METHODS)


def get_method(name: str, where: str = "method") -> Method:
    if name not in METHODS:
        raise ConfigError(f"{where}: unknown method '{name}'{did_you_mean(name, METHODS)}; known: {', '.join(METHODS)}")
    return METHODS[name]


def check_method(config: RunConfig) -> None:
    """The method, its teachers, stages and terms, before any data is read."""
    method = get_method(config.method)
    if len(config.teachers) < method.min_teachers:
        raise ConfigError(f"method '{config.method}' needs at least {method.min_teachers} teacher(s); "
                          f"{len(config.teachers)} configured")
    for name, options in config.distill.terms.items():
        check_options(name, options, f"distill.terms.{name}")
        unknown = sorted(set(options.get("teachers") or []) - set(config.teachers))
        if unknown:
            raise ConfigError(f"distill.terms.{name}.teachers: {unknown} are not among the teachers "
                              f"{list(config.teachers)}")
    for term in config.distill.add_terms:
        check_loss(term, "distill.add_terms")
    for i, stage in enumerate(config.distill.stages or []):
        for term in [stage.loss] if isinstance(stage.loss, str) else stage.loss:
            check_loss(term, f"distill.stages.{i}.loss")
    student_stages(config)


def teacher_chain_used(config: RunConfig) -> bool:
    """Whether teachers distil into each other as their `distill_from` says (off for pskd without PL)."""
    chain = get_method(config.method).chain
    return chain(config) if callable(chain) else chain


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
    """The stages of `config.method` (empty for ce), or the stages the config spells out, with distill.add_terms
    joined to every stage that has teachers."""
    method = get_method(config.method)
    if config.distill.stages is not None and method.min_teachers:
        stages = [Stage(s.start, list(s.teachers), s.loss) for s in config.distill.stages]
    else:
        stages = method.stages(config)
    extra = list(config.distill.add_terms)
    if extra and method.min_teachers:
        stages = [Stage(s.start, s.teachers, list(dict.fromkeys([*s.terms, *extra]))) for s in stages]
    return stages


def teachers_used(config: RunConfig) -> bool:
    return bool(get_method(config.method).min_teachers) and bool(student_stages(config))


def single_teacher(config: RunConfig) -> str:
    """The one teacher of a single-teacher method: distill.teacher, else the first teacher listed."""
    return config.distill.teacher or list(config.teachers)[0]


@register_method("ce", min_teachers=0)
def _ce(config: RunConfig) -> list[Stage]:
    return []


