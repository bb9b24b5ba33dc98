"""Choose the label-scarce method by validation: teachers trained once per seed, many students on them.

    python benchmarks/tune_label_scarce.py configs/utd_mhad/pskd.yaml --seeds 0,1 \\
        --set data.labels.fraction=0.25 --set data.labels.teachers=same [--variants ce,self_train,pskd] [--out DIR]

Per seed, the config's teachers are trained once on the labels data.labels.teachers lets them see (or loaded from
an earlier run: --set teachers.skeleton.checkpoint=RUN_DIR ...). Every variant then trains the student on the
same labelled and unlabelled clips with its own method and switches. Rows go to OUT/rows.jsonl; the table ranks
the variants by the validation accuracy of the selection run (labelled clips of the validation subjects: the only
figure a choice may use). Test accuracy is shown beside it and chooses nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

from tune_distill import table  # the same ranking by validation (benchmarks/ is on the path of its scripts)

from pskd.config import build_config, load_config
from pskd.distill.methods import teachers_used
from pskd.sweep import merge_tree
from pskd.training.session import open_session
from pskd.training.student import train_student
from pskd.training.teachers import train_teachers

FIX, CON = "fixmatch", "contrastive"
VARIANTS: dict[str, dict] = {
    "ce": {"method": "ce"},
    "self_train": {"method": "self_train"},
    "kd": {"method": "kd"},
    "avg_kd": {"method": "avg_kd"},
    "pskd": {"method": "pskd"},
    "pskd+fixmatch": {"method": "pskd", "distill": {"add_terms": [FIX]}},
    "pskd+contrastive": {"method": "pskd", "distill": {"add_terms": [CON]}},
    "pskd+fixmatch+contrastive": {"method": "pskd", "distill": {"add_terms": [FIX, CON]}},
    "avg_kd+fixmatch": {"method": "avg_kd", "distill": {"add_terms": [FIX]}},
    "pskd soft": {"method": "pskd", "distill": {"terms": {"acs": {"mode": "soft"}}}},
    "self_train threshold=0.9": {"method": "self_train", "distill": {"terms": {FIX: {"threshold": 0.9}}}},
    "self_train rotation=30": {"method": "self_train", "distill": {"terms": {FIX: {"rotation_deg": 30.0}}}},
    "self_train labelled_share=0.5": {"method": "self_train", "train": {"labelled_share": 0.5}},
    "self_train rotation=30 share=0.5": {"method": "self_train", "train": {"labelled_share": 0.5},
                                         "distill": {"terms": {FIX: {"rotation_deg": 30.0}}}},
    "pskd alpha=2": {"method": "pskd", "distill": {"alpha": 2.0}},
    "pskd T=2": {"method": "pskd", "distill": {"temperature": 2.0}},
    "pskd T=1": {"method": "pskd", "distill": {"temperature": 1.0}},
    "pskd alpha=0": {"method": "pskd", "distill": {"alpha": 0.0}},
    "pskd gate": {"method": "pskd", "distill": {"gate": True}},
    "pskd beta=0": {"method": "pskd", "distill": {"beta": 0.0}},
    "pskd labelled_share=0.5": {"method": "pskd", "train": {"labelled_share": 0.5}},
    "pskd epochs=200": {"method": "pskd", "train": {"epochs": 200}},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--variants", default=None, help="comma-separated subset of the variants")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("runs/tune-label-scarce"))
    args = parser.parse_args(argv)
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    quiet = lambda *a, **k: None  # noqa: E731
    for seed in [int(s) for s in args.seeds.split(",")]:
        base = load_config(args.config, [*args.overrides, f"seed={seed}", "progress=false"])
        session = open_session(base, quiet)
        tree = base.model_dump(mode="json")
        configs = {name: build_config(merge_tree(tree, VARIANTS[name]), source=name) for name in names}
        teachers = {}
        if any(teachers_used(c) for c in configs.values()):
            tic = time.perf_counter()
            teachers = train_teachers(session)
            print(f"seed {seed}: teachers in {time.perf_counter() - tic:.0f} s: " + ", ".join(
                f"{n} {100 * t.trained.summary['test']['accuracy']:.2f}" for n, t in teachers.items()), flush=True)
        for name, config in configs.items():
            tic = time.perf_counter()
            used = copy.deepcopy(teachers) if teachers_used(config) else {}
            student = train_student(replace(session, config=config), used)
            row = {"seed": seed, "variant": name, "labels": base.data.labels.model_dump(),
                   "val": student.summary["val"]["accuracy"], "test": student.summary["test"]["accuracy"],
                   "test_best": student.summary["test_best"]["accuracy"],
                   "test_last": student.summary["test_last"]["accuracy"], "best_epoch": student.summary["best_epoch"],
                   "teachers": {n: t.trained.summary["test"]["accuracy"] for n, t in teachers.items()},
                   "seconds": time.perf_counter() - tic}
            print(json.dumps(row), flush=True)
            with open(args.out / "rows.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
    table(args.out / "rows.jsonl", extra=(("test_last", "test last"),))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
