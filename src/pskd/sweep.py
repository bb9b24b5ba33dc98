"""Methods x seeds x grid points on the same splits, with teachers trained once per labelled set and seed, and
the results table and gain map.

A grid (`--grid data.labels.fraction=0.1,0.25 --grid student.options.preset=tiny,default`) multiplies the runs:
every point of the grid, every method, every seed. Runs whose configs are identical (a method that uses no
teacher does not depend on the teachers' settings) are trained once. Runs that would train the same teachers (same
data, labels, preprocessing, augmentation, teachers and seed) share one training of them. With `jobs` > 1 these
groups run in that many processes; every training of a sweep runs on one thread (unless the config sets
`threads`), so the figures do not depend on the number of processes.

With ablation, PSKD's variants are added: without progressive learning (independent teachers), without ACS
(plain multi-teacher KD from the same teachers), with a single teacher, soft instead of hard ACS, and schedule B
(curriculum) beside schedule A.
"""

from __future__ import annotations

import copy
import itertools
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from pskd.config import RunConfig, apply_override, build_config, load_config, parse_value
from pskd.console import log_stderr
from pskd.distill.methods import method_names, student_stages, teacher_chain_used, teachers_used
from pskd.errors import ConfigError
from pskd.evaluate.gains import merge, plot_gain_map, results_table, summarise
from pskd.pipeline import open_session, run, train_teachers

__all__ = ["ablations", "merge", "merge_tree", "parse_grid", "results_table", "sweep"]

# what a teacher's training depends on, besides the chain and the teachers' own section
TEACHER_KEYS = ("seed", "deterministic", "threads", "device", "data", "preprocess", "augment", "teachers")
TEACHER_DISTILL_KEYS = ("temperature", "alpha", "cross_fit_folds")


def ablations(base: RunConfig) -> dict[str, dict]:
    """PSKD variants as overrides of the config tree (name -> changes)."""
    names = list(base.teachers)
    return {
        "pskd (A, hard ACS)": {"method": "pskd", "distill": {"progressive": "A", "acs_mode": "hard"}},
        "pskd without PL": {"method": "pskd", "distill": {"progressive": "none"}},
        "pskd without ACS": {"method": "pskd", "distill": {"stages": [{"start": 1, "teachers": names, "loss": "avg_kd"}]}},
        "pskd single teacher": {"method": "pskd", "distill": {"stages": [{"start": 1, "teachers": names[:1], "loss": "acs"}]}},
        "pskd soft ACS": {"method": "pskd", "distill": {"acs_mode": "soft"}},
        "pskd schedule B": {"method": "pskd", "distill": {"progressive": "B"}},
    }


def merge_tree(tree: dict, changes: dict) -> dict:
    """A config tree with `changes` applied, nested sections merged key by key (the input is not changed)."""
    out = copy.deepcopy(tree)
    for key, value in changes.items():
        out[key] = merge_tree(out.get(key) or {}, value) if isinstance(value, dict) else copy.deepcopy(value)
    return out


def parse_grid(items: list[str] | tuple[str, ...]) -> dict[str, list]:
    """`key=v1,v2` items (one per --grid) into {dotted key: [values]}, each value parsed as --set parses it."""
    grid: dict[str, list] = {}
    for item in items:
        key, sep, text = item.partition("=")
        values = [parse_value(v) for v in text.split(",") if v.strip()]
        if not sep or not key.strip() or not values:
            raise ConfigError(f"--grid {item}: expected key=value1,value2,...")
        if key.strip() in grid:
            raise ConfigError(f"--grid {key.strip()}: given twice")
        grid[key.strip()] = values
    return grid


def grid_points(grid: dict[str, list]) -> list[dict]:
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())] or [{}]


def point_label(point: dict) -> str:
    return ", ".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in point.items())


def _folder_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._=-" else "_" for c in text.replace(", ", "_")).strip("_")


def _tree(config: RunConfig) -> dict:
    """The config as a tree, with data.labels.teachers made 'same' where no label is hidden (then it changes
    nothing)."""
    tree = config.model_dump(mode="json")
    if not config.data.labels.hides_any:
        tree["data"]["labels"]["teachers"] = "same"
    return tree


def _run_key(config: RunConfig) -> str:
    """Identical keys, identical runs: what the student's training depends on (teachers only when used)."""
    tree = _tree(config)
    tree.pop("progress", None)
    if not teachers_used(config):  # only the options of its own terms matter to a method without teachers
        tree.pop("teachers", None)
        tree["data"]["labels"].pop("teachers", None)
        used = {term for stage in student_stages(config) for term in stage.terms}
        tree["distill"] = {name: options for name, options in tree["distill"]["terms"].items() if name in used}
    return json.dumps(tree, sort_keys=True)


def _teacher_key(config: RunConfig) -> str | None:
    if not teachers_used(config):
        return None
    tree = _tree(config)
    parts = {key: tree[key] for key in TEACHER_KEYS}
    parts["distill"] = {key: tree["distill"][key] for key in TEACHER_DISTILL_KEYS}
    return json.dumps(parts, sort_keys=True)


def plan(base: RunConfig, variants: dict[str, dict], seeds: list[int], grid: dict[str, list], out: Path) -> list[dict]:
    """Every run of the sweep: {point, seed, variant, config (a tree), folder}, one per distinct config, in groups
    that share teachers (a list of lists)."""
    tree = base.model_dump(mode="json")
    runs = []
    for point in grid_points(grid):
        for seed in seeds:
            for name, changes in variants.items():
                changed = merge_tree(tree, {**changes, "seed": seed})
                for key, value in point.items():
                    apply_override(changed, key, copy.deepcopy(value))
                source = f"sweep variant '{name}'" + (f" at {point_label(point)}" if point else "")
                config = build_config(changed, source=source)
                folder = out / f"seed{seed}" / (_folder_name(point_label(point)) if point else "") / _folder_name(name)
                runs.append({"point": point, "seed": seed, "variant": name, "config": config, "folder": folder})
    return runs


def _groups(runs: list[dict]) -> list[list[dict]]:
    """Runs grouped by the teachers they train; a run with the same config as an earlier one joins it as a copy."""
    groups: dict[str, list[dict]] = {}
    first: dict[str, dict] = {}
    for index, item in enumerate(runs):
        key = _run_key(item["config"])
        if key in first:
            first[key].setdefault("copies", []).append(item)
            continue
        first[key] = item
        teacher_key = _teacher_key(item["config"]) or f"alone-{index}"
        groups.setdefault(teacher_key, []).append(item)
    return list(groups.values())


def _train_group(group: list[dict], threads: int | None, log) -> list[dict]:
    """Train one group's teachers once (per chain setting), then each of its runs; return the result rows."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    teacher_sets: dict[bool, dict] = {}
    rows = []
    for item in group:
        config = item["config"]
        teachers = {}
        if teachers_used(config):
            chain = teacher_chain_used(config)
            if chain not in teacher_sets:
                log(f"seed {item['seed']} {point_label(item['point'])}: training teachers "
                    f"({'with' if chain else 'without'} the teacher chain)")
                # a teacher that distils from none is the same with or without the chain: trained once
                ready = {n: t for trained in teacher_sets.values() for n, t in trained.items()
                         if not config.teachers[n].distill_from}
                teacher_sets[chain] = train_teachers(open_session(config, log), ready)
            teachers = teacher_sets[chain]
        _, metrics = run(config, item["folder"], log=log, teachers=teachers)
        student = metrics["student"]
        log(f"seed {item['seed']} {point_label(item['point'])} {item['variant']}: test accuracy "
            f"{100 * student['test']['accuracy']:.2f} %")
        for copy_of in [item, *item.get("copies", [])]:
            rows.append({"point": copy_of["point"], "seed": copy_of["seed"], "variant": copy_of["variant"],
                         "accuracy": student["test"]["accuracy"], "macro_f1": student["test"]["macro_f1"],
                         "val_accuracy": student["val"]["accuracy"],
                         "run": str(item["folder"]), "shared": copy_of is not item,
                         "teachers": {n: t["test"]["accuracy"] for n, t in metrics["teachers"].items()}})
    return rows


def earlier_teachers(folder: Path) -> dict[tuple[str, bool], Path]:
    """The run directories of an earlier sweep (or any folder of runs) that saved every one of their teachers, by
    what the teachers depend on (the teacher key) and whether they were trained with the teacher chain."""
    if not folder.is_dir():
        raise ConfigError(f"--teachers-from {folder}: not a folder")
    found: dict[tuple[str, bool], Path] = {}
    for config_path in sorted(folder.rglob("config.yaml")):
        run_dir = config_path.parent
        if not (run_dir / "metrics.json").is_file():
            continue  # an unfinished run
        try:
            config = load_config(config_path)
        except ConfigError:
            continue
        key = _teacher_key(config)
        if key is not None and all((run_dir / "teachers" / f"{n}.pt").is_file() for n in config.teachers):
            found.setdefault((key, teacher_chain_used(config)), run_dir)
    return found


def reuse_teachers(runs: list[dict], found: dict[tuple[str, bool], Path], log) -> None:
    """Each run whose teachers an earlier run trained loads them from there (teachers.<name>.checkpoint)."""
    reused = 0
    for item in runs:
        config = item["config"]
        key = _teacher_key(config)
        earlier = found.get((key, teacher_chain_used(config))) if key is not None else None
        if earlier is None:
            continue
        changes = {"teachers": {name: {"checkpoint": str(earlier)} for name in config.teachers}}
        item["config"] = build_config(merge_tree(config.model_dump(mode="json"), changes),
                                      source=f"sweep run {item['folder']}")
        reused += 1
    log(f"sweep: {reused} of {len(runs)} runs load their teachers from earlier runs")


def _threads_for(config: RunConfig) -> RunConfig:
    return config if config.threads else config.model_copy(update={"threads": 1})


def _group_in_process(group: list[dict]) -> list[dict]:
    return _train_group(group, 1, log_stderr)


def sweep(base: RunConfig, methods: list[str], seeds: list[int], out: Path, ablation: bool = False,
          log=log_stderr, grid: dict[str, list] | None = None, jobs: int = 1, teachers_from: Path | None = None) -> dict:
    """Every method at every seed and grid point; teachers trained once per group, or loaded from the runs of
    `teachers_from` (an earlier sweep) that trained the same teachers."""
    unknown = [m for m in methods if m not in method_names()]
    if unknown:
        raise ConfigError(f"--methods: unknown method(s) {unknown}; known: {', '.join(method_names())}")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: already exists and is not empty; choose another --out")
    variants = {m: {"method": m} for m in methods}
    if ablation:
        variants.update(ablations(base))
    runs = plan(base, variants, seeds, grid or {}, out)
    for item in runs:
        item["config"] = _threads_for(item["config"])
    if teachers_from is not None:
        reuse_teachers(runs, earlier_teachers(teachers_from), log)
    groups = _groups(runs)
    started = time.perf_counter()
    log(f"sweep: {len(runs)} runs ({sum(len(g) for g in groups)} distinct) in {len(groups)} teacher groups, "
        f"{jobs} process(es)")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []

    def done(part: list[dict]) -> None:  # each group's rows as it ends: an interrupted sweep keeps them
        rows.extend(part)
        with open(out / "rows.jsonl", "a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in part)

    if jobs > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            for future in as_completed([pool.submit(_group_in_process, group) for group in groups]):
                done(future.result())
    else:
        for group in groups:
            done(_train_group(group, None, log))
    order = {(point_label(r["point"]), r["seed"], r["variant"]): i for i, r in enumerate(runs)}
    rows.sort(key=lambda r: order[(point_label(r["point"]), r["seed"], r["variant"])])
    fixed = {"data.labels.fraction": base.data.labels.fraction,
             "student.options.preset": base.student.options.get("preset", "default")}
    results = summarise(base.data.dataset, base.data.protocol, base.student.name, seeds, rows, list(variants),
                        grid or {}, time.perf_counter() - started, fixed)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(results_table(results))
    if "ce" in variants:
        plot_gain_map(results, out / "gain_map.png")
    return results
