"""The one way pskd creates, replaces and removes files and folders.

- **No link is followed below the folder the caller trusts.** Every call takes a `root` (by default the target's
  own folder): the root is opened as its path says, and every folder below it, and the target itself, is reached
  by name relative to the folder above it (`dir_fd`) with `O_NOFOLLOW`. A symbolic link there is refused with a
  LinkRefused error naming it, never written through, and never replaced.
- **Atomic.** A file is written under an unpredictable name created exclusively (`O_EXCL`) beside the target,
  flushed to disk (fsync), then renamed over the target: a kill at any moment leaves the previous file or the new
  one, never half of one. A write that fails (a full disk, a file system turned read-only) leaves the previous
  file and no temporary one, and is a WriteError naming the target.
- **The user's permissions.** Files are created with mode 0o666 and folders with 0o777, less the umask, as any
  program the user runs would create them (not the 0600 of mkstemp).
- **Writers that need a path** (matplotlib, onnx, converters) get one: StagedFile creates the temporary file and
  renames it over the target when the writer has finished (`/proc/self/fd/<folder>/<name>` on Linux, so the path
  too is reached through the folder already opened).

Temporary files end in TEMP_SUFFIX; remove_leftovers deletes the ones a kill left in a folder pskd owns.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from pskd.errors import UserError

TEMP_SUFFIX = ".pskd-tmp"
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class WriteError(UserError):
    """A file pskd writes could not be written: the disk is full, the file system read-only, a folder vanished."""


class LinkRefused(WriteError):
    """A symbolic link where pskd would create, write or remove something: refused, never followed."""


def link_refused(path: Path | str, what: str = "pskd writes nothing through a link") -> LinkRefused:
    return LinkRefused(f"{path}: is a symbolic link; {what} (remove the link, or choose another place)")


def _failed(path: Path, err: OSError) -> WriteError:
    return WriteError(f"{path}: cannot write ({err.strerror or err})")


def _relative_parts(path: Path, root: Path) -> tuple[str, ...]:
    path, root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    if path != root and not path.is_relative_to(root):
        raise ValueError(f"{path} is not inside {root}")
    return path.relative_to(root).parts


def _is_link(name: str, folder: int) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=folder).st_mode)
    except OSError:
        return False


def _open_folder(root: Path, parts: tuple[str, ...], create: bool, shown: Path) -> int:
    """A descriptor of root/parts...: root as its path says (created with its parents when `create`), each part
    below it by name, never through a link (made when missing and `create`)."""
    try:
        if create:
            os.makedirs(root, exist_ok=True)
        fd = os.open(root, _DIR_FLAGS)
    except OSError as err:
        raise _failed(shown, err) from None
    where = Path(root)
    try:
        for part in parts:
            where = where / part
            if create:
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                below = os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd)
            except OSError as err:
                if _is_link(part, fd):
                    raise link_refused(where) from None
                raise _failed(shown, err) from None
            os.close(fd)
            fd = below
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def folder(path: Path, root: Path | None = None, create: bool = False) -> Iterator[int]:
    """The folder `path` open (a descriptor), reached from `root` (default: the path itself) without links."""
    path = Path(path)
    root = path if root is None else Path(root)
    fd = _open_folder(root, _relative_parts(path, root), create, path)
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _parent(path: Path, root: Path | None, create: bool = True) -> Iterator[int]:
    path = Path(path)
    root = path.parent if root is None else Path(root)
    if Path(os.path.abspath(path)) == Path(os.path.abspath(root)):
        raise ValueError(f"{path}: the root must be a folder above it")
    with folder(path.parent, root, create) as fd:
        yield fd


def _check_not_link(name: str, fd: int, path: Path) -> None:
    if _is_link(name, fd):
        raise link_refused(path)


def _temp_name(name: str) -> str:
    return f".{name[:80]}.{secrets.token_hex(6)}{TEMP_SUFFIX}"


def _create(name: str, fd: int, flags: int = os.O_WRONLY) -> int:
    return os.open(name, flags | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o666, dir_fd=fd)


def _sync_folder(fd: int) -> None:
    with contextlib.suppress(OSError):  # not every file system syncs a folder
        os.fsync(fd)


def _unlink_quietly(name: str, fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=fd)


def write_file(path: Path, content: bytes | str | Callable[[BinaryIO], None], root: Path | None = None) -> None:
    """Replace `path` with `content` (bytes, text as UTF-8, or a function writing to a binary handle), atomically.
    Missing folders between `root` and the file are made; a link on the way or at `path` is refused."""
    path = Path(path)
    with _parent(path, root) as fd:
        _check_not_link(path.name, fd, path)
        temp = None
        try:
            temp = _temp_name(path.name)
            handle = os.fdopen(_create(temp, fd), "wb")
            with handle:
                if callable(content):
                    content(handle)
                else:
                    handle.write(content.encode("utf-8") if isinstance(content, str) else content)
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(temp, path.name, src_dir_fd=fd, dst_dir_fd=fd)
            temp = None
            _sync_folder(fd)
        except OSError as err:
            raise _failed(path, err) from None
        except RuntimeError as err:  # torch.save reports a failed write as a RuntimeError wrapping the OS error
            raise WriteError(f"{path}: cannot write ({str(err).splitlines()[0][:160]})") from None
        finally:
            if temp is not None:
                _unlink_quietly(temp, fd)


def write_atomically(path: Path, write: Callable[[BinaryIO], None], root: Path | None = None) -> None:
    """Call write(handle) on a fresh temporary file beside `path`, then replace `path` with it (write_file)."""
    write_file(path, write, root)


def append_text(path: Path, text: str, root: Path | None = None) -> None:
    """Append `text` to `path` (created when missing) in one write: lines appended by several processes never
    interleave. A link at `path` is refused."""
    with open_append(path, root) as handle:
        handle.write(text)


def open_append(path: Path, root: Path | None = None) -> io.TextIOWrapper:
    """A UTF-8 text handle appending to `path` (created when missing, never through a link)."""
    path = Path(path)
    with _parent(path, root) as fd:
        try:
            handle = os.open(path.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW
                             | getattr(os, "O_CLOEXEC", 0), 0o666, dir_fd=fd)
        except OSError as err:
            if _is_link(path.name, fd):
                raise link_refused(path) from None
            raise _failed(path, err) from None
    return open(handle, "a", encoding="utf-8", newline="")


def open_binary_append(path: Path, root: Path | None = None, truncate: bool = False) -> BinaryIO:
    """A binary handle appending to `path` (created when missing; emptied first when `truncate`), never through a
    link (a download's `.part` file)."""
    path = Path(path)
    with _parent(path, root) as fd:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            handle = os.open(path.name, flags | (os.O_TRUNC if truncate else 0), 0o666, dir_fd=fd)
        except OSError as err:
            if _is_link(path.name, fd):
                raise link_refused(path) from None
            raise _failed(path, err) from None
    return open(handle, "ab")


class StagedFile:
    """A temporary file beside `target` for a writer that needs a path: write to `.path`, then `commit()` renames
    it over the target (a link at the target is refused), or `discard()` removes it. As a context manager it
    commits when the block ends normally and discards otherwise."""

    def __init__(self, target: Path, root: Path | None = None):
        self.target = Path(target)
        self._folder_cm = _parent(self.target, root)
        self.fd = self._folder_cm.__enter__()
        try:
            _check_not_link(self.target.name, self.fd, self.target)
            self.name = _temp_name(self.target.name)
            os.close(_create(self.name, self.fd))
        except OSError as err:
            self._folder_cm.__exit__(None, None, None)
            raise _failed(self.target, err) from None
        except BaseException:
            self._folder_cm.__exit__(None, None, None)
            raise
        proc = Path(f"/proc/self/fd/{self.fd}")
        self.path = proc / self.name if proc.is_dir() else self.target.parent / self.name
        self.done = False

    def commit(self) -> None:
        if self.done:
            return
        try:
            if not stat.S_ISREG(os.lstat(self.name, dir_fd=self.fd).st_mode):
                raise WriteError(f"{self.target}: the writer left no plain file")
            handle = os.open(self.name, os.O_RDONLY | _NOFOLLOW, dir_fd=self.fd)
            try:
                os.fsync(handle)
            finally:
                os.close(handle)
            _check_not_link(self.target.name, self.fd, self.target)
            os.rename(self.name, self.target.name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            _sync_folder(self.fd)
        except OSError as err:
            self.discard()
            raise _failed(self.target, err) from None
        except BaseException:
            self.discard()
            raise
        self._close()

    def discard(self) -> None:
        if not self.done:
            _unlink_quietly(self.name, self.fd)
            self._close()

    def _close(self) -> None:
        self.done = True
        self._folder_cm.__exit__(None, None, None)

    def __enter__(self) -> StagedFile:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


class StagedText(StagedFile):
    """A text file written line by line under a temporary name (`.handle`, UTF-8), renamed over the target when
    committed: a reader never sees half of it."""

    def __init__(self, target: Path, root: Path | None = None):
        super().__init__(target, root)
        try:
            handle = os.open(self.name, os.O_WRONLY | _NOFOLLOW, dir_fd=self.fd)
        except OSError as err:
            self.discard()
            raise _failed(self.target, err) from None
        self.handle = open(handle, "w", encoding="utf-8", newline="")

    def commit(self) -> None:
        if not self.handle.closed:
            try:
                self.handle.close()
            except OSError as err:
                self.discard()
                raise _failed(self.target, err) from None
        super().commit()

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()
        super().discard()


def create_folder(path: Path, root: Path | None = None, exist_ok: bool = False) -> bool:
    """Make the folder `path` (and the missing ones between `root` and it), never through a link; an existing
    folder is an error unless exist_ok (FileExistsError, for the caller to word). True when it was made here."""
    path = Path(path)
    with _parent(path, root) as fd:
        try:
            os.mkdir(path.name, 0o777, dir_fd=fd)
            made = True
        except FileExistsError:
            if _is_link(path.name, fd):
                raise link_refused(path) from None
            if not exist_ok:
                raise
            made = False
        except OSError as err:
            raise _failed(path, err) from None
        try:
            os.close(os.open(path.name, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd))
        except OSError as err:
            raise _failed(path, err) from None
        if made:
            _sync_folder(fd)
    return made


def make_temp_folder(parent: Path, prefix: str) -> Path:
    """A new private folder in `parent` under an unpredictable name (for a staging area removed afterwards)."""
    try:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    except OSError as err:
        raise _failed(Path(parent) / prefix, err) from None


def remove(path: Path, root: Path | None = None, missing_ok: bool = True) -> None:
    """Remove the file, link or folder tree at `path`; a link is removed, never followed (nor anything in the
    tree)."""
    path = Path(path)
    try:
        with _parent(path, root, create=False) as fd:
            try:
                mode = os.lstat(path.name, dir_fd=fd).st_mode
            except FileNotFoundError:
                if missing_ok:
                    return
                raise
            if stat.S_ISDIR(mode):
                _remove_tree(path.name, fd)
            else:
                os.unlink(path.name, dir_fd=fd)
            _sync_folder(fd)
    except OSError as err:
        raise WriteError(f"{path}: cannot remove ({err.strerror or err})") from None


def _remove_tree(name: str, fd: int) -> None:
    if sys.version_info >= (3, 11) and shutil.rmtree.avoids_symlink_attacks:
        shutil.rmtree(name, dir_fd=fd)  # fd-based: never follows a link
        return
    below = os.open(name, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd)
    try:
        for entry in os.listdir(below):
            if stat.S_ISDIR(os.lstat(entry, dir_fd=below).st_mode):
                _remove_tree(entry, below)
            else:
                os.unlink(entry, dir_fd=below)
    finally:
        os.close(below)
    os.rmdir(name, dir_fd=fd)


def rename(source: Path, target: Path, root: Path | None = None) -> None:
    """Rename `source` to `target`, both in the same folder (or both below `root`), without following a link.
    A folder replaces only an empty folder; anything else at the target is an OSError (EEXIST, ENOTEMPTY,
    ENOTDIR) for the caller to word."""
    source, target = Path(source), Path(target)
    root = source.parent if root is None else Path(root)
    with _parent(source, root, create=False) as src, _parent(target, root, create=False) as dst:
        is_dir = stat.S_ISDIR(os.lstat(source.name, dir_fd=src).st_mode)
        if not is_dir and os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))
        if is_dir and _is_link(target.name, dst):
            raise NotADirectoryError(errno.ENOTDIR, "a symbolic link is there", str(target))
        os.rename(source.name, target.name, src_dir_fd=src, dst_dir_fd=dst)
        _sync_folder(dst)


def remove_leftovers(path: Path, depth: int = 3) -> list[str]:
    """Delete the temporary files a kill left in the folder `path` (one pskd owns: a staged run) and its folders
    (`depth` levels, no link followed): this module's `*.pskd-tmp`, and the `*.tmp` of earlier versions. Returns
    their names relative to `path`."""
    removed: list[str] = []
    try:
        with folder(path) as fd:
            _leftovers(fd, "", depth, removed)
    except (OSError, WriteError):
        pass
    return removed


def _leftovers(fd: int, prefix: str, depth: int, removed: list[str]) -> None:
    for entry in os.listdir(fd):
        try:
            mode = os.lstat(entry, dir_fd=fd).st_mode
        except OSError:
            continue
        if stat.S_ISDIR(mode):
            if depth > 1:
                with contextlib.suppress(OSError):
                    below = os.open(entry, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd)
                    try:
                        _leftovers(below, f"{prefix}{entry}/", depth - 1, removed)
                    finally:
                        os.close(below)
        elif entry.endswith(TEMP_SUFFIX) or (entry.endswith(".tmp") and entry != ".tmp"):
            with contextlib.suppress(OSError):
                os.unlink(entry, dir_fd=fd)
                removed.append(prefix + entry)


def count_entries(path: Path, limit: int = 100_000) -> tuple[int, int]:
    """(files, folders) below the folder `path`, no link followed, counting up to `limit` entries."""
    files = folders = 0
    stack = [Path(path)]
    while stack and files + folders < limit:
        here = stack.pop()
        try:
            entries = list(os.scandir(here))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                folders += 1
                stack.append(Path(entry.path))
            else:
                files += 1
    return files, folders
