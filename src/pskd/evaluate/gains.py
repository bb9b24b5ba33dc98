"""A sweep's results: mean and spread over seeds per grid point and method, each method's paired gain over
cross-entropy (the same seed, grid point and labelled set), the markdown table and the gain map."""

from __future__ import annotations

import statistics

import numpy as np

from pskd.errors import ConfigError

FRACTION = "data.labels.fraction"
PRESET = "student.options.preset"


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def label(point: dict) -> str:
    return ", ".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in point.items())


def _name(variant: str, point: dict) -> str:
    return f"{variant} ({label(point)})" if point else variant


def summarise(dataset: str, protocol: str, student: str, seeds: list[int], rows: list[dict], variants: list[str],
              grid: dict[str, list], wall_time_s: float, base: dict | None = None) -> dict:
    """base: the config's values of the keys the gain map places (label fraction, student preset) where the grid
    does not vary them."""
    points = list({label(r["point"]): r["point"] for r in rows}.values())
    cells, methods, gains, teachers = [], {}, [], {}
    for point in points:
        here = [r for r in rows if r["point"] == point]
        baseline = {r["seed"]: r["accuracy"] for r in here if r["variant"] == "ce"}
        for variant in variants:
            runs = [r for r in here if r["variant"] == variant]
            if not runs:
                continue
            cell = {"point": point, "variant": variant, "accuracy": mean_std([r["accuracy"] for r in runs]),
                    "macro_f1": mean_std([r["macro_f1"] for r in runs]),
                    "val_accuracy": mean_std([r.get("val_accuracy", float("nan")) for r in runs]), "runs": runs,
                    "shared": all(r.get("shared") for r in runs)}
            paired = [r["accuracy"] - baseline[r["seed"]] for r in runs if r["seed"] in baseline]
            if paired and variant != "ce":
                cell["gain_over_ce"] = mean_std(paired)
                gains.append({"point": point, "variant": variant, "gain": cell["gain_over_ce"],
                              "shared": cell["shared"]})
            cells.append(cell)
            methods[_name(variant, point)] = cell
        for seed in sorted({r["seed"] for r in here}):
            with_teachers = next((r for r in here if r["seed"] == seed and r["teachers"]), None)
            for name, accuracy in (with_teachers or {"teachers": {}})["teachers"].items():
                teachers.setdefault(_name(name, point), []).append(accuracy)
    return {
        "dataset": dataset, "protocol": protocol, "student": student, "seeds": seeds, "grid": grid, "base": base or {},
        "variants": variants, "wall_time_s": wall_time_s, "methods": methods, "gains": gains,
        "teachers": {name: {"accuracy": mean_std(values)} for name, values in teachers.items()}, "rows": rows,
    }


def merge(parts: list[dict]) -> dict:
    """One results tree from sweeps of the same config over disjoint seeds (run on several machines)."""
    first = parts[0]
    for part in parts[1:]:
        same = all(part[k] == first[k] for k in ("dataset", "protocol", "student", "grid", "variants"))
        if not same:
            raise ConfigError("the sweeps to merge differ in dataset, protocol, student, grid or methods")
    seeds = [seed for part in parts for seed in part["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"the sweeps to merge share seeds: {sorted(seeds)}")
    return summarise(first["dataset"], first["protocol"], first["student"], seeds,
                     [row for part in parts for row in part["rows"]], first["variants"], first["grid"],
                     sum(part["wall_time_s"] for part in parts), first.get("base"))


def spread(figure: dict, signed: bool = False) -> str:
    """A mean_std figure in percent: "90.70 ± 1.85" over several values; the mean alone over one (no spread)."""
    mean = f"{100 * figure['mean']:+.2f}" if signed else f"{100 * figure['mean']:.2f}"
    return f"{mean} ± {100 * figure['std']:.2f}" if len(figure.get("values", ())) > 1 else mean


def _cell(figure: dict) -> str:
    return spread(figure)


def _seeds(count: int) -> str:
    return f"{count} seed" + ("" if count == 1 else "s")


def results_table(results: dict) -> str:
    lines = [f"# {results['dataset']} {results['protocol']}: student `{results['student']}`, seeds {results['seeds']}",
             "", "| method | seeds | validation accuracy (%) | test accuracy (%) | test macro-F1 (%) | "
             "gain over ce (points) |", "|---|---|---|---|---|---|"]
    for name, figures in results["methods"].items():
        gain = spread(figures["gain_over_ce"], signed=True) if "gain_over_ce" in figures else "-"
        val = _cell(figures["val_accuracy"]) if "val_accuracy" in figures else "-"
        lines.append(f"| {name} | {len(figures['accuracy']['values'])} | {val} | {_cell(figures['accuracy'])} | "
                     f"{_cell(figures['macro_f1'])} | {gain} |")
    if results["teachers"]:
        lines += ["", "| teacher | seeds | test accuracy (%) |", "|---|---|---|"]
        for name, figures in results["teachers"].items():
            lines.append(f"| {name} | {len(figures['accuracy']['values'])} | {_cell(figures['accuracy'])} |")
    several = any(len(f["accuracy"]["values"]) > 1 for f in [*results["methods"].values(),
                                                             *results["teachers"].values()])
    lines += ["", ("Mean ± standard deviation over the seeds (the mean alone where one seed gives no spread). "
                   if several else "One seed: each figure is that run's (no spread over seeds to show). ")
              + "Validation (labelled clips of the validation subjects) is the only figure a choice may use; the gain "
              f"is paired (same seed and grid point as ce); wall time {results['wall_time_s']:.0f} s."]
    return "\n".join(lines) + "\n"


def plot_gain_map(results: dict, path, root=None):
    """Gain of each method over ce against the label fraction, one panel per student size, error bars over
    seeds (none for one seed: no spread); one line per method and per value of the other grid keys (e.g. teachers
    same / all), one colour per line in every panel, one legend below the panels. Returns the (closed) figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    from pskd.evaluate.report import save_figure

    base = results.get("base", {})
    gains = [g for g in results["gains"] if not g.get("shared")]  # a deduplicated copy is drawn once, not again

    def value(g: dict, key: str, default):
        return g["point"].get(key, base.get(key, default))

    def name_of(g: dict) -> str:
        others = {k: v for k, v in g["point"].items() if k not in (FRACTION, PRESET)}
        return g["variant"] + (f" ({label(others)})" if others else "")

    panels = sorted({value(g, PRESET, "") for g in gains}, key=str) or [""]
    fractions = sorted({value(g, FRACTION, 1.0) for g in gains}) or [1.0]
    names = sorted({name_of(g) for g in gains})
    colours = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    # label fractions such as 0.05, 0.1, 0.25, 1 crowd the left of a linear axis: a log axis spaces them evenly
    logarithmic = fractions[0] > 0 and fractions[-1] / fractions[0] >= 4
    width = np.log(fractions[-1] / fractions[0]) if logarithmic else fractions[-1] - fractions[0]
    step = 0.012 * (width or 1.0) if len(fractions) > 1 else 0.01 * (abs(fractions[0]) or 1.0)
    figure, axes = plt.subplots(1, len(panels), figsize=(max(5.5 * len(panels), 7.0), 4.8), sharey=True,
                                squeeze=False, layout="constrained")
    for ax, panel in zip(axes[0], panels):
        lines: dict[str, list] = {}
        for g in gains:
            if value(g, PRESET, "") == panel:
                lines.setdefault(name_of(g), []).append((value(g, FRACTION, 1.0), g["gain"]))
        for name, points in sorted(lines.items()):
            points.sort(key=lambda p: p[0])
            offset = (names.index(name) - (len(names) - 1) / 2) * step  # lines side by side at one fraction
            xs = [p[0] * np.exp(offset) if logarithmic else p[0] + offset for p in points]
            several = any(len(p[1].get("values", ())) > 1 for p in points)
            ax.errorbar(xs, [100 * p[1]["mean"] for p in points],
                        yerr=[100 * p[1]["std"] for p in points] if several else None, marker="o", capsize=3,
                        label=name, color=colours(names.index(name) % colours.N))
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_xlabel("fraction of training clips with a label" + (" (log scale)" if logarithmic else ""))
        ax.set_title(f"student preset: {panel}" if panel else f"student {results['student']}")
        if logarithmic:
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_locator(FixedLocator(fractions))
        if len(fractions) == 1:  # one fraction: the lines side by side about it, not at the axis' ends
            ax.set_xlim(fractions[0] - 12 * step, fractions[0] + 12 * step)
        ax.set_xticklabels([f"{f:g}" for f in fractions])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy gain over ce (points)")
    seen: dict[str, object] = {}
    for ax in axes[0]:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(name, handle)
    if seen:
        ordered = sorted(seen)
        figure.legend([seen[n] for n in ordered], ordered, loc="outside lower center", fontsize=8,
                      ncol=min(len(ordered), 4), frameon=False)
    seeds = len(results["seeds"])
    figure.suptitle(f"{results['dataset']} {results['protocol']}: gain over cross-entropy, {_seeds(seeds)}"
                    + (" (error bars: standard deviation over the seeds)" if seeds > 1 else ""))
    save_figure(figure, path, 120, root)
    return figure
