"""The typed configuration tree, loaded from YAML and overridden from the command line with dotted keys.

Every section forbids unknown keys, so a misspelt option is an error rather than a silently ignored default.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pskd import limits
from pskd.config_files import apply_override, check_tree, fresh, parse_value, read_config_tree
from pskd.errors import ConfigError
from pskd.suggest import did_you_mean, validation_hint


class Section(BaseModel):
    # numbers are finite: an infinite learning rate or weight is refused, not trained with (build_config says where)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class LabelsConfig(Section):
    """Which training clips keep their label. The others stay in as unlabelled paired clips: distillation and
    self-training terms see them, the supervised term does not. Test labels are never hidden (nor used to train)."""

    # keep the labels of this fraction of the training clips, stratified by class and subject
    fraction: float = Field(1.0, gt=0, le=1)
    seed: int = Field(0, ge=0, lt=2**32)  # which clips keep their label; independent of the run's seed
    subjects: list[int] | None = None  # keep labels of these training subjects only (then `fraction` of them)
    # same: teachers learn from the labelled clips only; all: from every training clip's label (a camera-side
    # archive that was annotated), while the student's supervised term still sees only its own labels
    teachers: Literal["same", "all"] = "same"

    @property
    def hides_any(self) -> bool:
        """Whether any training label is hidden (else `teachers` changes nothing)."""
        return self.fraction < 1 or self.subjects is not None


class DataConfig(Section):
    dataset: str = "utd_mhad"
    data_dir: str | None = None  # falls back to $PSKD_DATA_DIR/<dataset>, then the dataset's own folder name
    protocol: str = "cross_subject"
    # Validation subjects are taken from the training subjects only. "auto": whole subjects, the highest-numbered
    # first, holding at least 15 % of the training clips (one subject on UTD-MHAD, two on Berkeley-MHAD).
    val_subjects: list[int] | Literal["auto"] = "auto"
    cache: bool = True
    cache_dir: str | None = None  # default: $PSKD_CACHE_DIR, else ~/.cache/pskd
    labels: LabelsConfig = LabelsConfig()
    # Every other key is a dataset's own section, data.<dataset> (e.g. data.folder.test_subjects), checked against
    # the options that dataset registered (pskd.data.registry); a plugin's dataset is checked once it is loaded.
    model_config = ConfigDict(extra="allow", validate_assignment=True)

    @model_validator(mode="after")
    def _check_dataset_sections(self) -> "DataConfig":
        try:
            self.resolve_sections()
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return self

    def resolve_sections(self) -> None:
        """Each data.<dataset> section of a registered dataset checked and filled with its defaults, and the chosen
        dataset's section added (a saved config shows every value). Run again once plugins are loaded."""
        from pskd.data.registry import lookup

        extra = self.__pydantic_extra__
        for name, raw in extra.items():
            dataset = lookup(name)
            if dataset is not None:
                extra[name] = dataset.parse_options(raw).model_dump()
            elif not isinstance(raw, dict):
                raise ConfigError(f"data.{name}: expected a dataset's section (a mapping), got {raw!r}")
        chosen = lookup(self.dataset)
        if chosen is not None and self.dataset not in extra:
            extra[self.dataset] = chosen.parse_options(None).model_dump()

    def options(self, name: str | None = None):
        """The options of dataset `name` (default: this config's dataset), defaults filled in."""
        from pskd.data.registry import get_dataset

        name = name or self.dataset
        return get_dataset(name).parse_options((self.__pydantic_extra__ or {}).get(name))

    def unknown_sections(self) -> list[str]:
        """Keys of this section that name no registered dataset (checked once plugins are loaded)."""
        from pskd.data.registry import lookup

        return [name for name in (self.__pydantic_extra__ or {}) if lookup(name) is None]


class PreprocessConfig(Section):
    # samples every clip of a body-worn sensor stream is resampled to (accelerometer, gyroscope, other units)
    sensor_length: int = Field(128, ge=8, le=limits.MAX_CLIP_SAMPLES)
    skeleton_length: int = Field(64, ge=4, le=limits.MAX_CLIP_SAMPLES)
    resample: Literal["linear", "cubic"] = "linear"
    antialias: bool = True  # low-pass before down-sampling a stream
    skeleton_center: Literal["hip", "spine", "none"] = "hip"
    skeleton_scale: bool = True  # divide by the mean torso length of the clip
    # keep only these channels (0-based) of a sensor stream, e.g. {accelerometer: [0]}: a poorer watch (one axis)
    # simulated from a full recording. A stream left with other than xyz triples is not rotated by augmentation.
    channels: dict[str, list[int]] = {}

    @model_validator(mode="after")
    def _check_channels(self) -> "PreprocessConfig":
        for stream, kept in self.channels.items():
            if stream == "skeleton":
                raise ValueError("preprocess.channels: the skeleton's joints are not channels; name a sensor stream")
            if not kept or len(set(kept)) != len(kept) or min(kept) < 0:
                raise ValueError(f"preprocess.channels.{stream}: distinct channel numbers from 0, at least one")
        return self

    @model_validator(mode="before")
    @classmethod
    def _former_name(cls, values):
        """`accelerometer_length`, the name before 0.2 (it set every sensor stream, not the accelerometer only),
        is read as sensor_length, so runs saved with it still resume."""
        if isinstance(values, dict) and "accelerometer_length" in values:
            values = dict(values)
            former = values.pop("accelerometer_length")
            if "sensor_length" in values:
                raise ValueError("preprocess: give sensor_length only (accelerometer_length is its former name)")
            values["sensor_length"] = former
        return values


class AugmentConfig(Section):
    """Defaults measured on UTD-MHAD cross-subject validation (docs/results.md, "Choices and their measurements")."""

    enabled: bool = True
    scale: float = Field(0.2, ge=0, lt=1)  # amplitude factor drawn from [1 - scale, 1 + scale]
    jitter: float = Field(0.02, ge=0)  # additive Gaussian noise, in the stream's units (g)
    rotation_deg: float = Field(30.0, ge=0, le=180)  # random rotation of the sensor frame
    time_crop: float = Field(0.1, ge=0, lt=1)  # keep a random window of at least 1 - time_crop of the clip


class ModelConfig(Section):
    name: str = "compact_cnn"
    streams: list[str] = ["accelerometer"]
    options: dict[str, Any] = {}  # passed to the model's constructor; checked against its signature
    # start from these weights (a run directory's delivered student, or a .pt) instead of random ones
    init_from: str | None = None


class NamedClass(Section):
    """A torch.optim optimizer or torch.optim.lr_scheduler scheduler by its class name, with keyword options."""

    name: str
    options: dict[str, Any] = {}


def _named(value, kind: str):
    """A name stays a name (pskd's own names, or a torch class's); a mapping becomes a NamedClass (one with only
    the name of one of pskd's own, that name); checked against torch (pskd.optim)."""
    from pskd import optim

    if isinstance(value, dict):
        unknown = [key for key in value if key not in NamedClass.model_fields]
        if unknown:
            hint = did_you_mean(unknown[0], NamedClass.model_fields)
            raise ValueError(f"{unknown[0]}: unknown key{hint} (expected a name, or {{name: ..., options: ...}})")
        if not isinstance(value.get("name"), str):
            raise ValueError(f"{{name: ..., options: ...}} needs the {kind}'s name")
        if not isinstance(value.get("options", {}), dict):
            raise ValueError("options: a mapping of keyword arguments")
        built_in = optim.BUILT_IN_OPTIMIZERS if kind == "optimizer" else optim.BUILT_IN_SCHEDULES
        value = value["name"] if value["name"] in built_in and not value.get("options") else NamedClass(**value)
    elif not isinstance(value, (str, NamedClass)):
        raise ValueError(f"expected a name, or {{name: ..., options: ...}} (got {str(value)[:80]!r})")
    optim.check(kind, value)
    return value


@functools.lru_cache(maxsize=256)
def _check_schedule(spec: str, epochs: int) -> None:
    """A torch schedule stepped through `epochs` epochs, once per distinct schedule (a sweep's grid points share
    it); ValueError when torch refuses it."""
    from pskd import optim

    optim.check("schedule", NamedClass(**json.loads(spec)), epochs)


class TrainConfig(Section):
    epochs: int = Field(120, ge=1, le=limits.MAX_EPOCHS)
    batch_size: int = Field(32, ge=1, le=limits.MAX_BATCH_SIZE)
    # adamw, adam, sgd (momentum 0.9, Nesterov), or any torch.optim class: RAdam, {name: SGD, options: {...}}
    optimizer: str | NamedClass = "adamw"
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    # cosine, constant, or any torch.optim.lr_scheduler class, stepped once an epoch: {name: StepLR, options: ...};
    # every schedule starts with the linear warm-up of warmup_epochs
    schedule: str | NamedClass = "cosine"
    warmup_epochs: int = Field(3, ge=0, le=limits.MAX_EPOCHS)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    grad_clip: float | None = Field(5.0, gt=0)
    patience: int | None = Field(None, ge=1, le=limits.MAX_EPOCHS)  # early stopping on the selection metric; None trains all epochs
    # Which epoch is delivered: the best on validation by accuracy (ties by loss) or by loss, or the last one
    # (a fixed schedule; validation is then only watched, for when it is too small to choose by).
    select: Literal["val_accuracy", "val_loss", "last"] = "val_accuracy"
    # Exponential moving average of the weights (decay per step); the averaged model is the one validated,
    # selected and saved. None trains and evaluates the raw weights.
    ema: float | None = Field(0.995, gt=0, lt=1)
    # After selection, replay the selected trajectory (same seed and schedule, stopped at the selected epoch) on
    # training + validation subjects; that model is the one delivered and reported as student.test.
    refit: bool = True
    # With unlabelled clips in the batches: the share of each epoch given to labelled clips (repeated to reach it);
    # None mixes them as they come (with a quarter labelled, a quarter of each batch on average).
    labelled_share: float | None = Field(None, gt=0, lt=1)

    @field_validator("optimizer", mode="before")
    @classmethod
    def _check_optimizer(cls, value):
        return _named(value, "optimizer")

    @field_validator("schedule", mode="before")
    @classmethod
    def _check_schedule(cls, value):
        return _named(value, "schedule")

    @model_validator(mode="after")
    def _check_stopping(self) -> "TrainConfig":
        from pskd.optim import split, takes_weight_decay

        if self.weight_decay and not takes_weight_decay(self.optimizer):
            raise ValueError(f"optimizer {split(self.optimizer)[0]} takes no weight decay; set weight_decay: 0")
        if self.select == "last" and self.patience is not None:
            raise ValueError("patience stops early on the validation metric; with select: last there is none")
        return self

    @model_validator(mode="after")
    def _schedule_over_the_epochs(self) -> "TrainConfig":
        """A torch schedule stepped through every epoch once, so that one that fails late (OneCycleLR with fewer
        total_steps than epochs) fails here."""
        if not isinstance(self.schedule, str):
            _check_schedule(json.dumps(self.schedule.model_dump(), sort_keys=True), self.epochs)
        return self

class TeacherConfig(ModelConfig):
    """A teacher: a model over any streams (skeleton, other sensors, both), trained before the student."""

    name: str = "skeleton_gcn"
    streams: list[str] = ["skeleton"]
    train: TrainConfig = TrainConfig()
    # Schedule A (teacher-assistant chain): train this teacher with cross-entropy plus KD from that teacher.
    distill_from: str | None = None
    # load this teacher from an earlier run (its directory, or a teacher's .pt) instead of training it
    checkpoint: str | None = None


class StageConfig(Section):
    """From epoch `start` on, the student learns from `teachers` with the registered loss term(s) `loss`."""

    start: int = Field(1, ge=1, le=limits.MAX_EPOCHS)
    teachers: list[str]
    loss: str | list[str] = "acs"


# keys of the distill section that belonged to one built-in term, and where they are read now (terms.<term>.<key>)
FORMER_TERM_KEYS = {
    "dkd_alpha": ("dkd", "alpha"), "dkd_beta": ("dkd", "beta"),
    "relational_distance": ("dask", "distance"), "relational_angle": ("dask", "angle"),
    "acs_mode": ("acs", "mode"), "acs_ground_truth": ("acs", "ground_truth"), "class_embedding": ("acs", "class_embedding"),
    "unlabelled_threshold": ("acs", "unlabelled_threshold"), "unlabelled_agree": ("acs", "unlabelled_agree"),
}


class DistillConfig(Section):
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(1.0, ge=0)  # weight of the soft-label term
    beta: float = Field(0.5, ge=0)  # weight of the embedding (semantic / relational) terms
    teacher: str | None = None  # the single teacher of kd, dkd, dask (default: the first teacher listed)
    assistant: str | None = None  # takd's assistant (default: a teacher with distill_from set)
    # pskd's progressive learning: A = teacher-assistant chain (teachers distil into each other first, as their
    # distill_from says), B = curriculum as well (the student learns from `nearest` until switch_epoch, then from
    # all teachers), none = independent teachers, all used from the start.
    progressive: Literal["A", "B", "none"] = "A"
    nearest: str | None = None  # default: the teacher that reads the student's streams too
    switch_epoch: int = Field(40, ge=2, le=limits.MAX_EPOCHS)
    stages: list[StageConfig] | None = None  # spelt out, these replace the method's own stages
    # Teacher outputs for training clips from teachers that did not train on them (k folds over the training
    # subjects; 0 = off). Costs k extra trainings of every teacher.
    cross_fit_folds: int = Field(0, ge=0, le=limits.MAX_CROSS_FIT_FOLDS)
    # Do no harm: also train the student without teachers, and deliver it instead when validation prefers it:
    # clear: only on a clear win (one-sided sign test at 5 % over the validation clips the two students disagree on;
    # with fewer than 5 validation clips no win can be clear, so the plain student is not trained); any: on any win;
    # win: the other way round, the distilled student only on its own clear win (the most cautious: with few
    # validation clips the plain student is delivered); off: never (true and false, the former values, read as any
    # and off)
    gate: Literal["clear", "win", "any", "off"] = "clear"
    # ACS on unlabelled clips when its teachers are not to be trusted there. auto: if the teachers agree, one at
    # least 90 % confident, on fewer than a third of the unlabelled clips (teachers that learnt from few labels),
    # soft ACS with unlabelled_threshold 0.9 and unlabelled_agree, as measured on the blind-wrist synthetic; off:
    # the settings as given
    unlabelled_filter: Literal["auto", "off"] = "auto"
    @model_validator(mode="before")
    @classmethod
    def _former_term_keys(cls, values):
        """Settings of one built-in term, once keys of this section, read into that term's own section
        (distill.terms.<term>): distill.dkd_alpha as distill.terms.dkd.alpha, and so on; both given is an error."""
        if not isinstance(values, dict) or not any(key in values for key in FORMER_TERM_KEYS):
            return values
        values, terms = dict(values), values.get("terms")
        terms = {name: dict(options) if isinstance(options, dict) else options for name, options in terms.items()} \
            if isinstance(terms, dict) else {} if terms is None else terms
        if not isinstance(terms, dict):
            return values  # reported as the type error it is
        for former, (term, key) in FORMER_TERM_KEYS.items():
            if former not in values:
                continue
            own = terms.setdefault(term, {})
            if not isinstance(own, dict):
                return values
            if key in own:
                raise ValueError(f"distill: give terms.{term}.{key} only ({former} is its former name)")
            own[key] = values.pop(former)
        values["terms"] = terms
        return values

    @field_validator("gate", mode="before")
    @classmethod
    def _former_gate(cls, value):
        return {True: "any", False: "off"}.get(value, value) if isinstance(value, bool) else value

    # registered terms added to every stage of a distillation method (e.g. [fixmatch], [contrastive])
    add_terms: list[str] = []
    # each registered term's own settings, checked against its options (e.g. fixmatch: {threshold: 0.8})
    terms: dict[str, dict[str, Any]] = {}


SEED = Field(0, ge=0, lt=2**63)  # what every generator (Python, numpy, torch) accepts


class LoggingConfig(Section):
    """Where a run's per-epoch figures go besides train.log and history/ (both always written)."""

    tensorboard: bool = False  # event files under <run>/tensorboard/ (needs the tensorboard extra)


class PluginFile(Section):
    """A plugin as a run records it: the file and its SHA-256, which it must still have to be loaded."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class RunConfig(Section):
    # part of the default run folder's name: letters, digits, '.', '_' and '-' only, so it cannot leave runs/
    name: str = Field("run", pattern=r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")
    method: str = "ce"  # a registered method (pskd.distill.methods)
    seed: int = SEED
    deterministic: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, le=limits.MAX_THREADS)  # torch intra-op threads; None: torch's default
    progress: bool = True
    # Python files imported first: the losses, methods and models they register become names a config can use
    # (a run's config.yaml records each as {path, sha256}; such an entry loads only a file of that digest)
    plugins: list[str | PluginFile] = []
    logging: LoggingConfig = LoggingConfig()
    data: DataConfig = DataConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    augment: AugmentConfig = AugmentConfig()
    student: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    teachers: dict[str, TeacherConfig] = {}
    distill: DistillConfig = DistillConfig()

    def teacher_order(self) -> list[str]:
        """Teachers in training order: a teacher after the one it distils from, otherwise as listed."""
        return _teacher_order(self.teachers)

    @model_validator(mode="after")
    def _check(self) -> "RunConfig":
        if isinstance(self.data.val_subjects, list) and not self.data.val_subjects:
            raise ValueError("data.val_subjects must name at least one subject, or be 'auto'")
        names = list(self.teachers)
        for name, teacher in self.teachers.items():
            if teacher.distill_from is not None and teacher.distill_from not in names:
                raise ValueError(f"teachers.{name}.distill_from: '{teacher.distill_from}' is not one of {names}")
        self.teacher_order()  # no cycle of distill_from
        for key in ("teacher", "assistant", "nearest"):
            value = getattr(self.distill, key)
            if value is not None and value not in self.teachers:
                raise ValueError(f"distill.{key}: '{value}' is not one of the teachers {names}")
        for i, stage in enumerate(self.distill.stages or []):
            unknown = [t for t in stage.teachers if t not in self.teachers]
            if unknown:
                raise ValueError(f"distill.stages.{i}.teachers: {unknown} are not among {names}")
        if self.distill.stages is not None and (not self.distill.stages or self.distill.stages[0].start != 1):
            raise ValueError("distill.stages: the first stage must start at epoch 1")
        return self


def _teacher_order(teachers: dict) -> list[str]:
    order: list[str] = []
    for name in teachers:
        chain = []
        while name is not None and name not in order:
            if name in chain:
                raise ValueError(f"teachers: distill_from makes a cycle ({' -> '.join([*chain, name])})")
            chain.append(name)
            name = teachers[name].distill_from
        order.extend(reversed(chain))
    return order


def _format_validation(err: ValidationError, source: str) -> str:
    problems = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        hint = validation_hint(RunConfig, item)
        if item["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown key{hint}")
        elif item["type"] == "value_error":  # our own checks name their key in full
            text = item["msg"].removeprefix("Value error, ")
            problems.append(text if text.split(":")[0].startswith(where) or where == "(top level)" else f"{where}: {text}")
        else:
            got = item.get("input")
            shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
            problems.append(f"{where}: {item['msg']}{shown}{hint}")
    return f"{source}: " + "; ".join(problems)


def build_config(tree: dict, overrides: list[str] | tuple[str, ...] = (), source: str = "config") -> RunConfig:
    """A checked RunConfig from a tree and `key=value` overrides; the tree given is never changed (it is copied
    whole, so an override of one section cannot reach another that shared a dictionary with it)."""
    check_tree(tree, source)
    tree = fresh(tree)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected key=value")
        key, _, text = item.partition("=")
        if key.count(".") >= limits.NESTING_DEPTH:
            raise ConfigError(f"--set {key.strip()[:80]}...: a key of more than {limits.NESTING_DEPTH} levels")
        value = parse_value(text, f"--set {key.strip()}")
        check_tree(value, f"--set {key.strip()}")
        apply_override(tree, key.strip(), value)
    if overrides:
        check_tree(tree, f"{source} (with --set overrides)")  # a key's levels and its value's together
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        label = source if not overrides else f"{source} (with --set overrides)"
        raise ConfigError(_format_validation(err, label)) from None


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """The RunConfig of a YAML file (its `_base_` files merged under it) with `key=value` overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    return build_config(read_config_tree(path), overrides, source=str(path))


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
