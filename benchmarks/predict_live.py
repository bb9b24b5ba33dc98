"""`pskd predict` on a long recording and on a live stream: speed, peak memory, agreement, latency, on one core.

    python benchmarks/predict_live.py MODEL [--hours 24] [--rate 50] [--latency-seconds 60] [--out DIR]

1. Writes a recording of back-to-back synthetic wrist-accelerometer clips (CSV with a time column, in g).
2. Pipes it through standard input (`--input -`, a writer thread feeding the pipe) and gives it as a file
   (`--input FILE`), each in a fresh process pinned to one core (taskset) with one thread; reports the wall time,
   how many times faster than real time, the peak resident memory (getrusage of the child) and whether the two
   per-window outputs are identical byte for byte.
3. Live: writes samples into the pipe at the recording's own pace (one line every 1/rate s) for --latency-seconds,
   and times each window row's arrival against the moment the window's last sample was written: the end-to-end
   latency of a window (pipe, parsing, resampling, inference, writing), median, 90th percentile and maximum.

MODEL is an exported .onnx or .tflite file, or a run directory. The figures go to stdout and, with --out, to
predict_live.json there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from pskd.data import synthetic
from pskd.data.clip import ACCELEROMETER


def recording(seconds: float, rate: float) -> np.ndarray:
    """Back-to-back synthetic clips of every class and several subjects, resampled to `rate`."""
    pieces, total, k = [], 0, 0
    while total < seconds * synthetic.ACCELEROMETER_RATE:
        clip = synthetic.generate_clip(0, 1 + k % 8, k % len(synthetic.CLASS_NAMES), 1 + (k // 80) % 50)
        pieces.append(clip.streams[ACCELEROMETER])
        total += len(pieces[-1])
        k += 1
    signal = np.concatenate(pieces)[: int(seconds * synthetic.ACCELEROMETER_RATE)]
    if rate != synthetic.ACCELEROMETER_RATE:
        t_in = np.arange(len(signal)) / synthetic.ACCELEROMETER_RATE
        t_out = np.arange(int(seconds * rate)) / rate
        signal = np.stack([np.interp(t_out, t_in, signal[:, c]) for c in range(3)], axis=1)
    return signal


def write_csv(path: Path, signal: np.ndarray, rate: float) -> None:
    with path.open("w") as handle:
        handle.write("time,ax,ay,az\n")
        for first in range(0, len(signal), 100_000):
            block = signal[first : first + 100_000]
            times = np.arange(first, first + len(block)) / rate
            np.savetxt(handle, np.column_stack([times, block]), delimiter=",", fmt="%.5f")


def command(model: str, source: str, out: Path) -> list[str]:
    line = [sys.executable, "-m", "pskd", "predict", model, "--input", source, "--threads", "1", "--out", str(out)]
    return ["taskset", "-c", "0", *line] if shutil.which("taskset") else line


def one_core_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def timed(args: list[str], feed: Path | None) -> tuple[float, float, str]:
    """(seconds, peak resident MB of the child alone, its summary line); `feed` is written into its standard input by a
    thread, in 64 KiB pieces, as a pipe delivers a stream."""
    tic = time.perf_counter()
    process = subprocess.Popen(args, stdin=subprocess.PIPE if feed else subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=one_core_env())

    def pump():
        with feed.open("rb") as handle:
            while block := handle.read(1 << 16):
                process.stdin.write(block)
        process.stdin.close()

    writer = threading.Thread(target=pump) if feed else None
    if writer:
        writer.start()
    errors = []
    drain = threading.Thread(target=lambda: errors.append(process.stderr.read()))
    drain.start()
    out = process.stdout.read().decode()
    drain.join()
    if writer:
        writer.join()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - tic
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"pskd predict failed: {errors[0].decode()[-2000:]}")
    summary = [line for line in (out + errors[0].decode()).splitlines() if " windows of " in line]
    return seconds, usage.ru_maxrss / 1024, summary[-1] if summary else ""


def latency(model: str, signal: np.ndarray, rate: float, seconds: float) -> dict:
    """Window rows' arrival after the write of their window's last sample, samples written at the real pace."""
    samples = int(seconds * rate)
    process = subprocess.Popen(command(model, "-", Path("-")), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=one_core_env(), bufsize=0)
    written: list[float] = []  # when each sample line was written
    arrivals: list[tuple[float, dict]] = []

    def read():
        for line in process.stdout:
            arrivals.append((time.perf_counter(), json.loads(line)))

    reader = threading.Thread(target=read)
    reader.start()
    process.stdin.write(b"time,ax,ay,az\n")
    start = time.perf_counter()
    for i in range(samples):
        target = start + i / rate
        while (now := time.perf_counter()) < target:
            time.sleep(min(0.002, target - now))
        x, y, z = signal[i]
        process.stdin.write(f"{i / rate:.5f},{x:.5f},{y:.5f},{z:.5f}\n".encode())
        written.append(time.perf_counter())
    process.stdin.close()
    reader.join()
    process.wait()
    delays = []
    for arrived, row in arrivals:
        last = round(row["end_s"] * rate) - 1  # index of the window's last sample
        if last < samples - 1:  # the final flush window waits for the end of the stream by design
            delays.append(1000 * (arrived - written[last]))
    return {"windows": len(delays), "median_ms": statistics.median(delays),
            "p90_ms": float(np.percentile(delays, 90)), "max_ms": max(delays)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--latency-seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    figures = {"model": args.model, "hours": args.hours, "rate_hz": args.rate}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recording.csv"
        signal = recording(3600 * args.hours, args.rate)
        write_csv(path, signal, args.rate)
        figures["csv_mb"] = path.stat().st_size / 1e6
        print(f"{len(signal):,} samples ({args.hours:g} h at {args.rate:g} Hz), {figures['csv_mb']:.0f} MB of CSV",
              flush=True)
        for name, source, feed in (("stdin", "-", path), ("file", str(path), None)):
            seconds, peak, summary = timed(command(args.model, source, Path(tmp) / f"{name}.jsonl"), feed)
            figures[name] = {"seconds": seconds, "times_real_time": 3600 * args.hours / seconds, "peak_mb": peak}
            print(f"{name:>5}: {seconds:.1f} s on one core, {3600 * args.hours / seconds:,.0f} x real time, "
                  f"peak memory {peak:.0f} MB; {summary}", flush=True)
        same = (Path(tmp) / "stdin.jsonl").read_bytes() == (Path(tmp) / "file.jsonl").read_bytes()
        figures["identical_outputs"] = same
        print(f"per-window outputs of standard input and file identical: {same}", flush=True)
    if args.latency_seconds > 0:
        figures["latency"] = latency(args.model, signal, args.rate, args.latency_seconds)
        t = figures["latency"]
        print(f"live at {args.rate:g} Hz for {args.latency_seconds:g} s: {t['windows']} windows, last sample to "
              f"output line median {t['median_ms']:.2f} ms, 90th percentile {t['p90_ms']:.2f} ms, max "
              f"{t['max_ms']:.2f} ms")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "predict_live.json").write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
