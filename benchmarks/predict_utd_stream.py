"""How well `pskd predict` segments a continuous recording made of real UTD-MHAD test clips.

    python benchmarks/predict_utd_stream.py MODEL [--data-dir DIR] [--actions 6] [--seed 0] [--write DIR]

For each test subject (2, 4, 6, 8), picks `--actions` wrist actions (1-21) at random, and concatenates trials 1-3
of each, back to back, as one 50 Hz recording. It then runs the same windowing, smoothing and segmentation as
`pskd predict` and reports the fraction of the recording's time labelled with the right action, and how many
actions are what covers most of their own span. With --write, each subject's recording (CSV with a time column)
and its true segments (CSV: label, start_s, end_s) are saved there, ready for
`pskd predict MODEL --input DIR/subject2.csv --truth DIR/subject2_truth.csv --plot timeline.png`.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

import numpy as np

from pskd.data import utd_mhad
from pskd.data.registry import resolve_data_dir
from pskd.deploy.predict import Recording, open_classifier, predict_recording, score_segments


def write(folder: Path, subject: int, signal: np.ndarray, truth: list, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    times = np.arange(len(signal)) / utd_mhad.INERTIAL_RATE
    np.savetxt(folder / f"subject{subject}.csv", np.column_stack([times, signal]), delimiter=",",
               header="time,ax,ay,az", comments="", fmt="%.5f")
    with (folder / f"subject{subject}_truth.csv").open("w", newline="") as handle:
        rows = csv.writer(handle)
        rows.writerow(["label", "start_s", "end_s"])
        rows.writerows([names[action], round(start, 3), round(end, 3)] for action, start, end in truth)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--actions", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", type=Path, help="save each subject's recording and true segments here")
    args = parser.parse_args(argv)
    found = utd_mhad.scan(resolve_data_dir("utd_mhad", args.data_dir))
    card, classify = open_classifier(args.model)
    rng = np.random.default_rng(args.seed)
    times, rights, total = [], 0, 0
    for subject in (2, 4, 6, 8):
        pieces, truth, t = [], [], 0.0
        for action in rng.choice(np.arange(1, 22), size=args.actions, replace=False):
            start = t
            for trial in (1, 2, 3):
                x = utd_mhad.read_inertial(found.inertial[(int(action), subject, trial)])[:, :3]
                pieces.append(x)
                t += len(x) / utd_mhad.INERTIAL_RATE
            truth.append((int(action) - 1, start, t))
        signal = np.concatenate(pieces).astype(np.float64)
        if args.write is not None:
            write(args.write, subject, signal, truth, card.class_names)
        result = predict_recording(Recording(signal, utd_mhad.INERTIAL_RATE, f"subject {subject}"), card, classify)
        fraction, majority = score_segments(result.segments, truth, card.class_names)
        right = sum(m == action for m, (action, _, _) in zip(majority, truth))
        times.append(fraction)
        rights, total = rights + right, total + len(truth)
        print(f"subject {subject}: {t:.0f} s, {100 * fraction:.1f} % of the time right, {right}/{len(truth)} "
              f"actions, {len(result.segments)} segments found for {len(truth)}")
    print(f"mean: {100 * statistics.fmean(times):.1f} % of the time labelled right; {rights}/{total} actions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
