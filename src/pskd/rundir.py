"""The run directory's life: staged in `<out>.incomplete`, locked while a process writes it, renamed to `<out>`
when the run has finished.

Nothing that an earlier command made is destroyed: a fresh run refuses a target or an interrupted run that is
already there (unless told `overwrite`), a resume that fails leaves the interrupted run as it was, and a second
process writing the same run is refused. The lock is the operating system's (flock on `<staging>/.lock`): it goes
with the process that holds it, so a crash leaves no stale lock.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from pskd.bounded import LimitError, load_yaml, read_text
from pskd.config import RunConfig, build_config, dump_config
from pskd.errors import ConfigError, UserError
from pskd.limits import CONFIG_BYTES

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
            self.handle = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as err:
            raise UserError(f"{out}: cannot lock the run directory ({err.strerror})") from None
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


def stage_run_dir(out: Path, overwrite: bool = False) -> tuple[Path, RunLock]:
    """Check that `out` can be written, make the staging folder the run is written into, and lock it."""
    staging = staging_of(out)
    taken = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if (taken or staging.exists()) and not overwrite:
        if staging.exists():
            raise UserError(f"{staging}: an interrupted run is here; continue it with: pskd train --resume {out}, "
                            "or start again with --overwrite")
        raise UserError(f"{out}: already exists and is not empty; choose another --out, or replace it with "
                        "--overwrite")
    if overwrite:
        _replace(out, staging)
    try:
        staging.mkdir(parents=True)  # exclusive: a second run starting now finds it made
    except FileExistsError:
        raise UserError(f"{out}: another run is starting here; choose another --out") from None
    except OSError as err:
        raise UserError(f"{out}: cannot write the run directory here ({err.strerror})") from None
    try:
        lock = RunLock(staging, out)
    except UserError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging, lock


def _replace(out: Path, staging: Path) -> None:
    """--overwrite: remove the earlier run (finished or interrupted), unless a process is writing it."""
    if staging.is_dir():
        RunLock(staging, out).release()  # refuses while another process holds it
        shutil.rmtree(staging)
    if out.is_dir() and not out.is_symlink():
        shutil.rmtree(out)
    elif out.exists() or out.is_symlink():
        out.unlink()


def resume_run_dir(out: Path, config: RunConfig) -> tuple[Path, RunLock]:
    """The staging folder of a run that was killed, after checking it was started with this very config; locked."""
    staging = staging_of(out)
    if out.is_dir() and (out / "metrics.json").is_file():
        raise UserError(f"{out}: this run has finished; there is nothing to resume")
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
    if before != now:
        changed = sorted(_differences(before, now))
        raise ConfigError(f"{out}: the run was started with another config (differs at {', '.join(changed[:5])}); "
                          "resume it with its own config.yaml")
    return staging, RunLock(staging, out)


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


def finish(staging: Path, out: Path, lock: RunLock, state: str) -> None:
    """The run is complete: drop its per-epoch checkpoints and its lock, and give it its name."""
    shutil.rmtree(staging / state, ignore_errors=True)
    lock.release()
    (staging / LOCK).unlink(missing_ok=True)
    if out.exists():
        out.rmdir()  # an existing empty folder was allowed
    staging.rename(out)


def abandon(staging: Path, lock: RunLock, created: bool, out: Path, log) -> None:
    """A run that failed: a fresh one leaves nothing behind; a resumed one leaves the interrupted run in place."""
    lock.release()
    if created:
        shutil.rmtree(staging, ignore_errors=True)
    else:
        log(f"the interrupted run is left as it was; continue it with: pskd train --resume {out}")
