"""Real recordings as a lab has them: UTD-MHAD written in the folder format, its streams cropped apart, a few rows
broken, and what the folder loader makes of it.

    python benchmarks/folder_tolerance.py [--data-dir DIR] [--out /tmp/utd_folder] [--seed 0]

Writes UTD-MHAD (read from the data root, never copied into the repository) as a folder dataset under --out:
skeleton .npy and accelerometer .csv per clip, each watch recording lengthened by idle signal before and after (a
watch that ran before and after the camera) to a random watch/skeleton duration ratio between the clip's own
(UTD-MHAD's are 1.2-2.6x, cropped apart) and 4.9x. Then:
1. `pskd data check folder` with the default settings: every row loads;
2. five rows get a wrong rate (10x too low) and three a missing file: the check refuses the dataset and lists the
   eight rows, and says what `on_problem: skip` leaves;
3. with `--set data.folder.on_problem=skip` it loads and names the eight rows left out;
4. the same rows cropped back with `accelerometer_start` / `accelerometer_stop` columns load at ratio 1.6x.
Each step prints its exit code, its first lines and its time.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pskd.data import utd_mhad
from pskd.data.registry import resolve_data_dir

LONGEST = 4.9  # the longest watch recording, as a multiple of its skeleton's duration (the default limit is 5)


def write_folder(source: Path, out: Path, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    info, clips = utd_mhad.load(source)
    (out / "skel").mkdir(parents=True, exist_ok=True)
    (out / "acc").mkdir(exist_ok=True)
    rows = []
    for clip in clips:
        watch = clip.streams["accelerometer"]
        base = clip.duration("accelerometer") / clip.duration("skeleton")
        extra = int(len(watch) * (rng.uniform(base, LONGEST) / base - 1))  # samples the watch ran beyond the take
        before = int(rng.uniform(0, 1) * extra)
        after = extra - before
        rest = watch[:1] + 0.01 * rng.standard_normal((before + after, watch.shape[1]))  # idle: the first sample, held
        padded = np.concatenate([rest[:before], watch, rest[before:]]).astype(np.float32)
        np.save(out / "skel" / f"{clip.clip_id}.npy", clip.streams["skeleton"])
        np.savetxt(out / "acc" / f"{clip.clip_id}.csv", padded, delimiter=",", fmt="%.6f")
        rows.append({"clip_id": clip.clip_id, "label": info.class_names[clip.label], "subject": clip.subject,
                     "trial": clip.trial, "skeleton": f"skel/{clip.clip_id}.npy", "skeleton_rate": clip.rates["skeleton"],
                     "accelerometer": f"acc/{clip.clip_id}.csv", "accelerometer_rate": clip.rates["accelerometer"],
                     "accelerometer_start": f"{before / clip.rates['accelerometer']:.4f}",
                     "accelerometer_stop": f"{(before + len(watch) - 1) / clip.rates['accelerometer']:.4f}"})
    return rows


def write_manifest(out: Path, rows: list[dict], crop: bool) -> None:
    columns = [c for c in rows[0] if crop or not c.endswith(("_start", "_stop"))]
    with (out / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def check(out: Path, *extra: str) -> dict:
    tic = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pskd", "data", "check", "folder", "--data-dir", str(out), "--json",
                           *extra], capture_output=True, text=True)
    seconds = time.perf_counter() - tic
    summary = json.loads(done.stdout) if done.stdout.strip() else {}
    return {"exit": done.returncode, "seconds": round(seconds, 1), "error": done.stderr.strip().splitlines()[-1:],
            "clips": summary.get("clips"), "problems": summary.get("problems", []), "status": summary.get("status")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path("/tmp/pskd_utd_folder"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} exists and is not empty: choose another --out")
    source = utd_mhad.resolve_root(resolve_data_dir("utd_mhad", args.data_dir))
    rows = write_folder(source, args.out, args.seed)
    ratios = []
    for row in rows:
        skeleton = len(np.load(args.out / row["skeleton"])) / row["skeleton_rate"]
        watch = sum(1 for _ in open(args.out / row["accelerometer"])) / row["accelerometer_rate"]
        ratios.append(watch / skeleton)
    print(f"{len(rows)} clips written; watch / skeleton duration: median {np.median(ratios):.2f}x, "
          f"max {max(ratios):.2f}x, {sum(r > 2 for r in ratios)} rows above 2x")
    write_manifest(args.out, rows, crop=False)
    steps = {"1 default settings": check(args.out)}
    broken = [dict(row) for row in rows]
    for index in range(5):
        broken[index * 97]["accelerometer_rate"] = 5.0  # ten times too low
    for index in range(3):
        broken[index * 101 + 50]["skeleton"] = "skel/missing.npy"
    write_manifest(args.out, broken, crop=False)
    steps["2 eight broken rows"] = check(args.out)
    steps["3 on_problem: skip"] = check(args.out, "--set", "data.folder.on_problem=skip")
    write_manifest(args.out, rows, crop=True)
    steps["4 crop columns"] = check(args.out)
    for name, found in steps.items():
        listed = [f"row {p['row']}: {p['problem'][:70]}" for p in found["problems"][:3]]
        print(f"{name}: exit {found['exit']}, {found['clips']} clips, {len(found['problems'])} problems, "
              f"{found['seconds']} s; {found['status']}; {found['error']}; {listed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
