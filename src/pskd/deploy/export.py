"""The student as ONNX or LiteRT (fp32, and int8 by static quantisation), checked against PyTorch before it is
written.

The exported graph takes raw clips [batch, seq_len, channels] in the card's unit (LiteRT: batch 1) and returns
logits and probabilities; the card is stored in the model's metadata under `pskd_card`. The run's own config
rebuilds the data: the test clips check parity and give each form's accuracy; int8 calibration reads training
clips only. Nothing is written unless the check passes (files are written under a temporary name, then renamed).
The report goes beside the model as <model file>.json (student.onnx.json, student.tflite.json).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pskd.bounded import loads_json, read_text
from pskd.config import load_config
from pskd.console import log_stderr
from pskd.deploy.card import CARD_KEY, ModelCard
from pskd.deploy.runtime import INPUT, LOGITS, PROBABILITIES, ort_session, require_onnx, run_onnx
from pskd.deploy.student import DeployedStudent, checkpoint_path, load_student
from pskd.errors import UserError
from pskd.fileio import StagedFile, WriteError, create_folder, write_file
from pskd.limits import METADATA_BYTES
from pskd.overwrite import mark, marked_kind, overlap, reads, refusal, refuse_link


class ExportError(UserError):
    """The exported model does not reproduce PyTorch (exit code 3: not the user's mistake, but a refusal)."""

    exit_code = 3


def _set_card(path: Path, card: ModelCard) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = CARD_KEY, card.to_json()
    model.producer_name = "pskd"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def to_onnx(model: DeployedStudent, card: ModelCard, path: Path) -> None:
    """Export with torch.export (dynamic batch), then attach the card."""
    example = torch.zeros(2, card.seq_len, card.channels)
    for name in ("torch.onnx", "torch.export", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (example,), dynamo=True, input_names=[INPUT], output_names=[LOGITS, PROBABILITIES],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), optimize=True, verbose=False,
        )
    program.save(str(path), external_data=False)
    _set_card(path, card)


class _Calibration:
    """ONNX Runtime's calibration reader over training clips, in batches."""

    def __init__(self, clips: np.ndarray, batch: int = 32):
        self.batches = iter([{INPUT: clips[i : i + batch]} for i in range(0, len(clips), batch)])

    def get_next(self):
        return next(self.batches, None)


def quantize_int8(fp32: Path, path: Path, calibration: np.ndarray, card: ModelCard) -> None:
    """Static int8 quantisation (QDQ, per-channel int8 weights, uint8 activations) calibrated on training clips."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(path), _Calibration(calibration), quant_format=QuantFormat.QDQ,
            per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
        )
    _set_card(path, card)


@dataclass(frozen=True)
class Form:
    """One export format: how to write it (fp32, int8) and how to run it (logits of clips)."""

    suffix: str
    runtime: str
    require: Callable[[], None]
    fp32: Callable  # (model, card, path)
    int8: Callable  # (model, card, fp32 path, path, calibration clips)
    logits: Callable  # (path, clips) -> logits


def _tflite_logits(path: Path, clips: np.ndarray) -> np.ndarray:
    from pskd.deploy.litert import LOGITS, TfliteModel

    return TfliteModel(path).run(clips, LOGITS)


def _tflite_form() -> Form:
    from pskd.deploy import litert

    return Form(".tflite", "LiteRT", litert.require_converter, litert.convert,
                lambda model, card, fp32, path, calibration: litert.convert(model, card, path, calibration),
                _tflite_logits)


FORMATS = {
    "onnx": lambda: Form(".onnx", "ONNX Runtime", require_onnx, to_onnx,
                         lambda model, card, fp32, path, calibration: quantize_int8(fp32, path, calibration, card),
                         lambda path, clips: run_onnx(ort_session(path), clips)),
    "tflite": _tflite_form,
}


@dataclass
class RunData:
    """A run's clips as the deployed model reads them: [N, seq_len, channels] float32, with labels."""

    test: np.ndarray
    test_labels: np.ndarray
    calibration: np.ndarray


def run_data(run_dir: Path, card: ModelCard, calibration_clips: int = 256, log=log_stderr) -> RunData:
    from pskd.training.session import open_session

    config_path = Path(run_dir) / "config.yaml"
    # a run folder may come from anyone: its recorded plugins are never imported here (the user names them with
    # --plugin, checked against the record, before this is reached)
    config = load_config(config_path, ["progress=false"]).model_copy(update={"plugins": []})
    session = open_session(config, log)
    prepared, split = session.prepared, session.split
    arrays = np.concatenate([prepared.streams[s].reshape(len(prepared), card.seq_len, -1) for s in card.streams],
                            axis=2).astype(np.float32)
    if arrays.shape[2] != card.channels:
        raise UserError(f"{config_path}: its data has {arrays.shape[2]} channels, the model reads {card.channels}")
    rng = np.random.default_rng(0)
    training = session.training_clips
    chosen = np.sort(rng.choice(training, size=min(calibration_clips, len(training)), replace=False))
    return RunData(arrays[split.test], prepared.labels[split.test], arrays[chosen])


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == labels).mean())


def report_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + ".json")


def _targets(run_dir: Path, out: Path | None, int8: bool, overwrite: bool,
             form: Form) -> tuple[Path, Path, Path, bool]:
    """The fp32 and int8 model files and the folder below which no link is followed (the run's, for its own
    export/ folder), checked before any work: the format's suffix; no link on the way or at a target; nothing
    there unless overwrite, and with it only an earlier pskd export that is no input of this one; a folder that
    can be written (made when missing: then True, and marked as an export once the export has succeeded)."""
    fp32_path = Path(out) if out is not None else run_dir / "export" / f"student{form.suffix}"
    if fp32_path.suffix != form.suffix:
        raise UserError(f"--out {fp32_path}: the file name must end in {form.suffix}")
    int8_path = fp32_path.with_name(fp32_path.stem + ".int8" + form.suffix)
    folder = fp32_path.parent
    root = run_dir if out is None else folder  # --out's folder is the user's; the run's export/ folder is pskd's
    if out is None:
        refuse_link(folder, "the run's export folder")
    targets = [p for p in (fp32_path, int8_path if int8 else None, report_path(fp32_path)) if p is not None]
    for target in targets:
        refuse_link(target, "--out" if target == fp32_path and out is not None else "the export file")
    there = [p for p in targets if os.path.lexists(p)]
    if there and not overwrite:
        raise UserError(f"{there[0]}: already exists; export elsewhere with --out, or replace it with --overwrite")
    if there:
        _check_replaceable(run_dir, fp32_path, there)
    try:
        made = not folder.is_dir() and create_folder(folder, root=run_dir if out is None else None, exist_ok=True)
    except WriteError as err:
        raise UserError(str(err)) from None
    if not os.access(folder, os.W_OK):
        raise UserError(f"{folder}: not writable")
    return fp32_path, int8_path, root, made


def _check_replaceable(run_dir: Path, fp32_path: Path, there: list[Path]) -> None:
    """--overwrite replaces plain files of an earlier pskd export (its folder marked as one, or its report beside
    it), never a file the export reads (the run's checkpoint and config, the data)."""
    from pskd.pipeline import data_inputs

    inputs = reads((checkpoint_path(run_dir), "the model exported"),
                   (run_dir / "config.yaml", "the config of the run exported"))
    try:
        inputs += data_inputs(load_config(run_dir / "config.yaml", ["progress=false"]))
    except UserError:
        pass  # the export fails on the config later, with its own message
    for path in there:
        if not path.is_file():
            raise refusal(path, "it is not a file an export writes")
        why = overlap(path, inputs)
        if why:
            raise refusal(path, why)
    if marked_kind(fp32_path.parent) != "export" and not _is_report(report_path(fp32_path)):
        raise refusal(there[0], f"it is not a pskd export (no export report {report_path(fp32_path).name} beside "
                                "it, and its folder is not marked as an export); choose another --out")


def _is_report(path: Path) -> bool:
    """Whether `path` is a plain file holding the report of a pskd export (what export_run writes)."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        report = loads_json(read_text(path, METADATA_BYTES))
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and {"run", "format", "card", "pytorch"} <= set(report)


def _check_int8(quantised: np.ndarray, int8_path: Path, labels: np.ndarray, fp32_logits: np.ndarray,
                fp32_accuracy: float, max_drop: float) -> dict:
    """The int8 model's figures on the test clips; an ExportError when it loses more than max_drop accuracy."""
    accuracy = _accuracy(quantised, labels)
    drop = fp32_accuracy - accuracy
    if drop > max_drop:
        raise ExportError(f"{int8_path}: int8 accuracy {100 * accuracy:.2f} % is {100 * drop:.2f} points "
                          f"below fp32 (allowed {100 * max_drop:.2f}); nothing was written")
    return {"path": str(int8_path), "accuracy": accuracy, "accuracy_drop": drop,
            "agreement_with_fp32": float((quantised.argmax(1) == fp32_logits.argmax(1)).mean()),
            "max_abs_logit_difference": float(np.abs(quantised - fp32_logits).max())}


def _check_fp32(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray, path: Path, atol: float,
                runtime: str) -> dict:
    difference = float(np.abs(logits - reference).max())
    tolerance = atol * max(1.0, float(np.abs(reference).max()))
    if not np.isfinite(difference) or difference > tolerance:
        raise ExportError(f"{path}: {runtime}'s logits differ from PyTorch's by {difference:.3g} "
                          f"(tolerance {tolerance:.3g}); nothing was written")
    return {"path": str(path), "accuracy": _accuracy(logits, labels), "max_abs_logit_difference": difference,
            "tolerance": tolerance, "agreement_with_pytorch": float((logits.argmax(1) == reference.argmax(1)).mean())}


def _convert(form: Form, target: Path, write: Callable, *args) -> None:
    """A converter's own failure (an operator or a quantisation it cannot express) as one ExportError line."""
    try:
        write(*args)
    except UserError:
        raise
    except Exception as err:
        reason = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ExportError(f"{target}: the {form.runtime} converter failed ({reason[:200]}); nothing was "
                          "written") from None


def export_run(run_dir: Path, out: Path | None = None, int8: bool = False, atol: float = 1e-4,
               max_int8_drop: float = 0.02, log=log_stderr, overwrite: bool = False, fmt: str = "onnx") -> dict:
    """Export a run's delivered student as `fmt` (onnx or tflite); return the report (also written as
    <model file>.json beside the files). Report keys: pytorch, <fmt>_fp32 and <fmt>_int8."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    form = FORMATS[fmt]()
    form.require()
    run_dir = Path(run_dir)
    model, card = load_student(run_dir)
    fp32_path, int8_path, root, made = _targets(run_dir, out, int8, overwrite, form)
    try:
        report = _export(run_dir, model, card, form, fmt, fp32_path, int8_path, root, int8, atol, max_int8_drop, log)
    except BaseException:
        if made:  # the folder this export made goes again, when nothing is in it
            with contextlib.suppress(OSError):
                fp32_path.parent.rmdir()
        raise
    if made:
        mark(fp32_path.parent, "export", "export", root=root)
    return report


def _export(run_dir: Path, model, card: ModelCard, form: Form, fmt: str, fp32_path: Path, int8_path: Path,
            root: Path, int8: bool, atol: float, max_int8_drop: float, log) -> dict:
    data = run_data(run_dir, card, log=log)
    with torch.inference_mode():
        reference = model(torch.from_numpy(data.test))[0].numpy()
    report = {"run": str(run_dir), "checkpoint": str(checkpoint_path(run_dir)), "format": fmt,
              "card": json.loads(card.to_json()), "test_clips": len(data.test),
              "pytorch": {"accuracy": _accuracy(reference, data.test_labels)}}
    with contextlib.ExitStack() as staged:  # renamed over the targets only when every check has passed
        fp32 = staged.enter_context(StagedFile(fp32_path, root))
        log(f"exporting {card.model} ({sum(p.numel() for p in model.parameters()):,} parameters) to {fmt}")
        _convert(form, fp32_path, form.fp32, model, card, fp32.path)
        logits = form.logits(fp32.path, data.test)
        report[f"{fmt}_fp32"] = _check_fp32(logits, reference, data.test_labels, fp32_path, atol, form.runtime)
        if int8:
            quantised = staged.enter_context(StagedFile(int8_path, root))
            log(f"quantising to int8, calibrated on {len(data.calibration)} training clips")
            _convert(form, int8_path, form.int8, model, card, fp32.path, quantised.path, data.calibration)
            report[f"{fmt}_int8"] = _check_int8(form.logits(quantised.path, data.test), int8_path, data.test_labels,
                                                logits, report[f"{fmt}_fp32"]["accuracy"], max_int8_drop)
    for key in (f"{fmt}_fp32", f"{fmt}_int8"):
        if key in report:
            report[key]["size_bytes"] = Path(report[key]["path"]).stat().st_size
    write_file(report_path(fp32_path), json.dumps(report, indent=2), root=root)
    return report
