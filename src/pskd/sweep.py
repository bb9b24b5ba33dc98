"""Methods x seeds x grid points on the same splits, with teachers trained once per labelled set and seed, and
the results table and gain map.

A grid (`--grid data.labels.fraction=0.1,0.25 --grid student.options.preset=tiny,default`) multiplies the runs:
every point of the grid, every method, every seed. Runs whose configs are identical (a method that uses no
teacher does not depend on the teachers' settings) are trained once. Runs that would train the same teachers (same
data, labels, preprocessing, augmentation, teachers and seed) share one training of them. With `jobs` > 1 these
groups run in that many processes; every training of a sweep runs on one thread (unless the config sets
`threads`), so the figures do not depend on the number of processes.

Every run's result row is appended to `rows.jsonl` as the run ends. An interrupted sweep continues with
`resume=True` (`pskd sweep ... --out DIR --resume`, the same methods, seeds and grid): runs with a row are not
trained again, a run that finished without one is read from its folder, an interrupted run continues from its
checkpoints, and the teachers of the runs that remain load from the sweep's finished runs where those saved them.
`invocations.jsonl` records each invocation's wall time; the results report their sum.

With ablation, PSKD's variants are added: without progressive learning (independent teachers), without ACS
(plain multi-teacher KD from the same teachers), with a single teacher, soft instead of hard ACS, and schedule B
(curriculum) beside schedule A.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from pskd.bounded import LimitError, loads_json, read_data_text, read_text
from pskd.config import RunConfig, build_config, load_config
from pskd.config_files import apply_override, parse_value
from pskd.console import log_stderr
from pskd.distill.methods import method_names, student_stages, teacher_chain_used, teachers_used
from pskd.errors import ConfigError
from pskd.evaluate.gains import merge, plot_gain_map, results_table, summarise
from pskd.fileio import append_text, create_folder, write_file
from pskd.limits import METADATA_BYTES, OVERRIDE_CHARS
from pskd.overwrite import mark, refuse_link
from pskd.pipeline import run
from pskd.rundir import staging_of
from pskd.training.session import open_session
from pskd.training.teachers import train_teachers

__all__ = ["ablations", "merge", "merge_tree", "parse_grid", "results_table", "sweep"]

# what a teacher's training depends on, besides the chain and the teachers' own section
TEACHER_KEYS = ("seed", "deterministic", "threads", "device", "data", "preprocess", "augment", "teachers")
TEACHER_DISTILL_KEYS = ("temperature", "alpha", "cross_fit_folds")


def ablations(base: RunConfig) -> dict[str, dict]:
    """PSKD variants as overrides of the config tree (name -> changes)."""
    names = list(base.teachers)
    return {
        "pskd (A, hard ACS)": {"method": "pskd", "distill": {"progressive": "A", "terms": {"acs": {"mode": "hard"}}}},
        "pskd without PL": {"method": "pskd", "distill": {"progressive": "none"}},
        "pskd without ACS": {"method": "pskd", "distill": {"stages": [{"start": 1, "teachers": names, "loss": "avg_kd"}]}},
        "pskd single teacher": {"method": "pskd", "distill": {"stages": [{"start": 1, "teachers": names[:1], "loss": "acs"}]}},
        "pskd soft ACS": {"method": "pskd", "distill": {"terms": {"acs": {"mode": "soft"}}}},
        "pskd schedule B": {"method": "pskd", "distill": {"progressive": "B"}},
    }


def merge_tree(tree: dict, changes: dict) -> dict:
    """A config tree with `changes` applied, nested sections merged key by key (the input is not changed)."""
    out = copy.deepcopy(tree)
    for key, value in changes.items():
        out[key] = merge_tree(out.get(key) or {}, value) if isinstance(value, dict) else copy.deepcopy(value)
    return out


def split_values(text: str, where: str) -> list[str]:
    """The values of `--grid KEY=V1,V2`: split at the commas outside brackets, braces and quotes, so a value may be
    a list or a mapping (`[0,1],[0,1,2]`, `{a: 1, b: 2},{a: 3}`) or a quoted string with a comma (`'a,b',c`)."""
    parts, start, depth, quote, before = [], 0, 0, "", ","
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"" and before in ",[{:":  # a quote opens a value only where one starts
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"{where}: '{char}' closes nothing (at character {index + 1})")
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
        if not char.isspace():
            before = char
    if quote or depth:
        raise ConfigError(f"{where}: {'a quote' if quote else 'a bracket'} is left open")
    return [*parts, text[start:]]


def parse_grid(items: list[str] | tuple[str, ...]) -> dict[str, list]:
    """`key=v1,v2` items (one per --grid) into {dotted key: [values]}, each value parsed as --set parses it (see
    split_values for where the values part)."""
    grid: dict[str, list] = {}
    for item in items:
        key, sep, text = item.partition("=")
        where = f"--grid {key.strip()}"
        if len(text) > OVERRIDE_CHARS:
            raise ConfigError(f"{where}: {len(text)} characters, more than the {OVERRIDE_CHARS} allowed")
        values = [parse_value(v, where) for v in split_values(text, where) if v.strip()]
        if not sep or not key.strip() or not values:
            raise ConfigError(f"--grid {item}: expected key=value1,value2,...")
        if key.strip() in grid:
            raise ConfigError(f"--grid {key.strip()}: given twice")
        grid[key.strip()] = values
    return grid


MAX_SWEEP_RUNS = 100_000  # runs one sweep may plan (grid points x seeds x methods): the map is a few hundred
NAME_BYTES = 255  # a folder name, as file systems allow


def grid_points(grid: dict[str, list]) -> list[dict]:
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())] or [{}]


def check_size(grid: dict[str, list], seeds: list[int], variants: dict) -> None:
    """The number of runs a sweep would plan, counted before any is built: at most MAX_SWEEP_RUNS."""
    runs = len(seeds) * len(variants) * math.prod(len(values) for values in grid.values())
    if runs > MAX_SWEEP_RUNS:
        raise ConfigError(f"--grid: {runs:,} runs (grid points x seeds x methods), more than the "
                          f"{MAX_SWEEP_RUNS:,} a sweep may plan")


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
    check_size(grid, seeds, variants)
    tree = base.model_dump(mode="json")
    runs, folders = [], {}
    for point in grid_points(grid):
        for seed in seeds:
            for name, changes in variants.items():
                changed = merge_tree(tree, {**changes, "seed": seed})
                for key, value in point.items():
                    apply_override(changed, key, copy.deepcopy(value), where=f"--grid {key}")
                source = f"sweep variant '{name}'" + (f" at {point_label(point)}" if point else "")
                config = build_config(changed, source=source)
                folder = out / f"seed{seed}" / (_folder_name(point_label(point)) if point else "") / _folder_name(name)
                _check_folder(folder, out, folders, f"{name}" + (f" at {point_label(point)}" if point else ""))
                runs.append({"point": point, "seed": seed, "variant": name, "config": config, "folder": folder})
    return runs


def _check_folder(folder: Path, out: Path, taken: dict[Path, str], what: str) -> None:
    """Each run of a sweep in a folder of its own, with names a file system takes: checked before any training."""
    if any(len(part.encode()) > NAME_BYTES for part in folder.relative_to(out).parts):
        raise ConfigError(f"--grid: the run {what[:120]} would need a folder name longer than {NAME_BYTES} bytes")
    if folder in taken:
        raise ConfigError(f"--grid: the runs {taken[folder][:80]} and {what[:80]} would share the folder "
                          f"{folder.relative_to(out)} (their values differ only in characters a folder name drops)")
    taken[folder] = what


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


def _row(item: dict, copy_of: dict, metrics: dict) -> dict:
    student = metrics["student"]
    return {"point": copy_of["point"], "seed": copy_of["seed"], "variant": copy_of["variant"],
            "accuracy": student["test"]["accuracy"], "macro_f1": student["test"]["macro_f1"],
            "val_accuracy": student["val"]["accuracy"], "run": str(item["folder"]), "shared": copy_of is not item,
            "teachers": {n: t["test"]["accuracy"] for n, t in metrics.get("teachers", {}).items()}}


def _append_rows(path: Path | None, rows: list[dict]) -> None:
    """One write per run, in append mode: lines from several processes never interleave."""
    if path is not None:
        append_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def _train_group(group: list[dict], threads: int | None, log, rows_path: Path | None = None) -> list[dict]:
    """Train one group's teachers once (per chain setting), then each of its runs; return the result rows (each
    run's also appended to rows_path as it ends)."""
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
        _, metrics = run(config, item["folder"], log=log, teachers=teachers, resume=item.get("resume", False),
                         command="sweep")
        log(f"seed {item['seed']} {point_label(item['point'])} {item['variant']}: test accuracy "
            f"{100 * metrics['student']['test']['accuracy']:.2f} %")
        mine = [_row(item, copy_of, metrics) for copy_of in [item, *item.get("copies", [])]]
        _append_rows(rows_path, mine)
        rows.extend(mine)
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


def _group_in_process(group: list[dict], rows_path: Path) -> list[dict]:
    return _train_group(group, 1, log_stderr, rows_path)


def _key(row: dict) -> tuple[str, int, str]:
    return point_label(row["point"]), row["seed"], row["variant"]


def _read_rows(path: Path) -> list[dict]:
    """The rows an earlier invocation recorded; a line cut short by a kill is ignored, anything else odd is an
    error naming the file."""
    rows = []
    lines = _records(path).splitlines() if path.is_file() else []
    for number, line in enumerate(lines, 1):
        try:
            row = _result_row(line)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            if number == len(lines):
                continue  # the last line, cut short by a kill
            raise ConfigError(f"{path}: line {number} is not a result row of a sweep") from None
        rows.append(row)
    return rows


def _result_row(line: str) -> dict:
    """One line of rows.jsonl as _row writes it; ValueError (or KeyError, TypeError) for anything else, such as a
    figure that is not a finite fraction (a NaN never reaches the results)."""
    row = loads_json(line)
    if not (isinstance(row, dict) and isinstance(row.get("point"), dict) and isinstance(row.get("variant"), str)
            and isinstance(row.get("seed"), int) and isinstance(row.setdefault("teachers", {}), dict)):
        raise ValueError("not a result row")
    if not all(_fraction(row[key]) for key in ("accuracy", "macro_f1")):
        raise ValueError("a figure that is not a fraction")
    return row


def _fraction(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


def _records(path: Path) -> str:
    """The text of a sweep's rows.jsonl or invocations.jsonl, within its size limit; a ConfigError otherwise."""
    try:
        return read_data_text(path, "records")
    except LimitError as err:
        raise ConfigError(f"{path}: {err}") from None
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"{path}: not a readable UTF-8 text file") from None


def _finished_metrics(folder: Path) -> dict | None:
    """The metrics of a run that finished without its row reaching rows.jsonl (killed just after), or None."""
    path = folder / "metrics.json"
    if not path.is_file():
        return None
    try:
        metrics = loads_json(read_text(path, METADATA_BYTES))
        metrics["student"]["test"]["accuracy"], metrics["student"]["val"]["accuracy"]  # noqa: B018
    except (OSError, ValueError, KeyError, TypeError):  # ValueError: not JSON, not UTF-8, beyond the limits
        raise ConfigError(f"{path}: not the metrics of a finished run; move the folder away to train it again") \
            from None
    return metrics


def resume_plan(runs: list[dict], out: Path, log) -> tuple[list[dict], list[dict]]:
    """What an interrupted sweep still has to train, and the rows it already has: rows.jsonl, then finished run
    folders without a row. Rows of runs this sweep does not plan mean the sweep was started otherwise."""
    rows_path = out / "rows.jsonl"
    planned = {_key(item): item for item in runs}
    done = _read_rows(rows_path)
    foreign = [key for key in map(_key, done) if key not in planned]
    if foreign:
        point, seed, variant = foreign[0]
        raise ConfigError(f"{out / 'rows.jsonl'}: it holds runs this sweep does not plan (seed {seed} {point} "
                          f"{variant}); resume with the same config, --methods, --seeds and --grid")
    keys = {_key(row) for row in done}
    recovered = []
    for item in runs:
        metrics = None if _key(item) in keys else _finished_metrics(item["folder"])
        if metrics is not None:
            recovered.append(_row(item, item, metrics))
            keys.add(_key(item))
    if rows_path.is_file():  # rewritten whole, without a line cut short by the kill, before anything is appended
        write_file(rows_path, "".join(json.dumps(row) + "\n" for row in done), root=out)
    _append_rows(rows_path, recovered)
    remaining = [item for item in runs if _key(item) not in keys]
    for item in remaining:
        item["resume"] = staging_of(item["folder"]).is_dir()
    log(f"sweep: resuming {out}: {len(keys)} of {len(runs)} runs done, {len(remaining)} to train "
        f"({sum(item['resume'] for item in remaining)} of them interrupted, continued from their checkpoints)")
    return remaining, done + recovered


def _record_invocation(out: Path, seconds: float, trained: int) -> float:
    """Append this invocation's wall time to invocations.jsonl; return the sum over every invocation."""
    path = out / "invocations.jsonl"
    earlier = 0.0
    if path.is_file():
        for line in _records(path).splitlines():
            try:
                seconds_then = float(loads_json(line)["seconds"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            earlier += seconds_then if 0 <= seconds_then < 1e9 else 0.0  # a NaN or a negative time is no time
    append_text(path, json.dumps({"ended": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(seconds, 1),
                                  "runs_trained": trained}) + "\n")
    return earlier + seconds


def sweep(base: RunConfig, methods: list[str], seeds: list[int], out: Path, ablation: bool = False,
          log=log_stderr, grid: dict[str, list] | None = None, jobs: int = 1, teachers_from: Path | None = None,
          resume: bool = False) -> dict:
    """Every method at every seed and grid point; teachers trained once per group, or loaded from the runs of
    `teachers_from` (an earlier sweep) that trained the same teachers. resume: continue the interrupted sweep in
    `out` (see the module's notes)."""
    unknown = [m for m in methods if m not in method_names()]
    if unknown:
        raise ConfigError(f"--methods: unknown method(s) {unknown}; known: {', '.join(method_names())}")
    refuse_link(out)
    if resume and not out.is_dir():
        raise ConfigError(f"--resume: {out} is not the folder of an earlier sweep")
    if not resume and out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: already exists and is not empty; choose another --out, or continue the sweep "
                          "there with --resume")
    variants = {m: {"method": m} for m in methods}
    if ablation:
        variants.update(ablations(base))
    runs = plan(base, variants, seeds, grid or {}, out)
    for item in runs:
        item["config"] = _threads_for(item["config"])
    rows, todo = [], runs
    if resume:
        todo, rows = resume_plan(runs, out, log)
    fresh = [item for item in todo if not item.get("resume")]
    for source in ([teachers_from] if teachers_from is not None else []) + ([out] if resume else []):
        reuse_teachers(fresh, earlier_teachers(source), log)
    groups = _groups(todo)
    started = time.perf_counter()
    log(f"sweep: {len(todo)} runs ({sum(len(g) for g in groups)} distinct) in {len(groups)} teacher groups, "
        f"{jobs} process(es)")
    if create_folder(out, exist_ok=True) or not resume:
        mark(out, "sweep", "sweep")
    rows_path = out / "rows.jsonl"
    if jobs > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            for future in as_completed([pool.submit(_group_in_process, group, rows_path) for group in groups]):
                rows.extend(future.result())
    else:
        for group in groups:
            rows.extend(_train_group(group, None, log, rows_path))
    wall = _record_invocation(out, time.perf_counter() - started, sum(len(g) for g in groups))
    order = {(point_label(r["point"]), r["seed"], r["variant"]): i for i, r in enumerate(runs)}
    rows.sort(key=lambda r: order[(point_label(r["point"]), r["seed"], r["variant"])])
    fixed = {"data.labels.fraction": base.data.labels.fraction,
             "student.options.preset": base.student.options.get("preset", "default")}
    results = summarise(base.data.dataset, base.data.protocol, base.student.name, seeds, rows, list(variants),
                        grid or {}, wall, fixed)
    write_file(out / "results.json", json.dumps(results, indent=2), root=out)
    write_file(out / "results.md", results_table(results), root=out)
    if "ce" in variants:
        plot_gain_map(results, out / "gain_map.png", root=out)
    return results
