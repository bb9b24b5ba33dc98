"""How long `pskd predict` takes on a long recording, end to end, on one core.

    python benchmarks/predict_speed.py MODEL [--hours 1] [--rate 50] [--hop 0.5]

Writes a recording of back-to-back synthetic wrist-accelerometer clips (CSV with a time column, in g) of the given
length, then times the `pskd predict` command on it in a fresh process pinned to one CPU core (taskset, where
available) with one thread: process start, imports, reading the CSV, resampling, windowing, inference, smoothing,
and writing the per-window CSV. MODEL is an exported .onnx file or a run directory.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pskd.data import synthetic
from pskd.data.clip import ACCELEROMETER


def recording(seconds: float, rate: float) -> np.ndarray:
    pieces, total, k = [], 0, 0
    while total < seconds * synthetic.ACCELEROMETER_RATE:
        clip = synthetic.generate_clip(0, 1 + k % 8, k % len(synthetic.CLASS_NAMES), 1 + k // 80)
        pieces.append(clip.streams[ACCELEROMETER])
        total += len(pieces[-1])
        k += 1
    signal = np.concatenate(pieces)[: int(seconds * synthetic.ACCELEROMETER_RATE)]
    if rate != synthetic.ACCELEROMETER_RATE:
        t_in = np.arange(len(signal)) / synthetic.ACCELEROMETER_RATE
        t_out = np.arange(int(seconds * rate)) / rate
        signal = np.stack([np.interp(t_out, t_in, signal[:, c]) for c in range(3)], axis=1)
    return signal


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--hop", type=float, default=0.5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recording.csv"
        signal = recording(3600 * args.hours, args.rate)
        times = np.arange(len(signal)) / args.rate
        np.savetxt(path, np.column_stack([times, signal]), delimiter=",", header="time,ax,ay,az", comments="",
                   fmt="%.5f")
        command = [sys.executable, "-m", "pskd", "predict", args.model, "--input", str(path), "--hop", str(args.hop),
                   "--threads", "1", "--out", str(Path(tmp) / "windows.csv")]
        if shutil.which("taskset"):
            command = ["taskset", "-c", "0", *command]
        tic = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - tic
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        print(done.stdout.splitlines()[0])
        print(f"{len(signal):,} samples ({args.hours:g} h at {args.rate:g} Hz, {path.stat().st_size / 1e6:.1f} MB CSV): "
              f"{seconds:.2f} s end to end on one core")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
