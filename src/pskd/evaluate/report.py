"""report.md and the pictures of a run: confusion matrix and learning curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pskd.data.clip import natural_key  # noqa: E402
from pskd.fileio import write_file  # noqa: E402


def save_figure(fig, path: Path, dpi: int, root: Path | None = None) -> None:
    """A figure as a PNG through pskd.fileio (atomic, no link followed), then closed."""
    try:
        write_file(path, lambda handle: fig.savefig(handle, format="png", dpi=dpi), root=root)
    finally:
        plt.close(fig)


def _text_inches(text: str, points: float) -> float:
    """About how wide a line of text is, in inches (DejaVu Sans averages about 0.6 em a character)."""
    return len(text) * points * 0.6 / 72


def plot_confusion(confusion: list[list[int]], class_names: list[str], path: Path, title: str,
                   root: Path | None = None):
    """The confusion matrix, rows the true class, shaded by the share of the true class; every class named in
    full on both axes. The figure is sized from the number of classes and the longest name (UTD-MHAD's 27 long
    names as much as 2 short ones). Returns the (closed) figure."""
    counts = np.asarray(confusion, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(class_names)
    labels = [f"{i + 1} {name}" for i, name in enumerate(class_names)]
    font = 8 if n <= 12 else 7
    longest = max((_text_inches(label, font) for label in labels), default=0.5)
    upright = longest > 1.0  # long names read downwards (rotated 90 degrees), short ones at 45
    cell = 0.55 if n <= 6 else 0.45 if n <= 12 else 0.34
    matrix = max(2.5, cell * n)
    title_width = max(_text_inches(line, 10) for line in title.splitlines()) if title else 0.0
    width = max(longest + matrix + 2.0, title_width + 0.6)
    height = matrix + (longest if upright else 0.75 * longest) + 0.45 * (len(title.splitlines()) + 2) + 0.3
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, fontsize=font, rotation=90 if upright else 45,
                  ha="center" if upright else "right", rotation_mode="default" if upright else "anchor")
    ax.set_yticks(range(n), labels, fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=font - 1 if n > 12 else font,
                        color="white" if share[i, j] > 0.6 else "black")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    save_figure(fig, path, 120, root)
    return fig


def plot_learning_curves(history: list[dict], best_epoch: int, path: Path, title: str,
                         root: Path | None = None):
    """Side by side: the training loss (and, with several, each of its terms), the validation loss and the
    accuracies, each on its own axis (a distillation loss of 25 and a cross-entropy of 3 are not one scale), with
    whole-number epochs and the selected epoch marked. Returns the (closed) figure."""
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    marker = "o" if len(epochs) <= 20 else None
    validated = [h for h in history if "val_loss" in h]
    terms = [k for k in dict.fromkeys(k for h in history for k in h)
             if k.startswith("train_") and k not in ("train_loss", "train_accuracy")]
    panels = 3 if validated else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.0 * panels, 4.2), sharex=True, layout="constrained")
    train, accuracy = axes[0], axes[-1]
    train.plot(epochs, [h["train_loss"] for h in history], marker=marker, markersize=3, color="C0",
               label="training loss (all terms)" if len(terms) > 1 else "training loss")
    if len(terms) > 1:
        for k, name in enumerate(terms):
            train.plot(epochs, [h.get(name, np.nan) for h in history], linestyle="--", linewidth=1,
                       color=f"C{k + 2}", label=name.removeprefix("train_"))
    train.set_title("training loss", fontsize=10)
    train.set_ylabel("loss (training objective)")
    if validated:
        val = axes[1]
        val.plot([h["epoch"] for h in validated], [h["val_loss"] for h in validated], marker=marker, markersize=3,
                 color="C1", label="validation cross-entropy")
        val.set_title("validation loss", fontsize=10)
        val.set_ylabel("cross-entropy")
    accuracy.plot(epochs, [100 * h["train_accuracy"] for h in history], marker=marker, markersize=3, color="C0",
                  label="training (augmented)")
    if validated:
        accuracy.plot([h["epoch"] for h in validated], [100 * h["val_accuracy"] for h in validated], marker=marker,
                      markersize=3, color="C1", label="validation")
    accuracy.set_title("accuracy", fontsize=10)
    accuracy.set_ylabel("accuracy (%)")
    accuracy.set_ylim(0, 102)
    for axis in axes:
        axis.axvline(best_epoch, color="grey", linestyle=":", label=f"selected epoch {best_epoch}")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path, 110, root)
    return fig


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def write_report(metrics: dict, class_names: list[str], path: Path, root: Path | None = None) -> str:
    """The human summary of a run; returns the text it wrote."""
    student = metrics["student"]
    lines = [*_header(metrics), *_teachers(metrics), *_student(student), *_per_class(student, class_names),
             *_per_subject(student), *_left_out(metrics)]
    text = "\n".join(lines) + "\n"
    write_file(path, text, root=root)
    return text


def _most_confused(confusion: list[list[int]], class_names: list[str], top: int = 5) -> list[str]:
    counts = np.asarray(confusion)
    pairs = [
        (int(counts[i, j]), i, j)
        for i in range(len(counts))
        for j in range(len(counts))
        if i != j and counts[i, j] > 0
    ]
    pairs.sort(reverse=True)
    return [f"{class_names[i]} -> {class_names[j]} ({n})" for n, i, j in pairs[:top]]


def _header(metrics: dict) -> list[str]:
    """The title, the run, the split and, with scarce labels, who learnt from which labels."""
    split = metrics["split"]
    lines = [
        f"# {metrics['name']}: {metrics['method']} on {metrics['dataset']} ({metrics['protocol']})",
        "",
        f"Seed {metrics['seed']}, device {metrics['device']}, wall time {metrics['wall_time_s']:.1f} s.",
        f"Split: train {split['train']} clips (subjects {split['train_subjects']}), "
        f"validation {split['val']} (subjects {split['val_subjects']}), "
        f"test {split['test']} (subjects {split['test_subjects']}). Validation: the training subjects "
        f"{split['val_subjects']}, held out of training until the refit.",
        "",
    ]
    labels = metrics.get("labels")
    if labels and labels["unlabelled"]:
        who = "every training clip's label" if labels["teachers"] == "all" else "the same labelled clips"
        lines += [
            f"Scarce labels: {labels['student_labelled']} training clips keep their label (fraction "
            f"{labels['fraction']:g}, label seed {labels['seed']}"
            + (f", subjects {labels['subjects']}" if labels["subjects"] is not None else "")
            + f"), {labels['unlabelled']} are unlabelled paired clips. The student's cross-entropy sees the labelled "
            f"clips only; teachers learnt from {who} ({labels['teachers_labelled']} clips).",
            "",
        ]
    return lines


def _teachers(metrics: dict) -> list[str]:
    """The teachers' table and the student's stages (nothing for a student without teachers)."""
    if not metrics.get("teachers"):
        return []
    lines = [
        "## Teachers",
        "",
        "| teacher | model | streams | params | test accuracy (%) | test macro-F1 (%) | best-on-val (%) | last epoch (%) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, teacher in metrics["teachers"].items():
        lines.append(
            f"| {name} | `{teacher['model']}` | {', '.join(teacher['streams'])} | {teacher['params']:,} | "
            f"{_pct(teacher['test']['accuracy'])} | {_pct(teacher['test']['macro_f1'])} | "
            f"{_pct(teacher['test_best']['accuracy'])} | {_pct(teacher['test_last']['accuracy'])} |"
        )
    stages = "; ".join(
        f"from epoch {s['start']}: {s['loss']} from {', '.join(s['teachers'])}" for s in metrics.get("stages", [])
    )
    return [*lines, "", f"Student stages: {stages or 'cross-entropy only'}.", ""]


def _former_gate(gate: dict) -> str:
    return (f"validation {_pct(gate['val_distilled'])} % distilled against {_pct(gate['val_cross_entropy'])} % "
            "without teachers")


def _agreement(found: dict | None) -> list[str]:
    """How far the teachers agreed, confidently, on the unlabelled training clips (no label needed to know)."""
    if not found:
        return []
    followed = ", ".join(f"{name} on {_pct(share)} %" for name, share in found["followed"].items())
    return ["", f"Unlabelled training clips: {found['clips']}. The teachers agree, one at least 90 % confident, on "
                f"{_pct(found['confident_agreement'])} % of them; unfiltered ACS follows {followed}. Below about a "
                "third, teachers that learnt from few labels can cost the student accuracy"
                + ("; so ACS was soft and taught only the clips on which the teachers agree, one at least 90 % "
                   "confident (distill.unlabelled_filter: auto)." if found.get("filtered") else ".")]


def _student(student: dict) -> list[str]:
    """The student's checkpoints (selected, last, refit), the gate, and the pictures."""
    fixed = student.get("select") == "last"
    chosen = "the last: a fixed schedule, validation only watched" if fixed else "best on validation"
    selected = "selected (the last epoch)" if fixed else "best on validation"
    lines = [
        "## Student",
        "",
        f"`{student['model']}` on {', '.join(student['streams'])}: {student['params']:,} parameters, "
        f"{student['epochs_trained']} epochs, selected epoch {student['best_epoch']} ({chosen}).",
        "",
        "| checkpoint | validation accuracy (%) | test accuracy (%) | test macro-F1 (%) |",
        "|---|---|---|---|",
        f"| {selected} | {_pct(student['val']['accuracy'])} | {_pct(student['test_best']['accuracy'])} | "
        f"{_pct(student['test_best']['macro_f1'])} |",
        f"| last epoch | {_pct(student['val_last']['accuracy'])} | {_pct(student['test_last']['accuracy'])} | "
        f"{_pct(student['test_last']['macro_f1'])} |",
    ]
    if student.get("refit"):
        lines.append(
            f"| refit on all training subjects to epoch {student['best_epoch']} (delivered) | - | "
            f"{_pct(student['test']['accuracy'])} | {_pct(student['test']['macro_f1'])} |"
        )
    gate = student.get("gate")
    if gate and "val_distilled" in gate:
        lines += ["", f"Gate (distill.gate: {gate.get('rule', 'any')}): {gate.get('why') or _former_gate(gate)}, so the "
                  f"{gate['delivered']} student is delivered (test: {_pct(gate['test_distilled'])} % distilled, "
                  f"{_pct(gate['test_cross_entropy'])} % without; the test split chose nothing)."]
    elif gate:
        lines += ["", f"Gate (distill.gate: {gate['rule']}): {gate['why']}; the distilled student is delivered."]
    lines += _agreement(student.get("unlabelled_agreement"))
    predictable = student.get("teacher_variance_predictable")
    if predictable:
        lines += ["", "From simple features of the watch clip, on held-out training subjects, a linear model predicts "
                  + ", ".join(f"{_pct(share)} % of teacher {name}'s embedding variance" for name, share in
                              predictable.items())
                  + " (the part a student could learn to match; pskd data diagnose says more)."]
    lines += [
        "",
        "The test split was evaluated once, after training; "
        + ("the schedule was fixed in advance." if fixed else "selection used the validation split only."),
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        "![learning curves](learning_curves.png)",
    ]
    return lines


def _per_class(student: dict, class_names: list[str]) -> list[str]:
    """Per class figures of the delivered model, and the most frequent confusions."""
    lines = ["", "## Per class (delivered model, test split)", "", "| # | class | precision (%) | recall (%) | F1 (%) | clips |",
             "|---|---|---|---|---|---|"]
    for i, row in enumerate(student["test"]["per_class"]):
        lines.append(
            f"| {i + 1} | {row['class']} | {_pct(row['precision'])} | {_pct(row['recall'])} | {_pct(row['f1'])} | "
            f"{row['support']} |"
        )
    confused = _most_confused(student["test"]["confusion_matrix"], class_names)
    if confused:
        lines += ["", "Most frequent confusions: " + "; ".join(confused) + "."]
    return lines


def _left_out(metrics: dict) -> list[str]:
    """The rows of the dataset the loader left out, each with its reason."""
    rows = metrics.get("left_out") or []
    if not rows:
        return []
    return ["", f"## Rows left out ({len(rows)})", "", "The loader left these rows of the dataset out "
            "(`data.folder.on_problem: skip`):", "", *(f"- {row}" for row in rows)]


def _per_subject(student: dict) -> list[str]:
    lines: list[str] = []
    per_subject = student.get("test_per_subject")
    if per_subject:
        lines += ["", "## Per test subject (delivered model)", "", "| subject | accuracy (%) | clips |", "|---|---|---|"]
        lines += [f"| {subject} | {_pct(row['accuracy'])} | {row['clips']} |"
                  for subject, row in sorted(per_subject.items(), key=lambda item: natural_key(item[0]))]
        lines += ["", "Each test clip's prediction and confidence: `predictions.csv`."]
    return lines
