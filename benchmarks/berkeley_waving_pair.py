"""Can a wrist tell "waving two hands" from "waving one hand (right)" on a person it has not seen?

    python benchmarks/berkeley_waving_pair.py [--data-dir DIR] [--seeds 0,1] [--out runs/waving_pair.json]

The wrist-only Berkeley-MHAD student makes almost all its errors on these two actions (see docs/datasets.md,
"Other datasets"). This benchmark asks whether the watch carries the information at all. On the two waving actions only (119 clips,
12 subjects), it trains the student's model (`configs/berkeley_mhad/student_ce.yaml`: same network, same
training, same augmentation) leaving one subject out at a time, and scores the held-out subject's clips, taking
the more likely of the two actions. It does so for the right wrist (the watch), the left wrist, and both.
Chance is 50 %.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from pskd.config import load_config
from pskd.data.batches import PairedClips
from pskd.data.cache import prepare
from pskd.models.zoo import build_model
from pskd.training.loop import FitOptions, cross_entropy, fit, pick_device, predict, seed_everything
from pskd.training.recipe import input_spec, make_augmenter

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "berkeley_mhad" / "student_ce.yaml"
PAIR = ("waving two hands", "waving one hand (right)")
WRISTS = {"right wrist (watch)": ["accelerometer"], "left wrist": ["acc_h01"], "both wrists": ["accelerometer", "acc_h01"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's")
    parser.add_argument("--out", type=Path, default=Path("runs/waving_pair.json"))
    args = parser.parse_args(argv)
    overrides = ["progress=false"] + ([f"data.data_dir={args.data_dir}"] if args.data_dir else [])
    overrides += [f"train.epochs={args.epochs}"] if args.epochs else []
    config = load_config(CONFIG, overrides)
    prepared = prepare(config.data, config.preprocess, log=lambda *a, **k: None)
    classes = [prepared.info.class_names.index(name) for name in PAIR]
    pair = np.flatnonzero(np.isin(prepared.labels, classes))
    subjects = sorted(int(s) for s in np.unique(prepared.subjects[pair]))
    device = pick_device(config.device)
    train_config = config.train.model_copy(update={"select": "last", "refit": False})
    results: dict[str, dict] = {}
    for wrist, streams in WRISTS.items():
        per_subject: dict[int, list[float]] = {s: [] for s in subjects}
        for seed in [int(s) for s in args.seeds.split(",")]:
            for held_out in subjects:
                seed_everything(seed, config.deterministic)
                fit_on = pair[prepared.subjects[pair] != held_out]
                scored = pair[prepared.subjects[pair] == held_out]
                model = build_model(config.student.name, streams, config.student.options,
                                    input_spec(prepared, fit_on), "student")
                data = {s: prepared.streams[s] for s in streams}
                augment = make_augmenter(config.model_copy(update={"seed": seed}), prepared.info)
                fit(model, PairedClips(data, prepared.labels, fit_on), None, train_config,
                    cross_entropy(train_config.label_smoothing),
                    FitOptions(device=device, seed=seed, augment=augment, progress=False))
                _, logits = predict(model, PairedClips(data, prepared.labels, scored), device)
                guess = np.array(classes)[logits[:, classes].argmax(axis=1)]
                per_subject[held_out].append(float((guess == prepared.labels[scored]).mean()))
        means = {s: statistics.mean(v) for s, v in per_subject.items()}
        results[wrist] = {"mean": statistics.mean(means.values()), "per_subject": means}
        print(f"{wrist:20s} {100 * results[wrist]['mean']:6.2f} %   per held-out subject: "
              + " ".join(f"{s}:{100 * a:.0f}" for s, a in means.items()), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"pair": PAIR, "seeds": args.seeds, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
