"""A whole run: prepare the data, split it, train (or load) the teachers, train the student, evaluate it once on
the test split, and write the run directory (config.yaml, metrics.json, history.csv, report.md, PNGs,
checkpoints/). Its parts live in pskd.training: session (data and labels), recipe (train, select, refit, evaluate),
teachers, student, outputs.

The run is written into `<out>.incomplete` and renamed to `<out>` only when it has finished, so an interrupted
or failed run never leaves something that looks like a result.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import torch

from pskd.bounded import loads_json, read_text
from pskd.config import DataConfig, PluginFile, RunConfig, dump_config
from pskd.console import RunLog, log_stderr, require_tensorboard
from pskd.data.cache import cache_dir, prepare
from pskd.data.registry import dataset_names, get_dataset, resolve_data_dir
from pskd.distill.methods import check_method, teachers_used
from pskd.errors import ConfigError, TrainingDiverged, UserError
from pskd.fileio import WriteError, write_file
from pskd.limits import METADATA_BYTES
from pskd.models.zoo import model_names
from pskd.overwrite import Read, reads
from pskd.plugins import load_plugins, record
from pskd.rundir import abandon, finish, is_finished, resume_run_dir, stage_run_dir, staging_of
from pskd.suggest import did_you_mean
from pskd.teacher_checkpoints import checkpoint_file
from pskd.training import distributed
from pskd.training.loop import pick_device
from pskd.training.outputs import write_run
from pskd.training.session import open_session
from pskd.training.student import train_student
from pskd.training.teachers import TrainedTeacher, train_teachers

STATE = "state"  # per-epoch checkpoints of every training in the run, while it runs


def default_out_dir(config: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.name}-{config.data.dataset}-{config.method}-seed{config.seed}-{stamp}"


def check_names(config: RunConfig, for_run: bool = True) -> None:
    """Model names of the student and every teacher, known to the zoo; the method and its terms; with for_run,
    what a run needs besides (tensorboard when logged to, the teachers' checkpoints)."""
    load_plugins(config.plugins)
    models = {"student": config.student.name,
              **{f"teachers.{name}": teacher.name for name, teacher in config.teachers.items()}}
    for where, name in models.items():
        if name not in model_names():
            raise ConfigError(f"{where}.name: unknown model '{name}'{did_you_mean(name, model_names())}; known: "
                              f"{', '.join(model_names())}")
    check_method(config)
    check_dataset(config)
    if not for_run:
        return
    if config.logging.tensorboard:
        require_tensorboard()  # before any folder is made
    for name, teacher in config.teachers.items():
        if teacher.checkpoint and teachers_used(config):
            checkpoint_file(teacher.checkpoint, name)  # there, before any data is read
            if config.distill.cross_fit_folds >= 2:
                raise ConfigError(f"teachers.{name}.checkpoint: a loaded teacher cannot be cross-fitted "
                                  "(distill.cross_fit_folds trains it again on folds)")


def check_dataset(config: RunConfig) -> None:
    """The dataset, its protocol and every data.<dataset> section, against the registry (plugins loaded)."""
    dataset = get_dataset(config.data.dataset)
    for name in config.data.unknown_sections():
        raise ConfigError(f"data.{name}: unknown key{did_you_mean(name, [*dataset_names(), *DataConfig.model_fields])} "
                          f"(no dataset of that name; known: {', '.join(dataset_names())})")
    config.data.resolve_sections()
    if config.data.protocol not in dataset.protocols:
        raise ConfigError(f"data.protocol: unknown protocol '{config.data.protocol}' for {dataset.name}"
                          f"{did_you_mean(config.data.protocol, dataset.protocols)}; known: "
                          f"{', '.join(sorted(dataset.protocols))}")


def run(config: RunConfig, out: Path | None = None, log=log_stderr,
        teachers: dict[str, "TrainedTeacher"] | None = None, resume: bool = False,
        overwrite: bool = False, command: str = "train", inputs: Sequence[Read] = ()) -> tuple[Path, dict]:
    """Train and evaluate what `config` describes; return the run directory and its metrics.

    teachers: already trained teachers to reuse (a sweep trains them once per seed); by default they are trained
    here as the config says. Every training checkpoints each epoch under `<out>.incomplete/state/`; a run killed
    on the way continues from there with resume=True (`pskd train --resume`), to the same figures; one killed
    after it had written everything is only given its name. overwrite: replace a run (finished or interrupted)
    already at `out`, which must be a pskd run that no input of this run touches (pskd.overwrite); without it,
    one there is an error. command: the command named in the run's marker; inputs: paths it reads besides those
    the config names (the config file).
    """
    check_names(config)  # before any data is read or any folder made
    if resume and out is None:
        raise UserError("resuming needs the run directory")
    distributed.init(pick_device(config.device))
    if distributed.active():  # rank 0 prepares (and caches) the data first; the others then read the cache
        if distributed.is_main():
            prepare(config.data, config.preprocess, log=log)
        distributed.barrier()
    if not distributed.is_main():
        return _run_as_helper(config, out, log, teachers)
    out = Path(out) if out is not None else default_out_dir(config)
    if resume:
        staging, lock = resume_run_dir(out, config)
    else:
        staging, lock = stage_run_dir(out, overwrite, "run", command, [*inputs, *run_inputs(config)])
    finished = resume and is_finished(staging)
    _share_run_dir(out, finished)
    if finished:  # everything was written before a kill or a failed rename
        metrics = _written_metrics(staging, lock)
        log(f"{out}: the run had finished; giving it its name")
        finish(staging, out, lock, STATE)
        return out, metrics
    run_log = RunLog(staging / "train.log", log, held=resume, tensorboard=config.logging.tensorboard)
    try:
        metrics = _run_into(config, staging, run_log, teachers, state_dir=staging / STATE)
        distributed.barrier()  # every rank is done with the checkpoints
        run_log.keep()
        run_log.close()
    except KeyboardInterrupt:
        run_log.keep()
        run_log("interrupted: the checkpoints are kept; continue with: pskd train --resume " + str(out))
        run_log.close()
        lock.release()
        raise
    except (WriteError, OSError) as err:  # a full disk, a read-only file system: keep what was checkpointed
        raise _write_failed(err, staging, lock, run_log, resume, out, log) from None
    except TrainingDiverged as err:  # a NaN loss: stopped, with the checkpoints of the epochs before it
        raise _diverged(err, staging, lock, run_log, resume, out, log) from None
    except BaseException:
        run_log.close()
        abandon(staging, lock, not resume, out, log)
        raise
    finish(staging, out, lock, STATE)  # a failure here keeps the finished run in the staging folder
    return out, metrics


def run_inputs(config: RunConfig) -> list[Read]:
    """What a run reads besides its config: the data folder and data root, the cache, the checkpoints its
    models start from, the teachers it loads (what --overwrite may never remove)."""
    found: list[tuple[object, str]] = []
    for where, model in (("student", config.student), *((f"teachers.{n}", t) for n, t in config.teachers.items())):
        if model.init_from:
            found.append((_checkpoint_in(model.init_from, Path("checkpoints") / "best.pt"), f"{where}.init_from"))
    for name, teacher in config.teachers.items():
        if teacher.checkpoint:
            found.append((_checkpoint_in(teacher.checkpoint, Path("teachers") / f"{name}.pt"),
                          f"teachers.{name}.checkpoint"))
    return [*data_inputs(config), *reads(*found)]


def data_inputs(config: RunConfig) -> list[Read]:
    """The data folder and data root a config's data section reads, and the cache."""
    found: list[tuple[object, str]] = []
    dataset = get_dataset(config.data.dataset)
    if dataset.needs_data_dir:
        try:
            root = resolve_data_dir(dataset.name, config.data.data_dir)
            found.append((dataset.root(root), "the data folder"))
            found.append((root, "the data root"))
        except UserError:
            pass  # no data folder: the run fails on it later, with its own message
    if config.data.cache:
        found.append((cache_dir(config.data), "the cache folder"))
    return reads(*found)


def _checkpoint_in(path: str, inside: Path) -> Path:
    """A run directory named as a checkpoint means this file of it."""
    found = Path(path).expanduser()
    return found / inside if found.is_dir() else found


def _written_metrics(staging: Path, lock) -> dict:
    try:
        return loads_json(read_text(staging / "metrics.json", METADATA_BYTES))
    except (OSError, ValueError):
        lock.release()
        raise UserError(f"{staging / 'metrics.json'}: unreadable; move the folder away to train the run "
                        "again") from None


def _write_failed(err: OSError | WriteError, staging: Path, lock, run_log, resume: bool, out: Path, log) -> WriteError:
    """The error to report when the run could not write: its checkpoints are kept, to resume once there is room
    (a fresh run with no checkpoint yet leaves nothing behind)."""
    try:
        run_log.close()
    except OSError:
        pass  # the log's own last lines may not fit either
    message = str(err) if isinstance(err, WriteError) else f"{err.filename or staging}: cannot write ({err.strerror})"
    if resume or any((staging / STATE).glob("*.pt")):
        lock.release()
        return WriteError(f"{message}; the run so far is kept: free some space, then continue it with: "
                          f"pskd train --resume {out}")
    abandon(staging, lock, True, out, log)
    return WriteError(message)


def _diverged(err: TrainingDiverged, staging: Path, lock, run_log, resume: bool, out: Path, log) -> TrainingDiverged:
    """The error to report when a training's loss became NaN or infinite: the checkpoints so far are kept in the
    staging folder (a fresh run with none yet leaves nothing behind)."""
    if resume or any((staging / STATE).glob("*.pt")):
        run_log.keep()
        run_log.close()
        lock.release()
        return TrainingDiverged(f"{err}; the checkpoints up to then are kept in {staging}")
    run_log.close()
    abandon(staging, lock, True, out, log)
    return err


def _share_run_dir(out: Path | None, finished: bool = False) -> tuple[Path | None, bool]:
    """Rank 0 tells the other ranks where the run is written (its default name holds a time stamp), and whether
    it had finished already (then there is nothing to train)."""
    if not distributed.active():
        return out, finished
    names = [str(out) if out is not None else None, finished]
    torch.distributed.broadcast_object_list(names, src=0)
    return Path(names[0]), bool(names[1])


def _run_as_helper(config: RunConfig, out: Path | None, log, teachers) -> tuple[Path, dict]:
    """A rank other than 0: the same training, reading rank 0's checkpoints to resume, writing nothing of the run
    (its own copy of the run directory goes to a temporary folder, deleted at the end)."""
    out, finished = _share_run_dir(out)
    if finished:
        return out, {}
    staging = staging_of(out)
    with tempfile.TemporaryDirectory(prefix="pskd-rank") as private:
        metrics = _run_into(config, Path(private), lambda *a, **k: None, teachers, state_dir=staging / STATE)
        distributed.barrier()
    return out, metrics


def recorded_config(config: RunConfig) -> RunConfig:
    """The config as a run records it: each plugin as the file read and its SHA-256."""
    if not config.plugins:
        return config
    return config.model_copy(update={"plugins": [PluginFile(**entry) for entry in record(config.plugins)]})


def _time_before(run_dir: Path) -> float:
    """Seconds an interrupted run had spent: from the writing of its config.yaml to its last checkpoint (0 for a
    fresh run). The epoch a kill cut short is work lost, not counted."""
    config, stamps = run_dir / "config.yaml", [p.stat().st_mtime for p in (run_dir / STATE).glob("*.pt")]
    return max(0.0, max(stamps) - config.stat().st_mtime) if stamps and config.is_file() else 0.0


def _run_into(config: RunConfig, run_dir: Path, log, teachers: dict[str, TrainedTeacher] | None = None,
              state_dir: Path | None = None) -> dict:
    """Train and write one run into run_dir; each training checkpoints into state_dir and resumes from it."""
    before = _time_before(run_dir)
    started = time.perf_counter() - before
    if not before:  # a resumed run keeps the config.yaml it started with (and its time)
        write_file(run_dir / "config.yaml", dump_config(recorded_config(config)), root=run_dir)
    session = open_session(config, log, state_dir)
    if teachers is None:  # a cross-entropy student uses no teacher: none is trained for it
        teachers = train_teachers(session) if teachers_used(config) else {}
    student = train_student(session, teachers)
    return write_run(session, run_dir, teachers, student, started)
