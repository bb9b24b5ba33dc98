"""The data of a run as its parts may see it: the prepared clips, the protocol's split, and the labels the student
and the teachers may learn from (data.labels), gathered in a Session with the device and the log."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from pskd.config import RunConfig
from pskd.console import log_stderr
from pskd.data.cache import prepare
from pskd.data.labels import hide_labels, keep_labels
from pskd.data.prepared import Prepared
from pskd.data.protocols import Split, make_split, scarce_classes
from pskd.data.registry import get_dataset
from pskd.errors import DataError
from pskd.plugins import load_plugins
from pskd.training import distributed
from pskd.training.loop import pick_device, seed_everything


def split_data(config: RunConfig, prepared: Prepared) -> Split:
    dataset = get_dataset(prepared.info.name)
    options = {"scenes": prepared.scenes, **dataset.split_options(config.data.options(), prepared.info)}
    return make_split(
        prepared.info.name, config.data.protocol, prepared.subjects, prepared.trials, config.data.val_subjects,
        options,
    )


@dataclass
class Session:
    """What the parts of a run share: its config, the prepared data and split, the device, the log."""

    config: RunConfig
    prepared: Prepared  # labels as the student may see them (-1 where hidden or absent)
    split: Split
    device: torch.device
    log: Callable
    teacher_prepared: Prepared | None = None  # as the teachers may see them (data.labels.teachers); default: the same
    teacher_split: Split | None = None
    # where each training keeps its per-epoch state, to resume from (None: nothing is written)
    state_dir: Path | None = None

    def __post_init__(self):
        self.teacher_prepared = self.teacher_prepared or self.prepared
        self.teacher_split = self.teacher_split or self.split

    def checkpoint(self, training: str) -> Path | None:
        """The state file of the training named `training` ("student", "teachers.skeleton fold [1, 3]", ...)."""
        if self.state_dir is None:
            return None
        return self.state_dir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", training).strip("_") + ".pt")

    def as_teachers_see_it(self) -> "Session":
        """This session with the data and split the teachers may learn from."""
        return replace(self, prepared=self.teacher_prepared, split=self.teacher_split)

    @property
    def training_clips(self) -> np.ndarray:
        """Every clip of the training subjects (training and validation parts, labelled or not); never a test clip."""
        return np.sort(np.concatenate([self.split.train, self.split.val, self.split.unlabelled,
                                       self.split.unlabelled_val]))


def label_views(config: RunConfig, prepared: Prepared, by_subject: Split) -> tuple[Prepared, Split, Prepared, Split]:
    """The data as the student and as the teachers may see it: labels hidden as data.labels says (never a test
    clip's), and the split's parts restricted to what each may learn from."""
    labels = config.data.labels
    training = np.concatenate([by_subject.train, by_subject.val])
    keep = keep_labels(prepared.labels, prepared.subjects, training, labels.fraction, labels.seed, labels.subjects)
    student = replace(prepared, labels=hide_labels(prepared.labels, keep))
    teacher = prepared if labels.teachers == "all" else student
    return student, by_subject.labelled_by(student.labels), teacher, by_subject.labelled_by(teacher.labels)


def open_session(config: RunConfig, log=log_stderr, state_dir: Path | None = None) -> Session:
    load_plugins(config.plugins)
    if config.threads:
        torch.set_num_threads(config.threads)
    elif distributed.active():  # ranks on one machine share its cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    seed_everything(config.seed, config.deterministic)
    device = pick_device(config.device)
    tic = time.perf_counter()
    prepared = prepare(config.data, config.preprocess, log=log)
    for note in prepared.info.notes:
        log(f"note: {note}")
    by_subject = split_data(config, prepared)
    check_left_out(prepared, by_subject, log)
    student, split, teacher, teacher_split = label_views(config, prepared, by_subject)
    log(f"{prepared.info.name}: {len(prepared)} clips, {prepared.info.num_classes} classes, "
        f"prepared in {time.perf_counter() - tic:.1f} s; {split.describe()}")
    if teacher is not student:
        log(f"teachers learn from every training label: {teacher_split.describe()}")
    unseen = unlearnable_classes(student, split)
    if unseen:
        log(f"warning: no labelled training clip of {len(unseen)} class(es), which the student cannot learn from "
            f"its labels: {', '.join(unseen[:5])}{' ...' if len(unseen) > 5 else ''}")
    return Session(config, student, split, device, log, teacher, teacher_split, state_dir)


def check_left_out(prepared: Prepared, split: Split, log) -> None:
    """Rows the loader left out (data.folder.on_problem: skip) are logged one by one; a class left with fewer than
    two labelled training clips is an error."""
    left_out = prepared.info.left_out
    if not left_out:
        return
    log(f"{prepared.info.name}: {len(left_out)} problem row(s) left out (on_problem: skip):")
    for line in left_out:
        log(f"left out {line}")
    too_few = scarce_classes(prepared.labels, np.concatenate([split.train, split.val]), prepared.info.class_names)
    if too_few:
        raise DataError(f"{prepared.info.name}: with the {len(left_out)} problem rows left out, too few labelled "
                        f"training clips (at least 2 per class): {', '.join(too_few)}")


def unlearnable_classes(prepared: Prepared, split: Split) -> list[str]:
    """Classes without a labelled training or validation clip (present in test subjects only, say)."""
    seen = set(prepared.labels[np.concatenate([split.train, split.val])].tolist())
    return [name for index, name in enumerate(prepared.info.class_names) if index not in seen]
