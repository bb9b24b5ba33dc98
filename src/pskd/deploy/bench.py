"""What a student costs on a device: parameters, FLOPs per clip, file sizes, and latency per clip.

Latency is measured at batch 1 on one thread, for PyTorch eager and ONNX Runtime (fp32 and int8): after warm-up
runs, each of `repeats` runs is timed on its own and the median is reported (with the 90th percentile), capped
at `max_seconds` per runtime for large models. FLOPs are counted by PyTorch's FlopCounterMode for one clip (a
multiply-add counts as 2; convolutions and matrix products, which dominate).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from pskd.console import log_stderr
from pskd.deploy.card import ModelCard
from pskd.deploy.export import export_run
from pskd.deploy.runtime import INPUT, onnx_card, ort_session
from pskd.deploy.student import DeployedStudent, checkpoint_path, load_student


def count_flops(model: DeployedStudent, card: ModelCard) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, card.seq_len, card.channels))
    return int(counter.get_total_flops())


def time_calls(call, warmup: int, repeats: int, max_seconds: float) -> dict:
    for _ in range(warmup):
        call()
    times = []
    started = time.perf_counter()
    while len(times) < repeats and (time.perf_counter() - started < max_seconds or len(times) < 5):
        tic = time.perf_counter_ns()
        call()
        times.append((time.perf_counter_ns() - tic) / 1e6)
    return {"median_ms": statistics.median(times), "p90_ms": float(np.percentile(times, 90)), "runs": len(times)}


def bench_run(run_dir: Path, warmup: int = 20, repeats: int = 300, max_seconds: float = 10.0,
              log=log_stderr) -> dict:
    """Benchmark a run's student; exports it first (fp32 and int8) when it has no export yet."""
    run_dir = Path(run_dir)
    model, card = load_student(run_dir)
    export = run_dir / "export"
    fp32, int8 = export / "student.onnx", export / "student.int8.onnx"
    if not (fp32.is_file() and int8.is_file()):
        log(f"{run_dir}: no export yet, exporting first")
        export_run(run_dir, int8=True, log=log)
    for path in (fp32, int8):
        onnx_card(path)  # refuses a file that is not a pskd export
    exported = json.loads((export / "export.json").read_text(encoding="utf-8"))
    clip = np.random.default_rng(0).standard_normal((1, card.seq_len, card.channels)).astype(np.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = torch.from_numpy(clip)
        with torch.inference_mode():
            log(f"{card.model}: timing PyTorch eager")
            latency = {"pytorch": time_calls(lambda: model(x), warmup, repeats, max_seconds)}
        for name, path in (("onnx_fp32", fp32), ("onnx_int8", int8)):
            log(f"{card.model}: timing ONNX Runtime {name[5:]}")
            session = ort_session(path, threads=1)
            latency[name] = time_calls(lambda: session.run(None, {INPUT: clip}), warmup, repeats, max_seconds)
    finally:
        torch.set_num_threads(threads)
    result = {
        "run": str(run_dir),
        "model": card.model,
        "params": sum(p.numel() for p in model.parameters()),
        "flops": count_flops(model, card),
        "input": [card.seq_len, card.channels],
        "latency_ms": {name: round(t["median_ms"], 4) for name, t in latency.items()},
        "latency": latency,
        "size_bytes": {"checkpoint": checkpoint_path(run_dir).stat().st_size, "onnx_fp32": fp32.stat().st_size,
                       "onnx_int8": int8.stat().st_size},
        "accuracy": {"pytorch": exported["pytorch"]["accuracy"], "onnx_fp32": exported["onnx_fp32"]["accuracy"],
                     "onnx_int8": exported["onnx_int8"]["accuracy"]},
        "threads": 1,
        "batch": 1,
        "torch_version": torch.__version__,
    }
    (run_dir / "bench.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def ratios(results: list[dict]) -> list[dict]:
    """Each run's latency and sizes relative to the first run (how many times the first's)."""
    first = results[0]
    out = []
    for result in results:
        out.append({
            "run": result["run"],
            "params": result["params"] / first["params"],
            "flops": result["flops"] / first["flops"],
            "latency": {k: v / first["latency_ms"][k] for k, v in result["latency_ms"].items()},
            "size": {k: v / first["size_bytes"][k] for k, v in result["size_bytes"].items()},
        })
    return out


def table(results: list[dict]) -> str:
    """A Markdown table of the runs side by side, ratios against the first."""
    lines = ["| | " + " | ".join(r["model"] for r in results) + " |", "|---" * (len(results) + 1) + "|"]

    def row(label, values):
        lines.append(f"| {label} | " + " | ".join(values) + " |")

    rel = ratios(results)
    row("parameters", [f"{r['params']:,}" for r in results])
    row("MFLOPs per clip", [f"{r['flops'] / 1e6:,.2f}" for r in results])
    for key, label in (("pytorch", "PyTorch eager"), ("onnx_fp32", "ONNX Runtime fp32"),
                       ("onnx_int8", "ONNX Runtime int8")):
        row(f"latency {label} (ms)", [f"{r['latency_ms'][key]:.4g}" + (f" (x{q['latency'][key]:.0f})" if i else "")
                                       for i, (r, q) in enumerate(zip(results, rel))])
    for key, label in (("onnx_fp32", "ONNX fp32"), ("onnx_int8", "ONNX int8"), ("checkpoint", "checkpoint")):
        row(f"size {label} (kB)", [f"{r['size_bytes'][key] / 1e3:,.1f}" + (f" (x{q['size'][key]:.0f})" if i else "")
                                   for i, (r, q) in enumerate(zip(results, rel))])
    for key, label in (("onnx_fp32", "fp32"), ("onnx_int8", "int8")):
        row(f"test accuracy {label} (%)", [f"{100 * r['accuracy'][key]:.2f}" for r in results])
    return "\n".join(lines)
