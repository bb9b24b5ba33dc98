"""How well `pskd predict` segments a continuous recording made of real UTD-MHAD test clips.

    python benchmarks/predict_utd_stream.py MODEL [--data-dir DIR] [--actions 6] [--seed 0]

For each test subject (2, 4, 6, 8), picks `--actions` wrist actions (1-21) at random, and concatenates trials 1-3
of each, back to back, as one 50 Hz recording. It then runs the same windowing, smoothing and segmentation as
`pskd predict` and reports the fraction of the recording's time labelled with the right action, and how many
actions are what covers most of their own span.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from pskd.data import utd_mhad
from pskd.data.registry import resolve_data_dir
from pskd.deploy.predict import Recording, open_classifier, predict_recording, score_segments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--actions", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
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
        result = predict_recording(Recording(np.concatenate(pieces).astype(np.float64), utd_mhad.INERTIAL_RATE,
                                             f"subject {subject}", "--rate"), card, classify)
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
