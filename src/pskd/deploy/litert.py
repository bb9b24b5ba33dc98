"""The student as a LiteRT (TensorFlow Lite) model for Wear OS apps and microcontrollers: fp32, and int8 by static
post-training quantisation (PyTorch's PT2E flow, per-channel int8 weights and int8 activations) calibrated on
training clips only. Converted by litert-torch, run by the LiteRT interpreter (ai-edge-litert); both come with
the `litert` extra, and a device or a predicting machine needs only ai-edge-litert.

The graph takes one raw clip [1, seq_len, channels] in the card's unit and returns logits and probabilities; the
model card is stored in the flatbuffer's metadata under `pskd_card`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from pskd.deploy.card import CARD_KEY, MAX_CARD_BYTES, ModelCard, parse_card
from pskd.errors import DataError, UserError

MAX_MODEL_BYTES = 256 * 1024**2
LOGITS, PROBABILITIES = "output_0", "output_1"


# Set before the converter's libraries load: their C++ INFO and WARNING logs (the flatbuffer writer's op count,
# for one) stay unprinted, ERROR and FATAL still print; and litert-torch's progress lines ([START] ... [ DONE]).
QUIET_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "2", "LITERT_TORCH_SHOW_PROGRESS": "n"}
# Python loggers that report harmless things at import or conversion: torchao's optional CUDA kernels that a CPU
# machine cannot load, torch's deprecation of an Enum registration, the converters' own chatter. ERROR still shows.
QUIET_LOGGERS = ("litert_torch", "torch.export", "torch.utils._pytree", "torchao", "absl")
# Captured terminal lines known to be harmless: the oneDNN notice and absl's notice before it, printed while the
# converter loads (before TF_CPP_MIN_LOG_LEVEL is read), and torchao's kernels that need a GPU.
HARMLESS = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\) is called"
                      r"|oneDNN custom operations are on|^Failed to load .*torchao/_C")
# A captured line that reports an error: a C++ log line of severity E or F, or one naming an error.
ERROR_LINE = re.compile(r"^[EF]\d{4} |\b(error|fatal|exception|traceback)\b", re.IGNORECASE)
TAIL_CHARS = 6000  # of the captured output shown when the conversion fails
CAPTURED_BYTES = 1024**2  # the end of what was captured, read back


def require_converter():
    try:
        with _quiet():
            import litert_torch  # noqa: F401
    except ImportError:
        raise UserError("LiteRT export needs litert-torch: pip install 'pskd[litert]'") from None


def require_interpreter():
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    except ImportError:
        raise UserError(".tflite models need the LiteRT interpreter: pip install ai-edge-litert "
                        "(or 'pskd[litert]')") from None


def shown_lines(captured: str, failed: bool) -> str:
    """What of the converter's captured terminal output to show: on failure all of it but the known-harmless
    lines (its last TAIL_CHARS), the error's context; on success only the lines that report an error."""
    lines = [line for line in captured.splitlines() if line.strip() and not HARMLESS.search(line)]
    if failed:
        return "\n".join(lines)[-TAIL_CHARS:]
    return "\n".join(line for line in lines if ERROR_LINE.search(line))


@contextlib.contextmanager
def _quiet():
    """The converter and the interpreter print progress, deprecation notices and C++ logs to the terminal: what
    they print (Python's and C++'s, through the file descriptors) is captured, and only its error lines are shown
    afterwards (all of it, but the known-harmless lines, when the conversion fails); their Python warnings of
    deprecation are ignored, others are captured with the rest. Errors still raise."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)  # a user's own setting wins
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    failed, shown, python = True, "", io.StringIO()  # python: what Python code writes to sys.stdout / sys.stderr
    try:
        with tempfile.TemporaryFile() as captured, warnings.catch_warnings(), contextlib.redirect_stdout(python), \
                contextlib.redirect_stderr(python):
            for category in (DeprecationWarning, FutureWarning):  # the libraries' notices to their own developers
                warnings.filterwarnings("ignore", category=category)
            os.dup2(captured.fileno(), 1)
            os.dup2(captured.fileno(), 2)
            try:
                yield
                failed = False
            finally:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                for fd in saved:
                    os.close(fd)
                captured.seek(max(0, captured.seek(0, os.SEEK_END) - CAPTURED_BYTES))
                text = captured.read().decode("utf-8", "replace") + "\n" + python.getvalue()[-CAPTURED_BYTES:]
                shown = shown_lines(text, failed)
    finally:  # outside the redirection: to the terminal, and before a failure's exception goes on
        if shown:
            print(shown, file=sys.stderr, flush=True)


def convert(model, card: ModelCard, path: Path, calibration: np.ndarray | None = None) -> None:
    """Writes `model` (a DeployedStudent) as a .tflite file with its card: fp32, or int8 when calibration clips
    [N, seq_len, channels] are given."""
    with _quiet():
        import litert_torch
        import torch

        example = (torch.zeros(1, card.seq_len, card.channels),)
        if calibration is None:
            edge = litert_torch.convert(model.eval(), example)
        else:
            edge = _int8(model, example, calibration)
        with tempfile.TemporaryDirectory() as tmp:
            edge.export(str(Path(tmp) / "model.tflite"))
            flatbuffer = (Path(tmp) / "model.tflite").read_bytes()
    path.write_bytes(with_card(flatbuffer, card))


def _int8(model, example, calibration: np.ndarray):
    import litert_torch
    import torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    graph = torch.export.export(model.eval(), example).module()
    graph = move_exported_model_to_eval(quantize_pt2e.prepare_pt2e(graph, quantizer))
    _share_observers(graph)
    with torch.no_grad():
        for clip in calibration:
            graph(torch.from_numpy(np.ascontiguousarray(clip[None], dtype=np.float32)))
    graph = move_exported_model_to_eval(quantize_pt2e.convert_pt2e(graph, fold_quantize=False))
    return litert_torch.convert(graph, example, quant_config=QuantConfig(pt2e_quantizer=quantizer))


def _share_observers(graph) -> None:
    """Every consumer of an observed tensor reads it through its observer. The quantizer leaves some consumers
    reading the float tensor (the shortcut's average pooling beside a depthwise convolution in the `tiny` student),
    and the converter then refuses two scales for one tensor."""
    for node in list(graph.graph.nodes):
        observers = [user for user in node.users
                     if user.op == "call_module" and str(user.target).startswith("activation_post_process")]
        if len(observers) != 1:
            continue
        for user in list(node.users):
            if user is not observers[0] and user.op == "call_function":
                user.replace_input_with(node, observers[0])
    graph.recompile()


def with_card(flatbuffer: bytes, card: ModelCard) -> bytes:
    """The model with the card as a metadata entry (any earlier one of that name replaced)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(card.to_json().encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = CARD_KEY, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (CARD_KEY, CARD_KEY.encode())] + [entry]
    builder = flatbuffers.Builder(len(flatbuffer) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _read_card(data: bytes, where: str) -> ModelCard:
    from ai_edge_litert import schema_py_generated as schema

    try:
        model = schema.Model.GetRootAs(data, 0)
        entries = {model.Metadata(i).Name().decode("utf-8", "replace"): model.Metadata(i).Buffer()
                   for i in range(model.MetadataLength())}
        if CARD_KEY not in entries:
            raise DataError(f"{where}: a LiteRT model without a pskd card (was it written by `pskd export`?)")
        raw = model.Buffers(entries[CARD_KEY]).DataAsNumpy()
    except DataError:
        raise
    except Exception as err:  # a malformed flatbuffer raises anything from struct.error to IndexError
        raise DataError(f"{where}: not a readable LiteRT model ({type(err).__name__})") from None
    if isinstance(raw, int) or len(raw) > MAX_CARD_BYTES:
        raise DataError(f"{where}: its pskd card is missing or larger than {MAX_CARD_BYTES} bytes")
    return ModelCard.from_dict(parse_card(raw.tobytes().decode("utf-8", "replace"), where), where)


class TfliteModel:
    """A pskd .tflite student in the LiteRT interpreter: its card, and logits and probabilities per clip."""

    def __init__(self, path: Path, threads: int = 1):
        require_interpreter()
        from ai_edge_litert.interpreter import Interpreter

        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such model file")
        if path.stat().st_size > MAX_MODEL_BYTES:
            raise DataError(f"{path}: larger than {MAX_MODEL_BYTES // 1024**2} MiB, not a pskd student")
        data = path.read_bytes()
        self.card = _read_card(data, str(path))
        try:
            with _quiet():
                self.interpreter = Interpreter(model_content=data, num_threads=threads)
                self.interpreter.allocate_tensors()
            self.runner = self.interpreter.get_signature_runner()
            inputs = self.interpreter.get_input_details()
            outputs = self.interpreter.get_output_details()
        except Exception as err:
            raise DataError(f"{path}: not a readable LiteRT model ({str(err).splitlines()[0][:160]})") from None
        self.input = self.interpreter.get_signature_list()["serving_default"]["inputs"][0]
        if len(inputs) != 1 or len(outputs) != 2 or list(inputs[0]["shape"])[:1] != [1]:
            raise DataError(f"{path}: not a pskd student graph (one input [1, samples, channels], logits and "
                            "probabilities)")
        self.card.check_shapes(int(inputs[0]["shape"][1]), int(inputs[0]["shape"][2]),
                               int(outputs[0]["shape"][-1]), str(path))

    def run(self, clips: np.ndarray, output: str = PROBABILITIES) -> np.ndarray:
        """[N, seq_len, channels] float32 -> [N, classes], one clip at a time (the graph's batch is 1)."""
        rows = [self.runner(**{self.input: np.ascontiguousarray(clip[None], dtype=np.float32)})[output][0]
                for clip in clips]
        return np.stack(rows) if rows else np.zeros((0, self.card.num_classes), np.float32)


def open_tflite(path: Path, threads: int = 1):
    """(card, classify) for a .tflite model, as predict.open_classifier gives for the other forms."""
    model = TfliteModel(path, threads)
    return model.card, model.run
