"""Where the teacher is far above the watch: which kind of distillation moves part of the gap, chosen on validation.

    python benchmarks/big_gap.py SETTING --seeds 0,1,2 [--variants a,b] [--out runs/big_gap] [--jobs 2]

Settings (each a shipped config with a few changes; `--list` prints them):
- degraded: UTD-MHAD cross-subject with a poorer watch, one accelerometer axis at 32 samples a clip (about 9 Hz);
- tiny: UTD-MHAD cross-subject with the tiny student (9.6 k parameters);
- berkeley: Berkeley-MHAD, the right-wrist student, teachers on the other five accelerometers.

Per seed the setting's teachers are trained once, with two extra ones where there is a skeleton: `motion`, a fixed
description of the skeleton's motion with a linear classifier (for the cross-modal auxiliary target), and
`friendly`, a fusion teacher trained with its skeleton branch dropped for half of the clips (a student-friendly
teacher). Every variant then trains the student on them. Each row (seed, variant, validation and test accuracy)
is appended to OUT/SETTING/rows.jsonl as it ends; a rerun skips the rows already there. The table ranks the variants
by validation, the only figure a choice may use; test is shown beside it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from pskd.config import build_config, load_config
from pskd.sweep import merge_tree
from pskd.teacher_checkpoints import teacher_meta
from pskd.training.session import Session, open_session
from pskd.training.student import train_student
from pskd.training.teachers import train_teachers

SETTINGS = {
    "degraded": ("configs/utd_mhad/pskd.yaml", ["preprocess.sensor_length=32", "preprocess.channels={accelerometer: [0]}"]),
    "tiny": ("configs/utd_mhad/pskd.yaml", ["student.options.preset=tiny"]),
    "berkeley": ("configs/berkeley_mhad/pskd.yaml", []),
}
FRIENDLY_DROPOUT = 0.5
CROSS_FIT_FOLDS = 4


def extra_teachers(tree: dict) -> dict:
    """The motion and friendly teachers, for a config whose first teacher reads the skeleton and whose second is a
    fusion teacher (none otherwise)."""
    names = list(tree["teachers"])
    first, second = (tree["teachers"][n] for n in names[:2])
    if first["streams"] != ["skeleton"] or second["name"] != "fusion":
        return {}
    friendly = merge_tree(second, {"options": {"skeleton_dropout": FRIENDLY_DROPOUT}})
    motion = {"name": "skeleton_motion", "streams": ["skeleton"], "options": {"segments": 4},
              "train": {**first["train"], "epochs": 60}}
    return {"motion": motion, "friendly": friendly}


def stage(teachers: list[str], loss) -> dict:
    return {"distill": {"stages": [{"start": 1, "teachers": teachers, "loss": loss}]}}


def variants(names: list[str], extra: bool) -> dict[str, tuple[list[str], dict]]:
    """name -> (teachers it uses, config changes). names: the config's own teachers, the privileged one first."""
    first, both = names[0], names[:2]
    focused = {"terms": {"feature": {"focus": "predictable"}}}
    out = {
        "ce": ([], {"method": "ce"}),
        "kd": ([first], {"method": "kd"}),
        "pskd": (both, {"method": "pskd"}),
        "pskd + feature": (both, {"method": "pskd", "distill": {"add_terms": ["feature"]}}),
        "pskd + feature (focused)": (both, {"method": "pskd", "distill": {"add_terms": ["feature"], **focused}}),
        "pskd + contrastive": (both, {"method": "pskd", "distill": {"add_terms": ["contrastive"]}}),
        "kd + feature (focused)": ([first], {"method": "kd", "distill": {"add_terms": ["feature"], **focused}}),
        "pskd soft": (both, {"method": "pskd", "distill": {"terms": {"acs": {"mode": "soft"}}}}),
        "pskd T=2": (both, {"method": "pskd", "distill": {"temperature": 2.0}}),
        # cross-fitted targets: each training clip's teacher outputs from teachers that did not train on it
        "kd cf": ([first], {"method": "kd"}),
        "pskd cf": (both, {"method": "pskd"}),
        "pskd cf no-onehot": (both, {"method": "pskd", "distill": {"acs_ground_truth": "none"}}),
    }
    if extra:
        out.update({
            "ce + motion target": (["motion"], merge_tree({"method": "kd"}, merge_tree(stage(["motion"], "feature"),
                                                                                        {"distill": {"alpha": 0.0}}))),
            "kd + motion target": ([first, "motion"], merge_tree({"method": "kd"}, merge_tree(
                stage([first, "motion"], ["kd", "feature"]), {"distill": {"terms": {"feature": {"teachers": ["motion"]}}}}))),
            "pskd friendly": ([first, "friendly"], merge_tree({"method": "pskd"}, stage([first, "friendly"], "acs"))),
            "kd friendly": (["friendly"], merge_tree({"method": "kd"}, {"distill": {"teacher": "friendly"}})),
            "pskd + weak teacher": ([*both, "motion"], merge_tree({"method": "pskd"}, stage([*both, "motion"], "acs"))),
            "ce + motion target (focused)": (["motion"], merge_tree({"method": "kd"}, merge_tree(
                stage(["motion"], "feature"), {"distill": focused}))),
            "kd + motion target (focused)": ([first, "motion"], merge_tree({"method": "kd"}, merge_tree(
                stage([first, "motion"], ["kd", "feature"]),
                {"distill": {"terms": {"feature": {"teachers": ["motion"], "focus": "predictable"}}}}))),
            "pskd + motion target": ([*both, "motion"], merge_tree({"method": "pskd"}, merge_tree(
                stage([*both, "motion"], ["acs", "feature"]),
                {"distill": {"terms": {"acs": {"teachers": both}, "feature": {"teachers": ["motion"]}}}}))),
            "pskd + motion target (focused)": ([*both, "motion"], merge_tree({"method": "pskd"}, merge_tree(
                stage([*both, "motion"], ["acs", "feature"]), {"distill": {"terms": {
                    "acs": {"teachers": both}, "feature": {"teachers": ["motion"], "focus": "predictable"}}}}))),
        })
    # a patient schedule: four times the epochs (distillation may keep gaining where cross-entropy has converged)
    for name in ("ce", "kd", "pskd", "kd + motion target (focused)", "pskd + motion target (focused)"):
        if name in out:
            used, changes = out[name]
            out[f"{name} 480"] = (used, merge_tree(changes, {"train": {"epochs": 480}}))
    return out


def run_seed(setting: str, seed: int, chosen: list[str] | None, out: Path, extra_sets: list[str]) -> list[dict]:
    config_path, overrides = SETTINGS[setting]
    base = load_config(config_path, [*overrides, *extra_sets, f"seed={seed}", "progress=false", "threads=1"])
    tree = base.model_dump(mode="json")
    own = list(tree["teachers"])
    extra = extra_teachers(tree)
    table = variants(own, bool(extra))
    names = [n for n in (chosen or table) if n in table]
    rows_path = out / "rows.jsonl"
    done = {(r["seed"], r["variant"]) for r in read_rows(rows_path)}
    todo = [n for n in names if (seed, n) not in done]
    if not todo:
        return []
    quiet = lambda *a, **k: None  # noqa: E731
    everyone = build_config(merge_tree(tree, {"teachers": extra}), source=f"{setting} teachers")
    saved = out / "teachers" / f"seed{seed}"
    everyone = build_config(merge_tree(everyone.model_dump(mode="json"), {"teachers": {
        n: {"checkpoint": str(saved / f"{n}.pt")} for n in everyone.teachers if (saved / f"{n}.pt").is_file()}}),
        source=f"{setting} teachers")
    tic = time.perf_counter()
    session = open_session(everyone, quiet)
    crossed = [n for n in todo if n.endswith(" cf") or " cf " in n]
    if crossed:  # cross-fitted teachers cannot be loaded: trained here, for these variants only
        fitted = build_config(merge_tree(tree, {"distill": {"cross_fit_folds": CROSS_FIT_FOLDS}}), source="cf")
        cf_teachers = train_teachers(Session(fitted, session.prepared, session.split, session.device, quiet,
                                             session.teacher_prepared, session.teacher_split))
    todo = [n for n in todo if n not in crossed]
    needed = {t for n in todo for t in table[n][0]}
    order = [n for n in everyone.teacher_order() if n in needed or any(
        everyone.teachers[m].distill_from == n for m in needed)]
    trimmed = build_config(merge_tree(everyone.model_dump(mode="json"), {}), source="teachers")
    trimmed.teachers = {n: everyone.teachers[n] for n in order}
    teachers = train_teachers(Session(trimmed, session.prepared, session.split, session.device, quiet,
                                      session.teacher_prepared, session.teacher_split)) if order else {}
    teacher_seconds = time.perf_counter() - tic
    save_teachers(trimmed, teachers, session, saved)
    figures = {n: t.trained.summary["test"]["accuracy"] for n, t in teachers.items()}
    print(f"{setting} seed {seed}: teachers in {teacher_seconds:.0f} s: "
          + ", ".join(f"{n} {100 * a:.2f}" for n, a in figures.items()), flush=True)
    rows = []
    for name in [*todo, *crossed]:
        used, changes = table[name]
        pool = cf_teachers if name in crossed else teachers
        config = build_config(merge_tree(tree, {**changes, "teachers": {**tree["teachers"], **{
            n: everyone.teachers[n].model_dump(mode="json") for n in used if n in extra}}}), source=name)
        tic = time.perf_counter()
        student = train_student(Session(config, session.prepared, session.split, session.device, quiet,
                                        session.teacher_prepared, session.teacher_split),
                                {n: pool[n] for n in used})
        row = {"setting": setting, "seed": seed, "variant": name, "val": student.summary["val"]["accuracy"],
               "test": student.summary["test"]["accuracy"],
               "teachers": {n: pool[n].trained.summary["test"]["accuracy"] for n in used},
               "predictable": student.summary.get("teacher_variance_predictable", {}),
               "delivered": student.summary.get("gate", {}).get("delivered", "distilled"),
               "seconds": round(time.perf_counter() - tic, 1)}
        print(json.dumps(row), flush=True)
        with open(rows_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        rows.append(row)
    return rows


def save_teachers(config, teachers: dict, session, folder: Path) -> None:
    """Each teacher trained here as a checkpoint another invocation loads (teachers.<name>.checkpoint)."""
    folder.mkdir(parents=True, exist_ok=True)
    info = session.teacher_prepared.info
    for name, teacher in teachers.items():
        path = folder / f"{name}.pt"
        if not path.is_file():
            meta = teacher_meta(config, name, info.class_names, info.name, session.teacher_split)
            torch.save({"state_dict": teacher.trained.delivered_state, "meta": meta}, path)


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mean_std(values: list[float]) -> str:
    return (f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f}" if len(values) > 1
            else f"{100 * values[0]:.2f}")


def table(rows: list[dict]) -> str:
    """Variants ranked by mean validation accuracy, with test mean ± std and the test gain over ce paired by seed."""
    by: dict[str, dict[int, dict]] = {}
    for row in rows:
        by.setdefault(row["variant"], {})[row["seed"]] = row
    ce = by.get("ce", {})
    lines = ["| variant | seeds | validation | test | gain over ce (paired) |", "|---|---|---|---|---|"]
    for name, seeds in sorted(by.items(), key=lambda kv: -statistics.fmean(r["val"] for r in kv[1].values())):
        paired = [seeds[s]["test"] - ce[s]["test"] for s in seeds if s in ce]
        gain = "-" if name == "ce" or not paired else (
            f"{100 * statistics.fmean(paired):+.2f}" + (f" ± {100 * statistics.stdev(paired):.2f}" if len(paired) > 1 else ""))
        lines.append(f"| {name} | {len(seeds)} | {100 * statistics.fmean(r['val'] for r in seeds.values()):.2f} | "
                     f"{mean_std([r['test'] for r in seeds.values()])} | {gain} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("setting", choices=sorted(SETTINGS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=None, help="comma-separated subset of the variants")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("runs/big_gap"))
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at once, each on one thread")
    args = parser.parse_args(argv)
    out = args.out / args.setting
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    chosen = args.variants.split(",") if args.variants else None
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(run_seed, [args.setting] * len(seeds), seeds, [chosen] * len(seeds), [out] * len(seeds),
                          [args.overrides] * len(seeds)))
    else:
        for seed in seeds:
            run_seed(args.setting, seed, chosen, out, args.overrides)
    print(table(read_rows(out / "rows.jsonl")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
