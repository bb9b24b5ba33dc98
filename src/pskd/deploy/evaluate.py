"""`pskd evaluate`: a trained model (a run directory, a .pt checkpoint or an exported .onnx file) on a dataset's
split, with the same figures a run writes: metrics.json, report.md, confusion_matrix.png and predictions.csv.

The clips are prepared as the model's training clips were: resampled to the card's clip length (and, for a run
directory, with the run's own preprocessing). The dataset's classes must be the model's, in the same order.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

from pskd.config import RunConfig, build_config, load_config
from pskd.console import log_stderr
from pskd.data.cache import prepare
from pskd.deploy.card import ModelCard
from pskd.deploy.predict import open_classifier
from pskd.errors import UserError
from pskd.evaluate.metrics import summarize
from pskd.evaluate.report import plot_confusion
from pskd.fileio import StagedText, write_file
from pskd.overwrite import Read, reads
from pskd.pipeline import data_inputs
from pskd.rundir import abandon, finish, stage_run_dir
from pskd.training.session import split_data

SPLITS = ("test", "val", "all")


def evaluation_config(model_path: Path, card: ModelCard, overrides: list[str]) -> RunConfig:
    """The run's own config for a run directory (its data and preprocessing), else the defaults; then the
    overrides, and the clip length the model reads."""
    saved = Path(model_path) / "config.yaml"
    fixed = [f"preprocess.sensor_length={card.seq_len}"]
    if saved.is_file():  # its recorded plugins are never imported here (see --plugin)
        return load_config(saved, [*overrides, *fixed]).model_copy(update={"plugins": []})
    return build_config({}, [*overrides, *fixed], source="evaluation")


def model_inputs(prepared, card: ModelCard, rows: np.ndarray) -> np.ndarray:
    """[N, seq_len, channels] float32: the card's streams of the clips `rows`, concatenated as channels."""
    missing = [s for s in card.streams if s not in prepared.streams]
    if missing:
        raise UserError(f"the model reads {missing}, which {prepared.info.name} does not have "
                        f"(it has {sorted(prepared.streams)})")
    units = {s: prepared.info.units.get(s, card.units) for s in card.streams}
    if any(u != card.units for u in units.values()):
        raise UserError(f"the model reads {card.units}, {prepared.info.name} gives {units}")
    clips = np.concatenate([prepared.streams[s][rows].reshape(len(rows), card.seq_len, -1) for s in card.streams],
                           axis=2).astype(np.float32)
    if clips.shape[2] != card.channels:
        raise UserError(f"the model reads {card.channels} channels, {prepared.info.name} gives {clips.shape[2]}")
    return clips


def evaluate_model(model_path: Path, split_name: str, out: Path, overrides: list[str], overwrite: bool = False,
                   log=log_stderr) -> dict:
    if split_name not in SPLITS:
        raise UserError(f"--split {split_name}: one of {', '.join(SPLITS)}")
    started = time.perf_counter()
    card, classify = open_classifier(model_path)
    config = evaluation_config(model_path, card, overrides)
    staging, lock = stage_run_dir(out, overwrite, "evaluation", "evaluate", evaluation_inputs(model_path, config))
    try:
        prepared = prepare(config.data, config.preprocess, log=log)
        if prepared.info.class_names != card.class_names:
            raise UserError(f"{prepared.info.name} has the classes {prepared.info.class_names[:4]}..., the model "
                            f"{card.class_names[:4]}...: they are not the classes the model learnt")
        split = split_data(config, prepared)
        rows = {"test": split.test, "val": split.val, "all": np.arange(len(prepared))}[split_name]
        rows = rows[prepared.labels[rows] >= 0]
        probabilities = np.concatenate([classify(chunk) for chunk in
                                        np.array_split(model_inputs(prepared, card, rows), max(1, len(rows) // 256))])
        figures = summarize(prepared.labels[rows], np.log(np.clip(probabilities, 1e-12, None)), card.class_names)
        metrics = {"model": str(model_path), "dataset": prepared.info.name, "protocol": split.protocol,
                   "split": split_name, "subjects": sorted(int(s) for s in np.unique(prepared.subjects[rows])),
                   "card": json.loads(card.to_json()), "test": figures,
                   "wall_time_s": time.perf_counter() - started}
        _write(staging, metrics, prepared, rows, probabilities, card)
    except BaseException:
        abandon(staging, lock, True, out, log)
        raise
    finish(staging, out, lock, "state", how_to_finish=f"rename {staging} to {out}")
    return metrics


def evaluation_inputs(model_path: Path, config: RunConfig) -> list[Read]:
    """What an evaluation reads: the model (a run directory's config.yaml and delivered student), the data."""
    model_path = Path(model_path)
    found = reads((model_path / "config.yaml", "the config of the run evaluated"),
                  (model_path / "checkpoints" / "best.pt", "the model evaluated")) if model_path.is_dir() \
        else reads((model_path, "the model evaluated"))
    return found + data_inputs(config)


def _write(folder: Path, metrics: dict, prepared, rows: np.ndarray, probabilities: np.ndarray,
           card: ModelCard) -> None:
    write_file(folder / "metrics.json", json.dumps(metrics, indent=2), root=folder)
    names, figures = card.class_names, metrics["test"]
    title = (f"{Path(metrics['model']).name} on {metrics['dataset']} {metrics['protocol']} ({metrics['split']}): "
             f"accuracy {100 * figures['accuracy']:.2f} %")
    plot_confusion(figures["confusion_matrix"], names, folder / "confusion_matrix.png", title, root=folder)
    with StagedText(folder / "predictions.csv", folder) as staged:
        writer = csv.writer(staged.handle)
        writer.writerow(["clip_id", "subject", "trial", "label", "predicted", "correct", "confidence"])
        for row, clip in enumerate(rows):
            label, guess = int(prepared.labels[clip]), int(probabilities[row].argmax())
            writer.writerow([prepared.clip_ids[clip], int(prepared.subjects[clip]), int(prepared.trials[clip]),
                             names[label], names[guess], int(label == guess), f"{probabilities[row, guess]:.4f}"])
    lines = [f"# {title}", "", f"{figures['clips']} clips of subjects {metrics['subjects']}; macro-F1 "
             f"{100 * figures['macro_f1']:.2f} %.", "", "![confusion matrix](confusion_matrix.png)", "",
             "| class | precision | recall | F1 | clips |", "|---|---|---|---|---|"]
    lines += [f"| {r['class']} | {100 * r['precision']:.2f} | {100 * r['recall']:.2f} | {100 * r['f1']:.2f} | "
              f"{r['support']} |" for r in figures["per_class"]]
    write_file(folder / "report.md", "\n".join(lines) + "\n", root=folder)
