"""Will the camera help? Small probes trained in minutes, before the big run, on the training subjects only.

Cross-validated over the training subjects (the test subjects are never read), three probes of the same small
1-D network learn each fold:
- the camera probe, on what the teachers see and the watch does not (the skeleton, or other sensors), flattened
  to channels;
- the watch probe, on the student's own streams, from the labels (of the student's size when it is a compact
  network with a preset: a tiny student has a tiny probe);
- the taught probe: the watch probe's network, also taught by the camera probe's soft labels on every training
  clip, labelled or not (plain KD): a first reading of what distillation delivers.

Where the camera probe is right and the watch probe is not, the watch mistook one class for another. Whether the
watch signal can tell that pair apart at all is measured directly: a watch probe trained on the two classes alone,
cross-validated the same way; its balanced accuracy, rescaled to [0, 1] (0: chance), is the pair's separability s.
A watch decision between the two can at best err as that probe does, on (1 - s) / 2 of a class's clips: that much
of the watch probe's confusion is unreachable (the camera knows something the watch does not carry, and no
distillation can move it), the rest reachable. Pairs confused too rarely to be tested count as separable. The
two-class probe learns from few clips, so s is if anything low and the unreachable part if anything high. Figures
are per class and overall, in accuracy points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pskd.config import RunConfig, TrainConfig
from pskd.data.batches import PairedClips
from pskd.data.clip import SKELETON, DatasetInfo
from pskd.data.transforms import Standardizer
from pskd.distill.losses.kd import kd_loss
from pskd.distill.losses.supervised import supervised_cross_entropy
from pskd.errors import ConfigError
from pskd.evaluate.metrics import confusion_matrix
from pskd.models.inertial import CompactCNN
from pskd.training.loop import FitOptions, fit, predict, seed_everything
from pskd.training.recipe import make_augmenter
from pskd.training.session import open_session

FOLDS = 4
EPOCHS = 30
CAMERA_EPOCHS = 60  # the camera probe is what the watch is measured against: it trains twice as long
PAIRS = 10  # the pairs with the most confusions beyond the camera's are tested for separability
UNTESTED_SEPARABILITY = 1.0  # a pair too rarely confused to be tested counts as one the watch can resolve
TEMPERATURE = 4.0


class Probe(nn.Module):
    """A compact 1-D network over the named streams, flattened to channels and standardised; a skeleton stream
    also gives its frame-to-frame motion (on UTD-MHAD's subject 7 this probe reaches 93 % in 30 epochs, the graph
    network 80 %, at a tenth of its time)."""

    def __init__(self, streams: list[str], mean: np.ndarray, std: np.ndarray, classes: int, length: int,
                 preset: str = "default"):
        super().__init__()
        self.streams = list(streams)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1))
        self.net = CompactCNN(len(mean), classes, length, preset=preset)
        self.embedding_dim = self.net.embedding_dim

    @staticmethod
    def channels(batch: dict[str, torch.Tensor], streams: list[str]) -> torch.Tensor:
        """[B, T, C]: every stream flattened, the skeleton with its motion beside its positions."""
        parts = []
        for name in streams:
            x = batch[name].flatten(2)
            parts.append(x)
            if name == SKELETON:
                parts.append(torch.cat([x[:, 1:] - x[:, :-1], torch.zeros_like(x[:, :1])], dim=1))
        return torch.cat(parts, dim=-1)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.channels(batch, self.streams).transpose(1, 2)
        return self.net((x - self.mean) / self.std)


@dataclass
class Data:
    """The clips the probes see, with the labels the teachers may learn from."""

    streams: dict[str, np.ndarray]
    labels: np.ndarray
    subjects: np.ndarray
    info: DatasetInfo  # which streams share a body-worn unit (augmentation)


def _resampled(stream: np.ndarray, length: int) -> np.ndarray:
    """[N, T, ...] -> [N, length, ...] by linear interpolation over time (streams of other lengths side by side)."""
    if stream.shape[1] == length:
        return stream
    position = np.linspace(0, stream.shape[1] - 1, length)
    left = np.clip(np.floor(position).astype(int), 0, stream.shape[1] - 2)
    weight = (position - left).reshape(1, -1, *([1] * (stream.ndim - 2)))
    return ((1 - weight) * stream[:, left] + weight * stream[:, left + 1]).astype(np.float32)


def train_probe(config: RunConfig, data: Data, streams: list[str], rows: np.ndarray, classes: int, seed: int,
                preset: str = "default", teacher_logits: np.ndarray | None = None,
                unlabelled: np.ndarray | None = None, epochs: int = EPOCHS) -> Probe:
    """A probe on `streams`, trained for EPOCHS on the labelled clips `rows`; taught, also on the unlabelled clips,
    with KD from `teacher_logits` [N, C] on every clip it sees."""
    seed_everything(seed, config.deterministic)
    length = max(data.streams[s].shape[1] for s in streams)  # streams of one probe side by side at one length
    inputs = {s: _resampled(data.streams[s], length) for s in streams}
    values = Probe.channels({s: torch.from_numpy(inputs[s][rows]) for s in streams}, streams).numpy()
    normal = Standardizer.fit(values)
    model = Probe(streams, normal.mean, normal.std, classes, length, preset)
    seen = rows if unlabelled is None else np.concatenate([rows, unlabelled])
    train = PairedClips(inputs, data.labels, seen)
    schedule = TrainConfig(epochs=epochs, batch_size=min(32, max(4, len(seen) // 4)), lr=3e-3, warmup_epochs=2,
                           ema=0.995, refit=False, select="last", label_smoothing=0.1)
    targets = None if teacher_logits is None else torch.as_tensor(teacher_logits)

    def criterion(outputs, batch, model=None):
        terms = {"ce": supervised_cross_entropy(outputs[1], batch["label"], 0.1)}
        if targets is not None:
            terms["kd"] = kd_loss(outputs[1], targets[batch["index"]], TEMPERATURE)
        return terms

    result = fit(model, train, None, schedule, criterion,
                 FitOptions(seed=seed, augment=make_augmenter(config, data.info), progress=False, description="probe"))
    model.load_state_dict(result.last_state)  # the weights' moving average at the last epoch
    return model


def student_preset(config: RunConfig) -> str:
    """The watch probes' size: the student's own compact preset (a tiny student has a tiny probe), else default."""
    if config.student.name == "compact_cnn":
        return str(config.student.options.get("preset", "default"))
    return "default"


def logits_of(model: nn.Module, data: Data, rows: np.ndarray) -> np.ndarray:
    length = max(data.streams[s].shape[1] for s in model.streams)
    streams = {s: _resampled(data.streams[s], length) for s in model.streams}
    return predict(model, PairedClips(streams, data.labels, rows), torch.device("cpu"))[1]


def subject_folds(subjects: np.ndarray, count: int) -> list[np.ndarray]:
    """Groups of training subjects, each held out once."""
    ordered = np.unique(subjects)
    if len(ordered) < 2:
        raise ConfigError("data diagnose needs at least two training subjects to hold one out")
    return [part for part in np.array_split(ordered, min(count, len(ordered))) if len(part)]


def cross_validated(config: RunConfig, data: Data, rows: np.ndarray, unlabelled: np.ndarray, camera: list[str],
                    watch: list[str], classes: int, folds: list[np.ndarray], log) -> dict[str, np.ndarray]:
    """Out-of-fold predictions of the camera, watch and taught probes for every labelled clip in `rows`."""
    predicted = {name: np.zeros(len(rows), dtype=np.int64) for name in ("camera", "watch", "taught")}
    for number, held in enumerate(folds, 1):
        inside = np.isin(data.subjects[rows], held)
        train, test = rows[~inside], rows[inside]
        spare = unlabelled[~np.isin(data.subjects[unlabelled], held)]
        seed = config.seed + number
        camera_probe = train_probe(config, data, camera, train, classes, seed, epochs=CAMERA_EPOCHS)
        teacher = np.zeros((len(data.labels), classes), dtype=np.float32)
        fold_clips = np.concatenate([train, spare])
        teacher[fold_clips] = logits_of(camera_probe, data, fold_clips)
        size = student_preset(config)
        probes = {"camera": camera_probe, "watch": train_probe(config, data, watch, train, classes, seed, size),
                  "taught": train_probe(config, data, watch, train, classes, seed, size, teacher_logits=teacher,
                                        unlabelled=spare)}
        for name, probe in probes.items():
            predicted[name][inside] = logits_of(probe, data, test).argmax(axis=1)
        log(f"diagnose: fold {number}/{len(folds)} (subjects {list(map(int, held))}) done")
    return predicted


def separability(config: RunConfig, data: Data, rows: np.ndarray, watch: list[str], pair: tuple[int, int],
                 folds: list[np.ndarray]) -> float | None:
    """How well the watch tells the two classes of `pair` apart on held-out subjects: balanced accuracy of a
    two-class watch probe, rescaled so that chance is 0 and perfect 1 (None when a fold lacks either class)."""
    members = rows[np.isin(data.labels[rows], pair)]
    binary = Data(data.streams, np.where(data.labels == pair[0], 0, 1), data.subjects, data.info)
    right, seen = np.zeros(2), np.zeros(2)
    for number, held in enumerate(folds, 1):
        inside = np.isin(data.subjects[members], held)
        train, test = members[~inside], members[inside]
        if len(np.unique(binary.labels[train])) < 2 or not len(test):
            continue
        probe = train_probe(config, binary, watch, train, 2, config.seed + 100 + number, preset="small")
        guess = logits_of(probe, binary, test).argmax(axis=1)
        for side in (0, 1):
            mine = binary.labels[test] == side
            right[side] += (guess[mine] == side).sum()
            seen[side] += mine.sum()
    if not seen.all():
        return None
    balanced = float((right / seen).mean())
    return float(np.clip(2 * balanced - 1, 0.0, 1.0))


def split_gap(labels: np.ndarray, predicted: dict[str, np.ndarray], classes: int,
              separable: dict[tuple[int, int], float]) -> list[dict]:
    """Per class: recall of each probe, and the gap to the camera split by the separability of each confusion."""
    confusion = {name: confusion_matrix(labels, guess, classes) for name, guess in predicted.items()}
    rows = []
    for c in range(classes):
        support = int(confusion["watch"][c].sum())
        if not support:
            rows.append({"class": c, "clips": 0})
            continue
        recall = {name: float(matrix[c, c] / support) for name, matrix in confusion.items()}
        gap = max(0.0, recall["camera"] - recall["watch"])
        excess = np.maximum(0, confusion["watch"][c] - confusion["camera"][c]) / support
        excess[c] = 0
        # a watch decision between c and d at best errs as the two-class probe does: (1 - s) / 2 of c's clips
        unreachable = sum(min(float(excess[d]), (1 - separable.get(tuple(sorted((c, d))), UNTESTED_SEPARABILITY)) / 2)
                          for d in np.flatnonzero(excess))
        unreachable = min(gap, unreachable)
        worst = [int(d) for d in np.argsort(-excess)[:2] if excess[d] > 0]
        rows.append({"class": c, "clips": support, **{f"{name}_recall": value for name, value in recall.items()},
                     "gap": gap, "unreachable": unreachable, "reachable": gap - unreachable, "confused_with": worst})
    return rows


def excess_pairs(labels: np.ndarray, predicted: dict[str, np.ndarray], classes: int, count: int) -> list[tuple]:
    """The class pairs the watch probe confuses most beyond what the camera probe does (both directions)."""
    watch = confusion_matrix(labels, predicted["watch"], classes)
    camera = confusion_matrix(labels, predicted["camera"], classes)
    excess = np.maximum(0, watch - camera)
    np.fill_diagonal(excess, 0)
    both = excess + excess.T
    pairs = [(int(both[a, b]), a, b) for a in range(classes) for b in range(a + 1, classes) if both[a, b] > 0]
    pairs.sort(reverse=True)
    return [(a, b) for _, a, b in pairs[:count]]


def diagnose(config: RunConfig, log=lambda *a, **k: None, folds: int = FOLDS, pairs: int = PAIRS) -> dict:
    """The probes' figures per class and overall, the gap split into reachable and unreachable, and a verdict."""
    session = open_session(config, lambda *a, **k: None)
    prepared, split = session.teacher_prepared, session.teacher_split
    watch = list(config.student.streams)
    camera = list(dict.fromkeys(s for t in config.teachers.values() for s in t.streams if s not in watch))
    if not camera:
        raise ConfigError("data diagnose: no teacher reads a stream the student does not; there is no camera side "
                          "to compare (teachers.<name>.streams)")
    data = Data({s: prepared.streams[s] for s in [*camera, *watch]}, prepared.labels, prepared.subjects,
                prepared.info)
    rows = np.sort(np.concatenate([split.train, split.val]))
    unlabelled = np.sort(np.concatenate([split.unlabelled, split.unlabelled_val]))
    classes = prepared.info.num_classes
    fold_list = subject_folds(data.subjects[rows], folds)
    log(f"diagnose: {len(rows)} labelled training clips ({len(unlabelled)} unlabelled), {len(fold_list)} folds over "
        f"the training subjects; camera: {', '.join(camera)}; watch: {', '.join(watch)}")
    predicted = cross_validated(config, data, rows, unlabelled, camera, watch, classes, fold_list, log)
    labels = data.labels[rows]
    separable = {}
    for pair in excess_pairs(labels, predicted, classes, pairs):
        value = separability(config, data, rows, watch, pair, fold_list)
        if value is not None:
            separable[pair] = value
    log(f"diagnose: {len(separable)} confused pairs tested")
    per_class = split_gap(labels, predicted, classes, separable)
    return summarise(prepared.info.class_names, labels, predicted, per_class, separable, camera, watch,
                     len(fold_list))


def summarise(names: list[str], labels: np.ndarray, predicted: dict, per_class: list[dict], separable: dict,
              camera: list[str], watch: list[str], folds: int) -> dict:
    accuracy = {name: float((guess == labels).mean()) for name, guess in predicted.items()}
    total = len(labels)
    reachable = sum(row["reachable"] * row["clips"] for row in per_class if row["clips"]) / total
    unreachable = sum(row["unreachable"] * row["clips"] for row in per_class if row["clips"]) / total
    for row in per_class:
        row["name"] = names[row["class"]]
        row["confused_with"] = [names[d] for d in row.get("confused_with", [])]
    pairs = [{"classes": [names[a], names[b]], "separability": value} for (a, b), value in
             sorted(separable.items(), key=lambda kv: kv[1])]
    ahead = sum(row["gap"] * row["clips"] for row in per_class if row["clips"]) / total
    # gap: what the watch would gain if it matched the camera on every class where the camera is ahead
    result = {"camera_streams": camera, "watch_streams": watch, "folds": folds, "clips": total,
              "accuracy": accuracy, "difference": accuracy["camera"] - accuracy["watch"], "gap": ahead,
              "reachable": reachable, "unreachable": unreachable, "taught_gain": accuracy["taught"] - accuracy["watch"],
              "per_class": per_class, "pairs": pairs}
    result["verdict"] = verdict(result)
    return result


MIN_CLIPS_PER_CLASS = 4  # fewer labelled clips per class, and probes cross-validated over subjects judge nothing


def verdict(found: dict) -> str:
    """A plain answer from the figures."""
    gap, reachable, gain = 100 * found["gap"], 100 * found["reachable"], 100 * found["taught_gain"]
    supports = [row["clips"] for row in found["per_class"] if row.get("clips")]
    if not supports or float(np.median(supports)) < MIN_CLIPS_PER_CLASS:
        return (f"Too few labelled training clips ({float(np.median(supports or [0])):g} per class) for probes "
                "to judge: label a few more clips per class of a pilot recording (with the teachers' labels, "
                "data.labels.teachers: all, if a camera-side archive is annotated), then diagnose again.")
    blind = [row["name"] for row in found["per_class"] if row.get("clips") and row["unreachable"] >= 0.25]
    lines = [f"Where the camera probe is ahead of the watch probe, the watch would gain {gap:.1f} points by matching "
             f"it; the watch signal tells apart the pairs behind about {reachable:.1f} of them (reachable) and not "
             f"the rest ({gap - reachable:.1f}, unreachable)."]
    if blind:
        lines.append("Classes whose misses are mostly unreachable (the watch does not carry them): " + ", ".join(blind[:6])
                     + (" ..." if len(blind) > 6 else "") + ".")
    lines.append(f"A watch probe taught by the camera probe (KD) moves {gain:+.1f} points.")
    if reachable >= 2 and reachable >= gap / 3 and gain > 0.5:
        lines.append("The camera can pay: run the distillation and compare it with the watch-only student.")
    elif reachable >= 2 and reachable >= gap / 3:
        lines.append("The watch could carry part of it, but plain KD does not move it on these probes: try the "
                     "large-gap settings (the feature term, the motion target) and compare on validation.")
    else:
        lines.append("Expect little from the camera: what it knows beyond the watch is mostly what the watch cannot "
                     "sense (another watch position or sensor would carry it), or little at all.")
    return " ".join(lines)


def table_lines(found: dict) -> list[str]:
    """The text report: overall figures, the per-class table, the least separable pairs, the verdict."""
    a = found["accuracy"]
    out = [f"probes: camera ({', '.join(found['camera_streams'])}) {100 * a['camera']:.1f} %, watch "
           f"({', '.join(found['watch_streams'])}) {100 * a['watch']:.1f} %, watch taught by the camera "
           f"{100 * a['taught']:.1f} %  ({found['clips']} labelled training clips, {found['folds']} folds over the "
           "training subjects; the test subjects were not read)",
           f"camera - watch {100 * found['difference']:+.1f} points; where the camera is ahead, {100 * found['gap']:.1f} "
           f"points: reachable {100 * found['reachable']:.1f}, unreachable {100 * found['unreachable']:.1f}",
           "",
           f"{'class':<34} {'clips':>5} {'camera':>7} {'watch':>7} {'taught':>7} {'reach.':>7} {'unreach.':>8}  "
           "watch confuses it with"]
    for row in found["per_class"]:
        if not row.get("clips"):
            continue
        out.append(f"{row['name'][:34]:<34} {row['clips']:>5} {100 * row['camera_recall']:>6.1f}% "
                   f"{100 * row['watch_recall']:>6.1f}% {100 * row['taught_recall']:>6.1f}% "
                   f"{100 * row['reachable']:>6.1f}  {100 * row['unreachable']:>7.1f}   "
                   + ", ".join(name[:24] for name in row["confused_with"]))
    if found["pairs"]:
        out += ["", "pairs the watch confuses beyond the camera, by how well the watch alone tells them apart "
                "(0: chance, 1: always):"]
        out += [f"  {p['separability']:.2f}  {p['classes'][0]} / {p['classes'][1]}" for p in found["pairs"]]
    return [*out, "", found["verdict"]]
