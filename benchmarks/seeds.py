"""Accuracy and time of one config over several seeds: the benchmark behind the issue targets.

    python benchmarks/seeds.py configs/utd_mhad/student_ce.yaml --seeds 0,1,2 [--set key=value ...] [--out DIR]

Runs `pskd train` in-process once per seed (the data cache is warmed first so that the timings are of training),
then writes summary.json and summary.md under --out with the mean and standard deviation of test accuracy and
macro-F1 (of the delivered model, and of the best-on-validation and last-epoch checkpoints) and the wall time per seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from pskd.config import load_config
from pskd.data.cache import prepare
from pskd.errors import UserError
from pskd.pipeline import run


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=None, help="folder for the runs and the summary")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    base = load_config(args.config, args.overrides)
    out = args.out or Path("runs") / f"bench-{base.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    prepare(base.data, base.preprocess)  # warm the cache: the per-seed times below are of training
    rows = []
    for seed in seeds:
        config = load_config(args.config, [*args.overrides, f"seed={seed}", f"progress={args.progress}"])
        _, metrics = run(config, out / f"seed{seed}", log=lambda *a, **k: None)
        student = metrics["student"]
        rows.append({
            "seed": seed,
            "test_accuracy": student["test"]["accuracy"],
            "test_macro_f1": student["test"]["macro_f1"],
            "test_best_accuracy": student["test_best"]["accuracy"],
            "test_last_accuracy": student["test_last"]["accuracy"],
            "val_accuracy": student["val"]["accuracy"],
            "best_epoch": student["best_epoch"],
            "wall_time_s": metrics["wall_time_s"],
        })
        print(json.dumps(rows[-1]), flush=True)
    summary = {"config": args.config, "overrides": args.overrides, "seeds": seeds, "runs": rows,
               "params": metrics["student"]["params"], "model": metrics["student"]["model"]}
    keys = ("test_accuracy", "test_macro_f1", "test_best_accuracy", "test_last_accuracy", "val_accuracy")
    for key in (*keys, "wall_time_s"):
        summary[key] = dict(zip(("mean", "std"), mean_std([r[key] for r in rows])))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = [
        f"# {args.config} {' '.join(args.overrides)}",
        "",
        f"{summary['model']}, {summary['params']:,} parameters, seeds {seeds}",
        "",
        "| figure | mean | std |",
        "|---|---|---|",
    ]
    several = len(rows) > 1  # one seed has no spread: its std reads n/a, not 0.00

    def std(key: str, scale: float, digits: int) -> str:
        return f"{scale * summary[key]['std']:.{digits}f}" if several else "n/a"

    for key in keys:
        lines.append(f"| {key} (%) | {100 * summary[key]['mean']:.2f} | {std(key, 100, 2)} |")
    lines.append(f"| wall time per seed (s) | {summary['wall_time_s']['mean']:.1f} | {std('wall_time_s', 1, 1)} |")
    lines += ["", f"n = {len(rows)} seed" + ("s" if several else "") + "; std: the standard deviation over them."]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
