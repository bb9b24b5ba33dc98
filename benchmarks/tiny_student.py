"""Choose the tiny student's architecture by validation: cross-entropy at full labels, several seeds.

    python benchmarks/tiny_student.py configs/utd_mhad/student_ce.yaml --seeds 0,1,2 --out runs/tiny \\
        --variant 'tiny={"preset": "tiny"}' --variant 'sep={"widths": [16, 24, 32], "kernel": 9, "separable": true}'

Each variant is a student.options mapping. Per variant: parameters and FLOPs per clip (as `pskd bench` counts
them), then the mean validation accuracy (the only figure a choice may use) and, beside it, the test accuracy.
Rows go to OUT/rows.jsonl as each run ends.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from pskd.config import load_config
from pskd.models.inertial import CompactCNN
from pskd.pipeline import run


def size(options: dict, channels: int = 3, classes: int = 27, length: int = 128) -> tuple[int, float]:
    model = CompactCNN(channels, classes, length, **options).eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, channels, length))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variant", action="append", required=True, metavar='NAME={"option": value}')
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    variants = {}
    for item in args.variant:
        name, _, text = item.partition("=")
        variants[name] = json.loads(text)
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    table = []
    for name, options in variants.items():
        params, mflops = size(options)
        figures = {"val": [], "test": []}
        for seed in seeds:
            config = load_config(args.config, [*args.overrides, f"seed={seed}", "threads=1", "progress=false",
                                               f"student.options={json.dumps(options)}"])
            _, metrics = run(config, args.out / f"{name}-seed{seed}", log=lambda *a, **k: None)
            row = {"variant": name, "options": options, "seed": seed, "params": params, "mflops": mflops,
                   "val": metrics["student"]["val"]["accuracy"], "test": metrics["student"]["test"]["accuracy"]}
            with open(args.out / "rows.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
            figures["val"].append(row["val"])
            figures["test"].append(row["test"])
        table.append((statistics.mean(figures["val"]), name, params, mflops, figures))
    print("| variant | params | MFLOPs | val (%) | test (%) |\n|---|---|---|---|---|")
    for val, name, params, mflops, figures in sorted(table, reverse=True):
        test = figures["test"]
        spread = f" ± {100 * statistics.stdev(test):.2f}" if len(test) > 1 else ""
        print(f"| {name} | {params:,} | {mflops:.3f} | {100 * val:.2f} | {100 * statistics.mean(test):.2f}{spread} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
