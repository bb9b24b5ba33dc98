"""A whole run: prepare the data, split it, train the student, evaluate it once on the test split, and write
the run directory (config.yaml, metrics.json, history.csv, report.md, PNGs, checkpoints/).

The run is written into `<out>.incomplete` and renamed to `<out>` only when it has finished, so an interrupted
or failed run never leaves something that looks like a result.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from pskd import __version__
from pskd.config import RunConfig, dump_config
from pskd.data.batches import PairedClips
from pskd.data.cache import Prepared, prepare
from pskd.data.clip import SKELETON
from pskd.data.layouts import get_layout
from pskd.data.protocols import Split, make_split
from pskd.data.transforms import Augmenter, Standardizer
from pskd.errors import UserError
from pskd.evaluate.metrics import summarize
from pskd.evaluate.report import plot_confusion, plot_learning_curves, write_report
from pskd.models.zoo import InputSpec, build_model, count_parameters
from pskd.train.loop import cross_entropy, fit, pick_device, predict, seed_everything

INCOMPLETE = ".incomplete"


def default_out_dir(config: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.name}-{config.data.dataset}-{config.method}-seed{config.seed}-{stamp}"


def stage_run_dir(out: Path) -> Path:
    """Check that `out` can be written, and make the staging folder the run is written into."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: already exists and is not empty; choose another --out")
    staging = out.with_name(out.name + INCOMPLETE)
    try:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        probe = staging / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UserError(f"{out}: cannot write the run directory here ({err.strerror})") from None
    return staging


def _log(*args, file=None) -> None:
    print(*args, file=file if file is not None else sys.stderr, flush=True)


def split_data(config: RunConfig, prepared: Prepared) -> Split:
    return make_split(
        prepared.info.name, config.data.protocol, prepared.subjects, prepared.trials, config.data.val_subjects
    )


def input_spec(prepared: Prepared, fit_on: np.ndarray) -> InputSpec:
    """Shapes of every stream, and per-channel statistics of the inertial ones over the clips `fit_on` only."""
    inertial = [s for s in prepared.streams if s != SKELETON]
    mean, std = {}, {}
    for name in inertial:
        values = prepared.streams[name][fit_on]
        normal = Standardizer.fit(values.reshape(len(fit_on), values.shape[1], -1))
        mean[name], std[name] = normal.mean, normal.std
    return InputSpec(
        num_classes=prepared.info.num_classes,
        lengths={name: int(v.shape[1]) for name, v in prepared.streams.items()},
        channels={name: int(np.prod(prepared.streams[name].shape[2:])) for name in inertial},
        layout=get_layout(prepared.info.layout) if prepared.info.layout else None,
        mean=mean,
        std=std,
    )


def build_student(config: RunConfig, prepared: Prepared, fit_on: np.ndarray) -> torch.nn.Module:
    """The configured student, its input standardisation fitted on the clips `fit_on` (training clips only)."""
    spec = input_spec(prepared, fit_on)
    return build_model(config.student.name, config.student.streams, config.student.options, spec, "student")


def make_augmenter(config: RunConfig) -> Augmenter | None:
    if not config.augment.enabled:
        return None
    return Augmenter(**config.augment.model_dump(exclude={"enabled"}), seed=config.seed + 1)


def _save_checkpoint(path: Path, state: dict, meta: dict) -> None:
    """Tensors and plain values only, so the file loads with torch.load(weights_only=True)."""
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": state, "meta": meta}, tmp)
    tmp.replace(path)


def _write_history(history: list[dict], path: Path) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def run(config: RunConfig, out: Path | None = None, log=_log) -> tuple[Path, dict]:
    """Train and evaluate what `config` describes; return the run directory and its metrics."""
    out = Path(out) if out is not None else default_out_dir(config)
    staging = stage_run_dir(out)
    try:
        metrics = _run_into(config, staging, log)
        if out.exists():
            out.rmdir()  # an existing empty folder was allowed
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out, metrics


def _run_into(config: RunConfig, run_dir: Path, log) -> dict:
    started = time.perf_counter()
    (run_dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed, config.deterministic)
    device = pick_device(config.device)

    tic = time.perf_counter()
    prepared = prepare(config.data, config.preprocess, log=log)
    for note in prepared.info.notes:
        log(f"note: {note}")
    split = split_data(config, prepared)
    log(f"{prepared.info.name}: {len(prepared)} clips, {prepared.info.num_classes} classes, "
        f"prepared in {time.perf_counter() - tic:.1f} s; {split.describe()}")

    student = build_student(config, prepared, split.train)
    streams = {s: prepared.streams[s] for s in config.student.streams}
    parts = {name: PairedClips(streams, prepared.labels, getattr(split, name)) for name in ("train", "val", "test")}
    log(f"student {config.student.name}: {count_parameters(student):,} parameters, device {device}")
    criterion = cross_entropy(config.train.label_smoothing)
    result = fit(
        student, parts["train"], parts["val"], config.train, criterion, device, seed=config.seed,
        augment=make_augmenter(config), progress=config.progress, description=f"{config.method} student",
    )

    class_names = prepared.info.class_names
    evaluations = {}
    for tag, state in (("best", result.best_state), ("last", result.last_state)):
        student.load_state_dict(state)
        for part in ("val", "test"):
            _, logits = predict(student, parts[part], device)
            evaluations[(tag, part)] = summarize(parts[part].labels.numpy(), logits, class_names)
    delivered, delivered_state = evaluations[("best", "test")], result.best_state

    if config.train.refit:
        # The selected trajectory replayed on every training subject: same schedule, same seed, stopped at the
        # epoch validation chose. The validation subject is training data now, so this model has no validation.
        everyone = np.concatenate([split.train, split.val])
        seed_everything(config.seed, config.deterministic)
        student = build_student(config, prepared, everyone)
        refit = fit(
            student, PairedClips(streams, prepared.labels, everyone), None, config.train, criterion, device,
            seed=config.seed, augment=make_augmenter(config), progress=config.progress,
            description=f"{config.method} refit", stop_after=result.best_epoch,
        )
        student.load_state_dict(refit.last_state)
        _, logits = predict(student, parts["test"], device)
        delivered = summarize(parts["test"].labels.numpy(), logits, class_names)
        delivered_state = refit.last_state

    def short(figures: dict) -> dict:
        return {"accuracy": figures["accuracy"], "macro_f1": figures["macro_f1"]}

    metrics = {
        "name": config.name,
        "dataset": prepared.info.name,
        "protocol": split.protocol,
        "method": config.method,
        "seed": config.seed,
        "device": str(device),
        "pskd_version": __version__,
        "torch_version": torch.__version__,
        "split": {
            "train": len(split.train), "val": len(split.val), "test": len(split.test),
            "train_subjects": split.train_subjects, "val_subjects": split.val_subjects,
            "test_subjects": split.test_subjects,
        },
        "student": {
            "model": config.student.name,
            "streams": config.student.streams,
            "params": count_parameters(student),
            "epochs_trained": len(result.history),
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "train_seconds": result.seconds,
            "refit": config.train.refit,
            # the delivered model: best on validation, or its refit on every training subject
            "test": delivered,
            "val": short(evaluations[("best", "val")]),
            "val_last": short(evaluations[("last", "val")]),
            "test_best": short(evaluations[("best", "test")]),
            "test_last": short(evaluations[("last", "test")]),
        },
    }

    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir()
    meta = {
        "model": config.student.name, "streams": config.student.streams, "options": config.student.options,
        "num_classes": prepared.info.num_classes, "class_names": class_names,
        "seq_len": int(next(iter(streams.values())).shape[1]),
        "rates": {s: prepared.info.rates[s] for s in config.student.streams},
    }
    _save_checkpoint(checkpoints / "best.pt", delivered_state,
                     {**meta, "epoch": result.best_epoch, "refit": config.train.refit})
    _save_checkpoint(checkpoints / "last.pt", result.last_state, {**meta, "epoch": len(result.history)})
    _write_history(result.history, run_dir / "history.csv")
    title = f"{config.name}: {config.method} student on {prepared.info.name} {split.protocol}, seed {config.seed}"
    plot_confusion(metrics["student"]["test"]["confusion_matrix"], class_names, run_dir / "confusion_matrix.png",
                   f"{title}\ntest accuracy {100 * metrics['student']['test']['accuracy']:.2f} %")
    plot_learning_curves(result.history, result.best_epoch, run_dir / "learning_curves.png", title)
    metrics["wall_time_s"] = time.perf_counter() - started
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    write_report(metrics, class_names, run_dir / "report.md")
    return metrics
