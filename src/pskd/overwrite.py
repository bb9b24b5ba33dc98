"""What pskd may replace: its own outputs, marked as such, never an input of the same command, never a link.

Every folder a command creates holds a marker, `.pskd-output.json`, naming its kind (`run` for train, demo and
the runs of a sweep; `sweep` for a sweep's folder; `evaluation`; `export`), the command and the pskd version.
Outputs of earlier versions, which have no marker, are recognised by the files they hold (a run: config.yaml,
metrics.json and checkpoints/; an interrupted run: config.yaml with state/ or train.log; an evaluation:
metrics.json, report.md, predictions.csv and confusion_matrix.png; an export: the report beside the model).

`--overwrite` replaces a folder only when it is a pskd output of the same kind, holds nothing pskd does not write
there, is not a link, and neither is, holds nor lies inside a path the command reads (the data folder and data
root, the config, the cache, the run evaluated or exported, `init_from`, teacher checkpoints). Anything else is
refused in one line that says what would have been removed and why (exit code 2).
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pskd.bounded import read_bytes
from pskd.errors import UserError
from pskd.fileio import TEMP_SUFFIX, count_entries, write_file

MARKER = ".pskd-output.json"
MARKER_BYTES = 64 * 1024
KINDS = ("run", "sweep", "evaluation", "export")

# what each kind of folder holds when pskd wrote it (and what may be written into it later: an export, a bench)
RUN_ENTRIES = frozenset({
    MARKER, ".lock", "config.yaml", "metrics.json", "history.csv", "predictions.csv", "report.md",
    "confusion_matrix.png", "learning_curves.png", "checkpoints", "teachers", "train.log", "history", "tensorboard",
    "state", "export", "bench.json",
})
EVALUATION_ENTRIES = frozenset({MARKER, ".lock", "metrics.json", "report.md", "confusion_matrix.png",
                                "predictions.csv", "state"})
ENTRIES = {"run": RUN_ENTRIES, "evaluation": EVALUATION_ENTRIES}
DESCRIBED = {"run": "a run", "sweep": "a sweep's folder", "evaluation": "an evaluation", "export": "an export"}


@dataclass(frozen=True)
class Read:
    """A path the command reads, and what it is to the user ("the data folder", "student.init_from")."""

    path: Path
    what: str


def reads(*pairs: tuple[object, str]) -> list[Read]:
    """Read entries from (path or None, description) pairs; the Nones left out."""
    return [Read(Path(str(path)).expanduser(), what) for path, what in pairs if path not in (None, "")]


def mark(folder: Path, kind: str, command: str, root: Path | None = None) -> None:
    """Write the marker that makes `folder` a pskd output of `kind`."""
    from pskd.version import __version__

    text = json.dumps({"kind": kind, "command": command, "pskd_version": __version__,
                       "created": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2) + "\n"
    write_file(Path(folder) / MARKER, text, root=root if root is not None else folder)


def marked_kind(folder: Path) -> str | None:
    """The kind the marker in `folder` names, or None (no marker, a link, unreadable, not one of ours)."""
    path = Path(folder) / MARKER
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        kind = json.loads(read_bytes(path, MARKER_BYTES, follow_links=False)).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if kind in KINDS else None


def _is(path: Path, kind: str) -> bool:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) if kind == "file" else stat.S_ISDIR(mode)


def recognised_kind(folder: Path) -> str | None:
    """The kind of pskd output `folder` is, from its marker, else from the files an earlier version wrote."""
    folder = Path(folder)
    kind = marked_kind(folder)
    if kind is not None:
        return kind
    has = {name: _is(folder / name, "file") for name in ("config.yaml", "metrics.json", "train.log", "report.md",
                                                          "predictions.csv", "confusion_matrix.png", "rows.jsonl",
                                                          "results.json", ".lock")}
    if has["config.yaml"] and (has["metrics.json"] and _is(folder / "checkpoints", "dir")
                               or _is(folder / "state", "dir") or has["train.log"]):
        return "run"
    if folder.name.endswith(".incomplete") and (has["train.log"] or has[".lock"]) and \
            not any(has[n] for n in ("report.md", "predictions.csv")):
        return "run"  # interrupted before its config was written
    if has["metrics.json"] and has["report.md"] and has["predictions.csv"] and has["confusion_matrix.png"]:
        return "evaluation"
    if folder.name.endswith(".incomplete") and has[".lock"]:
        return "evaluation"
    if has["rows.jsonl"] or has["results.json"]:
        return "sweep"
    return None


def _real(path: Path) -> Path:
    return Path(os.path.realpath(os.path.abspath(Path(path).expanduser())))


def overlap(target: Path, inputs: Iterable[Read]) -> str | None:
    """Why `target` (removed or replaced) would touch an input: it is one, holds one or lies inside one."""
    real = _real(target)
    for item in inputs:
        other = _real(item.path)
        if real == other:
            return f"it is {item.what} ({item.path}), which this command reads"
        if other.is_relative_to(real):
            return f"it holds {item.what} ({item.path}), which this command reads"
        if real.is_relative_to(other):
            return f"it is inside {item.what} ({item.path}), which this command reads"
    return None


def _size(path: Path) -> str:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return "nothing"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if not stat.S_ISDIR(mode):
        return "a file"
    files, folders = count_entries(path)
    return f"a folder of {files} file(s) and {folders} folder(s)"


def refusal(path: Path, why: str, option: str = "--overwrite") -> UserError:
    """The one-line refusal: what `option` would have removed, and why it does not."""
    return UserError(f"{option} would remove {path} ({_size(path)}); refusing: {why}")


# what pskd writes inside the subfolders of a run: (a test of its file names, whether folders may nest there)
RUN_SUBFOLDERS = {
    "checkpoints": (lambda name: name.endswith(".pt"), False),
    "teachers": (lambda name: name.endswith(".pt"), False),
    "state": (lambda name: name.endswith(".pt"), False),
    "history": (lambda name: name.endswith(".csv"), False),
    "export": (lambda name: name == MARKER or name.startswith("student") and name.endswith((".onnx", ".tflite",
                                                                                           ".onnx.json",
                                                                                           ".tflite.json")), False),
    "tensorboard": (lambda name: name.startswith("events.out.tfevents."), False),
}
SUBFOLDERS = {"run": RUN_SUBFOLDERS, "evaluation": {"state": (lambda name: False, False)}}
MAX_LISTED = 100_000  # entries of a subfolder looked at before it is judged foreign as a whole


def _listing(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            names = []
            for entry in entries:
                names.append(entry.name)
                if len(names) > MAX_LISTED:
                    return ["..."]
            return sorted(names)
    except OSError:
        return []


def _temporary(name: str) -> bool:
    """A temporary file of pskd's: this version's `.<name>.<random>.pskd-tmp`, an earlier version's `.<name>.tmp`."""
    return name.startswith(".") and name.endswith((TEMP_SUFFIX, ".tmp")) and len(name) > 5


def _foreign(folder: Path, kind: str) -> list[str]:
    """Entries of `folder`, and of its subfolders, that pskd does not write in a folder of `kind` (a notes.txt
    left in checkpoints/ is a refusal, not a loss)."""
    allowed = ENTRIES.get(kind)
    if allowed is None:
        return []
    found = [n for n in _listing(folder) if n not in allowed and not _temporary(n)]
    for sub, (named, nested) in SUBFOLDERS.get(kind, {}).items():
        path = folder / sub
        if path.is_symlink() or not path.is_dir():
            continue
        for name in _listing(path):
            inner = path / name
            if inner.is_symlink():
                mine = False  # pskd writes no link
            elif inner.is_dir():
                mine = nested
            else:
                mine = _temporary(name) or named(name)
            if not mine:
                found.append(f"{sub}/{name}")
    return found


def check_replaceable(folder: Path, kind: str, inputs: Sequence[Read], option: str = "--overwrite") -> None:
    """Refuse (UserError) unless `folder` may be removed to make room for a new output of `kind`."""
    folder = Path(folder)
    if folder.is_symlink():
        raise refusal(folder, "it is a symbolic link; pskd removes and writes nothing through a link", option)
    why = overlap(folder, inputs)
    if why:
        raise refusal(folder, why, option)
    if not folder.is_dir():
        raise refusal(folder, "it is not a folder pskd wrote, but a file; choose another --out", option)
    found = recognised_kind(folder)
    if found is None:
        raise refusal(folder, f"it is not a folder pskd wrote (no {MARKER}, and not {DESCRIBED[kind]} of an "
                              f"earlier version); move it away or choose another --out", option)
    if found != kind:
        raise refusal(folder, f"it is {DESCRIBED[found]}, not {DESCRIBED[kind]}; choose another --out",
                      option)
    foreign = _foreign(folder, kind)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise refusal(folder, f"it holds {shown}, which pskd did not write there; move that out first", option)


def refuse_link(path: Path, what: str = "--out") -> None:
    """A link given (or planted) where pskd would write an output is refused, with or without --overwrite."""
    if Path(path).is_symlink():
        raise UserError(f"{what} {path}: is a symbolic link; pskd writes no output through a link (remove the "
                        "link, or choose another place)")
