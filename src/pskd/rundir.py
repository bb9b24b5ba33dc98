"""The run directory's life: staged in `<out>.incomplete` (marked as a pskd output), locked while a process
writes it, renamed to `<out>` when the run has finished.

Nothing that an earlier command made is destroyed: a fresh run refuses a target or an interrupted run that is
already there (unless told `overwrite`, and then only a pskd output of the same kind that no input of the
command touches: pskd.overwrite), a link at `<out>` or `<out>.incomplete` is refused, a resume that fails leaves
the interrupted run as it was, and a second process writing the same run is refused. The lock is the operating
system's (flock on `<staging>/.lock`): it goes with the process that holds it, so a crash leaves no stale lock.
A finished run is never lost: `state/` goes only after the rename has succeeded (see finish).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

import yaml

from pskd import fileio
from pskd.bounded import LimitError, load_yaml, read_text
from pskd.config import RunConfig, build_config, dump_config
from pskd.errors import ConfigError, UserError
from pskd.limits import CONFIG_BYTES
from pskd.overwrite import Read, check_replaceable, mark, refuse_link

try:
    import fcntl
except ImportError:  # not POSIX: no lock (Windows is not a target platform)
    fcntl = None

INCOMPLETE = ".incomplete"
LOCK = ".lock"


def staging_of(out: Path) -> Path:
    return out.with_name(out.name + INCOMPLETE)


class RunLock:
    """An exclusive lock on a staging folder, held until release() or the process's end."""

    def __init__(self, staging: Path, out: Path):
        self.path = staging / LOCK
        self.handle = None
        try:
            with fileio.folder(staging, staging.parent) as fd:
                self.handle = os.open(LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666, dir_fd=fd)
        except fileio.LinkRefused as err:
            raise UserError(f"{out}: cannot lock the run directory ({err})") from None
        except (OSError, fileio.WriteError) as err:
            raise UserError(f"{out}: cannot lock the run directory ({getattr(err, 'strerror', None) or err})") \
                from None
        if fcntl is not None:
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self.handle)
                self.handle = None
                raise UserError(f"{out}: another pskd process is writing this run; wait for it to end, or choose "
                                "another --out") from None

    def release(self) -> None:
        if self.handle is not None:
            os.close(self.handle)
            self.handle = None


def stage_run_dir(out: Path, overwrite: bool = False, kind: str = "run", command: str = "train",
                  inputs: Sequence[Read] = ()) -> tuple[Path, RunLock]:
    """Check that `out` can be written, make the staging folder the output is written into (marked as a pskd
    output of `kind`), and lock it. With `overwrite`, what is at `out` (and an interrupted output) is removed
    only when pskd.overwrite allows it: a pskd output of the same kind that no input of the command touches."""
    out = Path(out)
    staging = staging_of(out)
    refuse_link(out)
    refuse_link(staging, "--out's staging folder")
    taken = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if (taken or staging.exists()) and not overwrite:
        if staging.exists():
            raise UserError(f"{staging}: an interrupted run is here; continue it with: pskd train --resume {out}, "
                            "or start again with --overwrite")
        raise UserError(f"{out}: already exists and is not empty; choose another --out, or replace it with "
                        "--overwrite")
    if overwrite:
        for there in (staging, out if taken else None):
            if there is not None and os.path.lexists(there):
                check_replaceable(there, kind, inputs)
        _replace(out, staging, taken)
    try:
        fileio.create_folder(staging)  # exclusive: a second run starting now finds it made
    except FileExistsError:
        raise UserError(f"{out}: another run is starting here; choose another --out") from None
    except fileio.WriteError as err:
        raise UserError(f"{out}: cannot write the run directory here ({err})") from None
    try:
        mark(staging, kind, command)
        lock = RunLock(staging, out)
    except UserError:
        fileio.remove(staging)
        raise
    return staging, lock


def _replace(out: Path, staging: Path, taken: bool) -> None:
    """--overwrite: remove the earlier output (finished or interrupted), unless a process is writing it."""
    if staging.is_dir():
        RunLock(staging, out).release()  # refuses while another process holds it
        fileio.remove(staging)
    if taken:
        fileio.remove(out)


def resume_run_dir(out: Path, config: RunConfig) -> tuple[Path, RunLock]:
    """The staging folder of a run that was killed, after checking it was started with this very config; locked,
    with the temporary files a kill left in it removed."""
    out = Path(out)
    staging = staging_of(out)
    refuse_link(staging, "the interrupted run")
    if out.is_dir() and not out.is_symlink() and (out / "metrics.json").is_file() and not os.path.lexists(staging):
        tidied = _tidy_finished(out)
        raise UserError(f"{out}: this run has finished; there is nothing to resume"
                        + (" (its leftover checkpoints were removed)" if tidied else ""))
    saved = staging / "config.yaml"
    if not saved.is_file():
        raise UserError(f"{out}: no interrupted run here (expected {saved})")
    try:
        before = load_yaml(read_text(saved, CONFIG_BYTES))
    except LimitError as err:
        raise UserError(f"{saved}: unreadable ({err}); the interrupted run is left as it was") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raise UserError(f"{saved}: unreadable; the interrupted run is left as it was") from None
    before = _with_defaults(before, saved)
    now = yaml.safe_load(dump_config(config))
    for tree in (before, now):  # showing a progress bar or not changes no result
        if isinstance(tree, dict):
            tree.pop("progress", None)
            _plugin_paths(tree)
    if before != now:
        changed = sorted(_differences(before, now))
        raise ConfigError(f"{out}: the run was started with another config (differs at {', '.join(changed[:5])}); "
                          "resume it with its own config.yaml")
    lock = RunLock(staging, out)
    fileio.remove_leftovers(staging)
    return staging, lock


def is_finished(staging: Path) -> bool:
    """Whether a staged run had written all of its outputs (metrics.json is written last) before it was given
    its name: resuming it only renames it."""
    return (staging / "metrics.json").is_file() and not (staging / "metrics.json").is_symlink()


def _tidy_finished(out: Path) -> bool:
    """A finished run whose process was killed between the rename and the removal of its checkpoints: they go."""
    if not ((out / "state").is_dir() or (out / LOCK).exists()):
        return False
    lock = RunLock(out, out)
    try:
        fileio.remove(out / "state", root=out)
        fileio.remove(out / LOCK, root=out)
    finally:
        lock.release()
    return True


def _plugin_paths(tree: dict) -> None:
    """Plugins compared by the file they name (a run records each as {path, sha256}; the digest is checked when
    the plugin is loaded)."""
    entries = tree.get("plugins")
    if isinstance(entries, list):
        tree["plugins"] = [str(Path(e["path"] if isinstance(e, dict) and isinstance(e.get("path"), str) else str(e))
                               .expanduser().resolve()) for e in entries]


def _with_defaults(tree, saved: Path):
    """A saved config as this version reads it: a setting added since then takes its default, which is what
    the run was trained with."""
    try:
        return yaml.safe_load(dump_config(build_config(tree, source=str(saved))))
    except ConfigError:
        return tree  # compared as written: the difference is then reported


def _differences(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in sorted(set(a) | set(b), key=str)
                for d in _differences(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [prefix.rstrip(".")]


def finish(staging: Path, out: Path, lock: RunLock, state: str, how_to_finish: str | None = None) -> None:
    """The output is complete: give it its name, then drop its per-epoch checkpoints and its lock.

    Nothing is removed before the rename has succeeded. When it fails (something appeared at `out`: a file, a
    link, a folder that is not empty), the staged output stays whole and unlocked, and the error says so; a run
    is then finished by `pskd train --resume`, without training again. A kill after the rename leaves a finished
    run with its checkpoints, which the next resume removes."""
    try:
        fileio.rename(staging, out)
    except (OSError, fileio.WriteError) as err:
        lock.release()
        code = getattr(err, "errno", None)
        why = {errno.ENOTEMPTY: "a folder that is not empty is there", errno.EEXIST: "a folder that is not empty "
               "is there", errno.ENOTDIR: "a file or a link is there"}.get(code, getattr(err, "strerror", None)
                                                                           or str(err))
        then = how_to_finish or f"finish it with: pskd train --resume {out}"
        raise UserError(f"{out}: the finished output cannot take this name ({why}); it is kept whole in "
                        f"{staging}: move what is at {out} away, then {then}") from None
    try:
        fileio.remove(out / state, root=out)
        fileio.remove(out / LOCK, root=out)
    except fileio.WriteError:
        pass  # the run is finished; what is left is removed by the next resume
    finally:
        lock.release()


def abandon(staging: Path, lock: RunLock, created: bool, out: Path, log) -> None:
    """A run that failed: a fresh one leaves nothing behind; a resumed one leaves the interrupted run in place."""
    lock.release()
    if created:
        try:
            fileio.remove(staging)
        except fileio.WriteError:
            pass
    else:
        log(f"the interrupted run is left as it was; continue it with: pskd train --resume {out}")
