"""ONNX Runtime helpers that need neither torch nor the training code (prediction with an exported model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pskd.deploy.card import CARD_KEY, ModelCard
from pskd.errors import UserError

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
    """The card stored in an exported model, read by ONNX Runtime (no code executes)."""
    try:
        meta = ort_session(path).get_modelmeta().custom_metadata_map
    except Exception as err:
        raise UserError(f"{path}: not a readable ONNX model ({str(err).splitlines()[0][:160]})") from None
    if CARD_KEY not in meta:
        raise UserError(f"{path}: an ONNX model without a pskd card (was it written by `pskd export`?)")
    try:
        values = json.loads(meta[CARD_KEY])
    except json.JSONDecodeError:
        raise UserError(f"{path}: its pskd card is not valid JSON") from None
    return ModelCard.from_dict(values, str(path))


def run_onnx(session, clips: np.ndarray, batch: int = 512) -> np.ndarray:
    """Logits of an ONNX session over clips [N, T, C] (float32)."""
    out = [session.run([LOGITS], {INPUT: clips[i : i + batch]})[0] for i in range(0, len(clips), batch)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
