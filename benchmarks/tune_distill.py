"""Choose the distillation switches by validation: teachers trained once per seed, many students on them.

    python benchmarks/tune_distill.py configs/utd_mhad/pskd.yaml --seeds 0,1 [--folds 4] [--out DIR]

Per seed, the config's teachers are trained once with cross-fitting (k folds over the training subjects), which
gives both kinds of targets: the teachers' own outputs (trained on every training subject) and the out-of-fold
outputs. Every variant below then trains the student on one of them with its switches changed. The table ranks
the variants by the validation accuracy of the selection run (the only figure a choice may use); test accuracy
is shown beside it but chooses nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

from pskd.config import build_config, load_config
from pskd.sweep import merge_tree
from pskd.training.session import Session, open_session
from pskd.training.student import train_student
from pskd.training.teachers import TrainedTeacher, teacher_outputs, train_teachers

# name -> (targets: "full" or "cross_fit", config changes)
VARIANTS: dict[str, tuple[str, dict]] = {
    "ce": ("full", {"method": "ce"}),
    "hard onehot": ("full", {}),
    "hard no-onehot": ("full", {"distill": {"acs_ground_truth": "none"}}),
    "cf hard onehot": ("cross_fit", {}),
    "cf hard no-onehot": ("cross_fit", {"distill": {"acs_ground_truth": "none"}}),
    "cf soft onehot": ("cross_fit", {"distill": {"terms": {"acs": {"mode": "soft"}}}}),
    "cf hard T=2": ("cross_fit", {"distill": {"temperature": 2.0}}),
    "cf hard alpha=2": ("cross_fit", {"distill": {"alpha": 2.0}}),
    "cf hard beta=0": ("cross_fit", {"distill": {"beta": 0.0}}),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--variants", default=None, help="comma-separated subset of the variants")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("runs/tune"))
    args = parser.parse_args(argv)
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    args.out.mkdir(parents=True, exist_ok=True)
    quiet = lambda *a, **k: None  # noqa: E731
    for seed in [int(s) for s in args.seeds.split(",")]:
        base = load_config(args.config, [*args.overrides, f"seed={seed}", "progress=false",
                                          f"distill.cross_fit_folds={args.folds}"])
        tic = time.perf_counter()
        session = open_session(base, quiet)
        crossed = train_teachers(session)
        full = {name: TrainedTeacher(t.trained, teacher_outputs(name, t.trained.model, base.teachers[name].streams,
                                                                  session.prepared, session.training_clips,
                                                                  session.device))
                for name, t in crossed.items()}
        teacher_seconds = time.perf_counter() - tic
        print(f"seed {seed}: teachers in {teacher_seconds:.0f} s: " + ", ".join(
            f"{n} {100 * t.trained.summary['test']['accuracy']:.2f}" for n, t in crossed.items()), flush=True)
        tree = base.model_dump(mode="json")
        for name in names:
            targets, changes = VARIANTS[name]
            config = build_config(merge_tree(tree, {**changes, "distill": {**changes.get("distill", {}),
                                                                         "cross_fit_folds": 0}}), source=name)
            teachers = copy.deepcopy(crossed if targets == "cross_fit" else full)
            tic = time.perf_counter()
            student = train_student(Session(config, session.prepared, session.split, session.device, quiet),
                                    teachers if config.method != "ce" else {})
            row = {"seed": seed, "variant": name, "val": student.summary["val"]["accuracy"],
                   "test": student.summary["test"]["accuracy"], "test_best": student.summary["test_best"]["accuracy"],
                   "seconds": time.perf_counter() - tic}
            print(json.dumps(row), flush=True)
            with open(args.out / "rows.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
    table(args.out / "rows.jsonl")
    return 0


def table(path: Path, extra: tuple[tuple[str, str], ...] = ()) -> None:
    """Variants ranked by validation; extra: more (row key, column title) pairs."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by: dict[str, list[dict]] = {}
    for row in rows:
        by.setdefault(row["variant"], []).append(row)

    def mean(rs, key):
        return 100 * statistics.fmean(r[key] for r in rs)

    columns = (("val", "val (selects)"), ("test", "test delivered"), ("test_best", "test best-on-val"), *extra)
    print("| variant | seeds | " + " | ".join(title for _, title in columns) + " |\n|---|---|" + "---|" * len(columns))
    for name, rs in sorted(by.items(), key=lambda kv: -mean(kv[1], "val")):
        print(f"| {name} | {len(rs)} | " + " | ".join(f"{mean(rs, key):.2f}" for key, _ in columns) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
