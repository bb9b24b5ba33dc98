"""ONNX Runtime helpers that need neither torch nor the training code (prediction with an exported model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pskd.deploy.card import CARD_KEY, ModelCard, parse_card
from pskd.errors import DataError, UserError

INPUT, LOGITS, PROBABILITIES = "clips", "logits", "probabilities"


def require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError("ONNX models need onnx and onnxruntime: pip install 'pskd[export]'") from None


def ort_session(path: Path, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_card(path: Path) -> ModelCard:
    """The card stored in an exported model, read by ONNX Runtime (no code executes), checked for its bounds and
    against the graph's input and output shapes."""
    try:
        session = ort_session(path)
        meta = session.get_modelmeta().custom_metadata_map
    except Exception as err:
        raise UserError(f"{path}: not a readable ONNX model ({str(err).splitlines()[0][:160]})") from None
    if CARD_KEY not in meta:
        raise UserError(f"{path}: an ONNX model without a pskd card (was it written by `pskd export`?)")
    card = ModelCard.from_dict(parse_card(meta[CARD_KEY], str(path)), str(path))
    inputs, outputs = session.get_inputs(), {o.name: o for o in session.get_outputs()}
    if len(inputs) != 1 or len(inputs[0].shape) != 3 or LOGITS not in outputs or len(outputs[LOGITS].shape) != 2:
        raise DataError(f"{path}: not a pskd student graph (one input [batch, samples, channels], logits [batch, "
                        "classes])")

    def fixed(dim):
        return dim if isinstance(dim, int) else None

    card.check_shapes(fixed(inputs[0].shape[1]), fixed(inputs[0].shape[2]), fixed(outputs[LOGITS].shape[1]),
                      str(path))
    return card


def run_onnx(session, clips: np.ndarray, batch: int = 512) -> np.ndarray:
    """Logits of an ONNX session over clips [N, T, C] (float32)."""
    out = [session.run([LOGITS], {INPUT: clips[i : i + batch]})[0] for i in range(0, len(clips), batch)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
