"""Methods x seeds on the same splits, the same student and the same teachers (trained once per seed), and the
results table: mean and standard deviation over seeds of the student's test accuracy and macro-F1 per method.

With ablation, PSKD's variants are added: without progressive learning (independent teachers), without ACS
(plain multi-teacher KD from the same teachers), with a single teacher, soft instead of hard ACS, and schedule B
(curriculum) beside schedule A.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from pskd.config import RunConfig, build_config
from pskd.distill.methods import method_names, teacher_chain_used, teachers_used
from pskd.errors import ConfigError
from pskd.console import log_stderr
from pskd.pipeline import open_session, run, train_teachers


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
    """A config tree with `changes` applied, nested sections merged key by key."""
    out = dict(tree)
    for key, value in changes.items():
        out[key] = merge_tree(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def _mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def sweep(base: RunConfig, methods: list[str], seeds: list[int], out: Path, ablation: bool = False,
          log=log_stderr) -> dict:
    unknown = [m for m in methods if m not in method_names()]
    if unknown:
        raise ConfigError(f"--methods: unknown method(s) {unknown}; known: {', '.join(method_names())}")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: already exists and is not empty; choose another --out")
    variants = {m: {"method": m} for m in methods}
    if ablation:
        variants.update(ablations(base))
    tree = base.model_dump(mode="json")
    configs = {name: {seed: build_config(merge_tree(tree, {**changes, "seed": seed}), source=f"sweep variant '{name}'")
                      for seed in seeds} for name, changes in variants.items()}
    started = time.perf_counter()
    rows: dict[str, list[dict]] = {name: [] for name in variants}
    teacher_rows: dict[str, list[float]] = {}
    for seed in seeds:
        # (chain used or not, cross-fitting folds) -> trained teachers, shared by every method of this seed
        teacher_sets = {}
        for name, by_seed in configs.items():
            config = by_seed[seed]
            key = None
            if teachers_used(config):
                key = (teacher_chain_used(config), config.distill.cross_fit_folds)
            if key is not None and key not in teacher_sets:
                log(f"seed {seed}: training teachers ({'with' if key[0] else 'without'} the teacher chain"
                    + (f", cross-fitted over {key[1]} folds)" if key[1] else ")"))
                # a teacher that distils from no other is the same with or without the chain: trained once
                ready = {n: t for (chain, folds), trained in teacher_sets.items() if folds == key[1]
                         for n, t in trained.items() if not config.teachers[n].distill_from}
                teacher_sets[key] = train_teachers(open_session(config, log), ready)
                if key == (True, base.distill.cross_fit_folds):
                    for teacher_name, teacher in teacher_sets[key].items():
                        teacher_rows.setdefault(teacher_name, []).append(teacher.trained.summary["test"]["accuracy"])
            folder = out / f"seed{seed}" / name.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")
            _, metrics = run(config, folder, log=log, teachers=teacher_sets.get(key, {}))
            student = metrics["student"]
            rows[name].append({"seed": seed, "accuracy": student["test"]["accuracy"],
                               "macro_f1": student["test"]["macro_f1"], "run": str(folder)})
            log(f"seed {seed} {name}: test accuracy {100 * student['test']['accuracy']:.2f} %")
    results = summarise(base.data.dataset, base.data.protocol, base.student.name, seeds, rows, teacher_rows,
                        time.perf_counter() - started)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(results_table(results))
    return results


def summarise(dataset: str, protocol: str, student: str, seeds: list[int], rows: dict[str, list[dict]],
              teacher_rows: dict[str, list[float]], wall_time_s: float) -> dict:
    return {
        "dataset": dataset, "protocol": protocol, "student": student, "seeds": seeds, "wall_time_s": wall_time_s,
        "methods": {name: {"accuracy": _mean_std([r["accuracy"] for r in runs]),
                           "macro_f1": _mean_std([r["macro_f1"] for r in runs]), "runs": runs}
                    for name, runs in rows.items()},
        "teachers": {name: {"accuracy": _mean_std(values)} for name, values in teacher_rows.items()},
    }


def merge(parts: list[dict]) -> dict:
    """One results tree from sweeps of the same config over disjoint seeds (run on several machines)."""
    first = parts[0]
    for part in parts[1:]:
        same = all(part[k] == first[k] for k in ("dataset", "protocol", "student"))
        if not same or list(part["methods"]) != list(first["methods"]):
            raise ConfigError("the sweeps to merge differ in dataset, protocol, student or methods")
    seeds = [seed for part in parts for seed in part["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"the sweeps to merge share seeds: {sorted(seeds)}")
    rows = {name: [run for part in parts for run in part["methods"][name]["runs"]] for name in first["methods"]}
    teacher_rows = {name: [v for part in parts for v in part["teachers"].get(name, {}).get("accuracy", {})
                           .get("values", [])] for name in first["teachers"]}
    return summarise(first["dataset"], first["protocol"], first["student"], seeds, rows, teacher_rows,
                     sum(part["wall_time_s"] for part in parts))


def results_table(results: dict) -> str:
    def cell(figure: dict) -> str:
        return f"{100 * figure['mean']:.2f} ± {100 * figure['std']:.2f}"

    lines = [
        f"# {results['dataset']} {results['protocol']}: student `{results['student']}`, seeds {results['seeds']}",
        "",
        "| method | test accuracy (%) | test macro-F1 (%) |",
        "|---|---|---|",
    ]
    for name, figures in results["methods"].items():
        lines.append(f"| {name} | {cell(figures['accuracy'])} | {cell(figures['macro_f1'])} |")
    if results["teachers"]:
        lines += ["", "| teacher | test accuracy (%) |", "|---|---|"]
        for name, figures in results["teachers"].items():
            lines.append(f"| {name} | {cell(figures['accuracy'])} |")
    lines += ["", f"Mean ± standard deviation over seeds; wall time {results['wall_time_s']:.0f} s."]
    return "\n".join(lines) + "\n"
