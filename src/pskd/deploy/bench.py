"""What a student costs on a device: parameters, FLOPs per clip, file sizes, and latency per clip.

Latency is measured at batch 1 on one thread, for PyTorch eager, ONNX Runtime and LiteRT (fp32 and int8; each
runtime whose package is installed): after warm-up
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

from pskd.bounded import loads_json, read_text
from pskd.console import log_stderr
from pskd.deploy.card import ModelCard
from pskd.deploy.export import ExportError, export_run, report_path
from pskd.deploy.runtime import INPUT, onnx_card, ort_session, require_onnx
from pskd.deploy.student import DeployedStudent, checkpoint_path, load_student
from pskd.errors import DataError, UserError
from pskd.fileio import write_file
from pskd.limits import METADATA_BYTES
from pskd.overwrite import overlap, reads, refuse_link


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


RUNTIMES = {"onnx": "ONNX Runtime", "tflite": "LiteRT"}


def _available(fmt: str) -> bool:
    import importlib.util

    needed = ("onnx", "onnxruntime") if fmt == "onnx" else ("litert_torch", "ai_edge_litert")
    return all(importlib.util.find_spec(name) is not None for name in needed)


def _exports(run_dir: Path, log) -> dict[str, dict]:
    """{onnx_fp32: {path, accuracy}, ...} for each format whose tools are installed, exporting what is missing."""
    forms = {}
    for fmt, suffix in (("onnx", ".onnx"), ("tflite", ".tflite")):
        if not _available(fmt):
            log(f"{RUNTIMES[fmt]}: not installed, left out (pip install 'pskd[{'export' if fmt == 'onnx' else 'litert'}]')")
            continue
        fp32, int8 = run_dir / "export" / f"student{suffix}", run_dir / "export" / f"student.int8{suffix}"
        report = report_path(fp32)
        if not (fp32.is_file() and int8.is_file() and report.is_file()):
            log(f"{run_dir}: no {fmt} export yet, exporting first")
            try:
                export_run(run_dir, int8=True, log=log, fmt=fmt)
            except ExportError as err:  # a model this converter cannot take: the other runtimes are still timed
                log(f"{RUNTIMES[fmt]}: left out ({err})")
                continue
        try:
            exported = loads_json(read_text(report, METADATA_BYTES))
            for precision, path in (("fp32", fp32), ("int8", int8)):
                forms[f"{fmt}_{precision}"] = {"path": path, "accuracy": exported[f"{fmt}_{precision}"]["accuracy"],
                                               "pytorch_accuracy": exported["pytorch"]["accuracy"]}
        except (OSError, ValueError, KeyError, TypeError):  # ValueError: not JSON or UTF-8, or beyond the limits
            raise DataError(f"{report}: not the report of a pskd export; export the run again with --overwrite") \
                from None
    return forms


def _runner(key: str, path: Path, clip: np.ndarray):
    if key.startswith("onnx"):
        onnx_card(path)  # refuses a file that is not a pskd export
        session = ort_session(path, threads=1)
        return lambda: session.run(None, {INPUT: clip})
    from pskd.deploy.litert import TfliteModel

    model = TfliteModel(path, threads=1)
    return lambda: model.runner(**{model.input: clip})


def bench_run(run_dir: Path, warmup: int = 20, repeats: int = 300, max_seconds: float = 10.0,
              log=log_stderr) -> dict:
    """Benchmark a run's student in PyTorch and in each installed runtime (ONNX Runtime, LiteRT; fp32 and int8),
    exporting it first where it has no export yet."""
    run_dir = Path(run_dir)
    model, card = load_student(run_dir)
    forms = _exports(run_dir, log)
    clip = np.random.default_rng(0).standard_normal((1, card.seq_len, card.channels)).astype(np.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = torch.from_numpy(clip)
        with torch.inference_mode():
            log(f"{card.model}: timing PyTorch eager")
            latency = {"pytorch": time_calls(lambda: model(x), warmup, repeats, max_seconds)}
        for key, form in forms.items():
            log(f"{card.model}: timing {RUNTIMES[key.split('_')[0]]} {key.split('_')[1]}")
            latency[key] = time_calls(_runner(key, form["path"], clip), warmup, repeats, max_seconds)
    finally:
        torch.set_num_threads(threads)
    pytorch_accuracy = next(iter(forms.values()))["pytorch_accuracy"] if forms else None
    result = {
        "run": str(run_dir),
        "model": card.model,
        "params": sum(p.numel() for p in model.parameters()),
        "flops": count_flops(model, card),
        "input": [card.seq_len, card.channels],
        "latency_ms": {name: round(t["median_ms"], 4) for name, t in latency.items()},
        "latency": latency,
        "size_bytes": {"checkpoint": checkpoint_path(run_dir).stat().st_size,
                       **{key: form["path"].stat().st_size for key, form in forms.items()}},
        "accuracy": {"pytorch": pytorch_accuracy, **{key: form["accuracy"] for key, form in forms.items()}},
        "threads": 1,
        "batch": 1,
        "torch_version": torch.__version__,
    }
    write_file(Path(run_dir) / "bench.json", json.dumps(result, indent=2), root=run_dir)
    return result


def check_target(path: Path) -> None:
    """A run directory or an exported model file; checked for every target before any is timed."""
    path = Path(path)
    if not path.is_dir() and not (path.is_file() and path.suffix.lower() in (".onnx", ".tflite")):
        raise UserError(f"{path}: give a run directory, or an exported .onnx or .tflite file")


def check_json(json_path: Path, targets: list[Path]) -> None:
    """--json is checked before any target is timed: never a link, and never a file the command reads (a file
    benchmarked, a run's config, checkpoints or export; a run's own bench.json is bench's output)."""
    refuse_link(json_path, "--json")
    read = []
    for target in map(Path, targets):
        if target.is_dir():
            read += reads((target / "config.yaml", f"the config of the run {target}"),
                          (target / "checkpoints", f"the checkpoints of the run {target}"),
                          (target / "export", f"the export of the run {target}"))
        else:
            read += reads((target, "a model benchmarked"))
    why = overlap(json_path, read)
    if why:
        raise UserError(f"--json {json_path}: {why}; choose another file")


def bench_file(path: Path, warmup: int = 20, repeats: int = 300, max_seconds: float = 10.0) -> dict:
    """One exported model file (.onnx or .tflite, as a device receives it): its card, size and batch-1
    one-thread latency."""
    path = Path(path)
    check_target(path)
    fmt = path.suffix.lower()[1:]
    if fmt == "onnx":
        require_onnx()
        card = onnx_card(path)
    else:
        from pskd.deploy.litert import TfliteModel

        card = TfliteModel(path).card
    clip = np.random.default_rng(0).standard_normal((1, card.seq_len, card.channels)).astype(np.float32)
    timing = time_calls(_runner(f"{fmt}_file", path, clip), warmup, repeats, max_seconds)
    return {"file": str(path), "model": card.model, "runtime": RUNTIMES[fmt], "size_bytes": path.stat().st_size,
            "latency_ms": round(timing["median_ms"], 4), "latency": timing, "threads": 1, "batch": 1}


def file_table(results: list[dict]) -> str:
    lines = ["| file | model | runtime | size (kB) | latency, median (ms) | 90th percentile (ms) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['file']} | {r['model']} | {r['runtime']} | {r['size_bytes'] / 1e3:,.1f} | {r['latency_ms']:.4g} | "
              f"{r['latency']['p90_ms']:.4g} |" for r in results]
    return "\n".join(lines)


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
    """A Markdown table of the runs side by side, ratios against the first (rows for the forms all runs have)."""
    lines = ["| | " + " | ".join(f"{r['model']} ({Path(r['run']).name})" for r in results) + " |",
             "|---" * (len(results) + 1) + "|"]

    def row(label, values):
        lines.append(f"| {label} | " + " | ".join(values) + " |")

    rel = ratios(results)
    forms = [key for key in ("onnx_fp32", "onnx_int8", "tflite_fp32", "tflite_int8")
             if all(key in r["latency_ms"] for r in results)]
    names = {"pytorch": "PyTorch eager", **{key: f"{RUNTIMES[key.split('_')[0]]} {key.split('_')[1]}" for key in forms}}
    row("parameters", [f"{r['params']:,}" for r in results])
    row("MFLOPs per clip", [f"{r['flops'] / 1e6:,.2f}" for r in results])
    for key in ("pytorch", *forms):
        row(f"latency {names[key]} (ms)", [f"{r['latency_ms'][key]:.4g}" + (f" (x{q['latency'][key]:.0f})" if i else "")
                                           for i, (r, q) in enumerate(zip(results, rel))])
    for key in (*forms, "checkpoint"):
        label = names.get(key, key).replace(" Runtime", "")
        row(f"size {label} (kB)", [f"{r['size_bytes'][key] / 1e3:,.1f}" + (f" (x{q['size'][key]:.0f})" if i else "")
                                   for i, (r, q) in enumerate(zip(results, rel))])
    for key in forms:
        row(f"test accuracy {names[key]} (%)", [f"{100 * r['accuracy'][key]:.2f}" for r in results])
    return "\n".join(lines)
