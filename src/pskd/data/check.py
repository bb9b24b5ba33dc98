"""What `pskd data check` prints of a dataset's summary (the dict its registered summarize returns)."""

from __future__ import annotations


def summary_lines(summary: dict) -> list[str]:
    """The summary as aligned lines: counts, every stream's rate, lengths and durations, per class and per subject
    counts, what is missing or was skipped, and the loader's notes."""
    out: list[str] = []
    out.append(f"{summary['dataset']} at {summary['root']}: OK")
    out.append(f"  clips     {summary['clips']}")
    out.append(f"  classes   {summary['classes']}")
    out.append(f"  subjects  {len(summary['subjects'])} ({', '.join(map(str, summary['subjects']))})")
    out.append(f"  trials    {len(summary['trials'])} ({', '.join(map(str, summary['trials']))})")
    for stream, info in summary["modalities"].items():
        seconds = info.get("duration_s")
        spread = f", {seconds['min']:.2f}-{seconds['max']:.2f} s (median {seconds['median']:.2f})" if seconds else ""
        out.append(
            f"  {stream:<13} {info['rate_hz']:g} Hz, {info['min_length']}-{info['max_length']} samples "
            f"(median {info['median_length']:g}){spread}"
        )
    if summary.get("clips_per_class"):
        out.append("  per class " + ", ".join(f"{name}: {n}" for name, n in summary["clips_per_class"].items()))
    if summary.get("clips_per_subject"):
        out.append("  per subject " + ", ".join(f"{s}: {n}" for s, n in summary["clips_per_subject"].items()))
    missing = ", ".join(summary["missing"]) or "none"
    out.append(f"  missing   {missing} ({summary['missing_note']})")
    if summary.get("sensor_placement"):
        out.append(f"  sensor    {summary['sensor_placement']}")
    if summary.get("found"):
        out.append("  found     " + "; ".join(f"{name}: {'yes' if there else 'no'}"
                                           for name, there in summary["found"].items()))
    if summary.get("labels"):
        out.append("  labels    " + ", ".join(f"subject {subject}: {row['labelled']} labelled + {row['unlabelled']} "
                                              "unlabelled" for subject, row in summary["labels"].items()))
    for item in summary["skipped"]:
        out.append(f"  skipped   {item}")
    for note in summary.get("notes", []):
        out.append(f"  note      {note}")
    return out
