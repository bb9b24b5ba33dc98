"""Named train/test protocols, and the validation split drawn from the training subjects only."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from pskd.data.registry import get_dataset
from pskd.errors import ConfigError
from pskd.suggest import did_you_mean


@dataclass
class Split:
    """Indices of the clips each part uses. The test part is read once, at the end of a run."""

    protocol: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    train_subjects: list[int]
    val_subjects: list[int]
    test_subjects: list[int]
    # training subjects' clips without a label: distillation and self-training terms use them, the supervised
    # term never does. unlabelled_val: those of the validation subjects (used only once validation is over, by
    # the refit on every training subject)
    unlabelled: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    unlabelled_val: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def describe(self) -> str:
        text = (
            f"{self.protocol}: train {len(self.train)} clips (subjects {self.train_subjects}), "
            f"val {len(self.val)} (subjects {self.val_subjects}), test {len(self.test)} (subjects {self.test_subjects})"
        )
        if len(self.unlabelled) or len(self.unlabelled_val):
            text += f"; unlabelled {len(self.unlabelled)} + {len(self.unlabelled_val)} of the validation subjects"
        return text

    def labelled_by(self, labels: np.ndarray) -> "Split":
        """This split as `labels` sees it (UNLABELLED < 0): labelled clips train, validate and test; the training
        subjects' other clips become unlabelled; a test clip without a label is not tested."""
        known = labels >= 0
        every_train = np.concatenate([self.train, self.unlabelled])
        every_val = np.concatenate([self.val, self.unlabelled_val])
        split = replace(
            self, train=np.sort(every_train[known[every_train]]), val=np.sort(every_val[known[every_val]]),
            test=self.test[known[self.test]], unlabelled=np.sort(every_train[~known[every_train]]),
            unlabelled_val=np.sort(every_val[~known[every_val]]),
        )
        if not len(split.train):
            raise ConfigError("no labelled training clip is left (data.labels)")
        if not len(split.val):
            raise ConfigError(f"the validation subjects {self.val_subjects} have no labelled clip; choose "
                              "data.val_subjects among the labelled subjects")
        if not len(split.test):
            raise ConfigError(f"the test subjects {self.test_subjects} have no labelled clip to test on")
        return split


def odd_even_subjects(subjects: np.ndarray, trials: np.ndarray, **_) -> np.ndarray:
    """Odd subjects train, even subjects test: UTD-MHAD's standard cross-subject protocol (1,3,5,7 / 2,4,6,8)."""
    return subjects % 2 == 1


def first_half_trials(subjects: np.ndarray, trials: np.ndarray, **_) -> np.ndarray:
    """Trials 1-2 train, 3-4 test (every subject in both)."""
    return trials <= 2


MIN_TRAINING_CLIPS = 2  # a class needs this many labelled clips among the training subjects to be learnt


def scarce_classes(labels: np.ndarray, training: np.ndarray, class_names: list[str]) -> list[str]:
    """'name: n' for each class with fewer than MIN_TRAINING_CLIPS labelled clips among the clips `training`
    (the training subjects' clips, validation included)."""
    counts = np.bincount(labels[training][labels[training] >= 0], minlength=len(class_names))
    return [f"'{name}': {int(counts[i])}" for i, name in enumerate(class_names) if counts[i] < MIN_TRAINING_CLIPS]


def protocol_names(dataset: str) -> list[str]:
    return sorted(get_dataset(dataset).protocols)


AUTO_VALIDATION_SHARE = 0.15


def auto_validation(training_subjects: np.ndarray, ordered: list[int]) -> list[int]:
    """The highest-numbered training subjects holding at least AUTO_VALIDATION_SHARE of the training clips."""
    chosen: list[int] = []
    for subject in reversed(ordered[1:]):  # the first subject always trains
        chosen.append(subject)
        if np.isin(training_subjects, chosen).mean() >= AUTO_VALIDATION_SHARE:
            break
    return sorted(chosen) or ordered[-1:]


def make_split(
    dataset: str,
    protocol: str,
    subjects: np.ndarray,
    trials: np.ndarray,
    val_subjects: list[int] | str = "auto",
    options: dict | None = None,
) -> Split:
    """Apply a named protocol, then hold out validation subjects from its training part.

    "auto" holds out whole subjects, from the highest-numbered down, until they hold at least 15 % of the training
    clips (at least one subject, and never every one). Validation clips are never test clips, and for a protocol
    whose test part shares subjects with training (trial_split) validation still uses training clips only.
    """
    rules = get_dataset(dataset).protocols
    if protocol not in rules:
        raise ConfigError(f"unknown protocol '{protocol}' for {dataset}{did_you_mean(protocol, rules)}; known: "
                          f"{', '.join(sorted(rules))}")
    options = dict(options or {})
    scenes = options.pop("scenes", None)
    is_train = rules[protocol](subjects, trials, scenes=scenes, options=options)
    train_subjects = sorted(int(s) for s in np.unique(subjects[is_train]))
    if val_subjects == "auto":
        chosen = auto_validation(subjects[is_train], train_subjects)
    else:
        chosen = sorted(set(int(s) for s in val_subjects))
        strangers = [s for s in chosen if s not in train_subjects]
        if strangers:
            raise ConfigError(
                f"data.val_subjects {strangers} are not training subjects of {protocol} ({train_subjects})"
            )
    if len(chosen) >= len(train_subjects):
        raise ConfigError(f"data.val_subjects {chosen} would leave no subject to train on")
    is_val = is_train & np.isin(subjects, chosen)
    index = np.arange(len(subjects))
    return Split(
        protocol=protocol,
        train=index[is_train & ~is_val],
        val=index[is_val],
        test=index[~is_train],
        train_subjects=[s for s in train_subjects if s not in chosen],
        val_subjects=chosen,
        test_subjects=sorted(int(s) for s in np.unique(subjects[~is_train])),
    )
