"""What ACS teaches on the unlabelled training clips of finished runs, checked against the labels the run hid.

    python benchmarks/unlabelled_targets.py RUN_DIR [RUN_DIR ...] [--threshold 0.9]

Each RUN_DIR is a finished PSKD run with scarce labels whose teachers were saved (`teachers/*.pt`, as a sweep
keeps them). Its teachers are loaded, not trained. Per run: how often each teacher is right on the unlabelled
training clips, how often unfiltered ACS follows each (its most confident teacher on the clip), how often the ACS
target is right, and with the filters (`distill.unlabelled_threshold`, `unlabelled_agree`) the share of clips
still taught and how often their targets are right. The hidden labels are read here for this check only; no run
ever uses them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pskd.config import build_config, load_config
from pskd.distill.losses.acs import acs_weights
from pskd.sweep import merge_tree
from pskd.training.session import open_session
from pskd.training.student import unlabelled_agreement
from pskd.training.teachers import train_teachers


def quiet(*args, **kwargs) -> None:
    pass


def hidden_truth(tree: dict, rows: torch.Tensor) -> torch.Tensor:
    """The labels the run hid: the same dataset and split read with every label kept."""
    full = open_session(build_config(merge_tree(tree, {"data": {"labels": {"fraction": 1.0, "subjects": None}}}),
                                     source="every label"), quiet)
    return torch.as_tensor(full.prepared.labels)[rows]


def targets(logits: list[torch.Tensor], truth: torch.Tensor, threshold: float, agree: bool) -> tuple[float, float]:
    """The share of clips ACS (hard) teaches with these filters, and how often its target's class is right."""
    weights = acs_weights(logits, torch.full_like(truth, -1), "hard", threshold, agree)[:, :-1]
    taught = weights.sum(dim=1) > 0
    predicted = torch.stack([z.argmax(dim=1) for z in logits], dim=1)
    chosen = predicted[torch.arange(len(truth)), weights.argmax(dim=1)]
    right = (chosen[taught] == truth[taught]).float().mean().item() if taught.any() else float("nan")
    return taught.float().mean().item(), right


def describe(run_dir: Path, threshold: float) -> str:
    config = load_config(run_dir / "config.yaml")
    tree = merge_tree(config.model_dump(mode="json"), {
        "teachers": {name: {"checkpoint": str(run_dir)} for name in config.teachers}, "progress": False})
    session = open_session(build_config(tree, source=str(run_dir)), quiet)
    teachers = train_teachers(session)
    rows = torch.as_tensor(session.split.unlabelled, dtype=torch.long)
    if len(rows) == 0:
        return f"{run_dir}: no unlabelled training clips"
    truth = hidden_truth(tree, rows)
    logits = [t.outputs.logits[rows] for t in teachers.values()]
    parts = [f"{run_dir}: {len(rows)} unlabelled clips"]
    parts += [f"{name} right {100 * (z.argmax(dim=1) == truth).float().mean():.1f} %" for name, z in zip(teachers, logits)]
    found = unlabelled_agreement(session, teachers)
    followed = found["followed"]
    parts.append(f"confident agreement {100 * found['confident_agreement']:.0f} %")
    parts.append("ACS follows " + ", ".join(f"{n} {100 * f:.0f} %" for n, f in followed.items()))
    _, right = targets(logits, truth, 0.0, False)
    parts.append(f"ACS target right {100 * right:.1f} %")
    share, right = targets(logits, truth, threshold, True)
    parts.append(f"filtered ({threshold}, agree): {100 * share:.0f} % taught, right {100 * right:.1f} %")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--threshold", type=float, default=0.9)
    args = parser.parse_args(argv)
    for run_dir in args.runs:
        print(describe(run_dir, args.threshold), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
