"""The one way pskd replaces a file: written under an unpredictable name created exclusively in the target's folder
(never a fixed name someone could plant a link at), flushed to disk, then renamed over the target. A kill at any
moment leaves the previous file or the new one, never half of one; a write that fails (a full disk, a file system
turned read-only) leaves the previous file and no temporary one, and is a WriteError naming the target."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from pskd.errors import UserError


class WriteError(UserError):
    """A file pskd writes could not be written: the disk is full, the file system read-only, a folder vanished."""


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call write(handle) on a fresh temporary file beside `path`, then replace `path` with it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise WriteError(f"{path}: cannot write ({err.strerror or err})") from None
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(name, path)
    except OSError as err:
        raise WriteError(f"{path}: cannot write ({err.strerror or err})") from None
    except RuntimeError as err:  # torch.save reports a failed write as a RuntimeError wrapping the OS error
        raise WriteError(f"{path}: cannot write ({str(err).splitlines()[0][:160]})") from None
    finally:
        if os.path.exists(name):
            os.unlink(name)
