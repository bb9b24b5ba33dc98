"""Messages for a person: one line each, on stderr, so stdout stays for results; and a run's own log file."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pskd.fileio import append_text, create_folder, open_append


def log_stderr(*args, file=None) -> None:
    print(*args, file=file if file is not None else sys.stderr, flush=True)


class RunLog:
    """A run's messages, to the screen (through `echo`) and to its train.log, each line with the time.

    Calling it logs a message to both. `progress(line, show, training, record)` logs a per-epoch progress line to
    the file always (also with --quiet) and to the screen when `show` (when stderr is not a terminal, these plain
    lines replace the progress bar), and appends the epoch's record to history/<training>.csv beside train.log.
    """

    def __init__(self, path: Path, echo=log_stderr, held: bool = False, tensorboard: bool = False):
        """held: keep the lines in memory until keep() (a resumed run writes nothing into the interrupted run's
        folder unless it ends or is interrupted again; a resume that fails leaves the folder as it was)."""
        self.echo = echo
        self.path = path
        self._headers: dict[Path, str] = {}
        self.held: list[str] | None = [] if held else None
        self.handle = None if held else open_append(path)
        self.board = tensorboard_writer(path.parent / "tensorboard") if tensorboard else None

    def _write(self, text: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n"
        if self.held is not None:
            self.held.append(line)
        elif self.handle is not None and not self.handle.closed:
            self.handle.write(line)
            self.handle.flush()

    def keep(self) -> None:
        """Write the held lines, and every later one, to the file."""
        if self.held is not None:
            self.handle = open_append(self.path)
            self.handle.writelines(self.held)
            self.handle.flush()
            self.held = None

    def __call__(self, *args, **kwargs) -> None:
        self._write(" ".join(str(a) for a in args))
        self.echo(*args, **kwargs)

    def progress(self, line: str, show: bool, training: str = "", record: dict | None = None) -> None:
        self._write(line)
        if show:
            self.echo(line)
        if record is not None and self.held is None:
            self._append_history(training, record)
        if record is not None and self.board is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.board.add_scalar(f"{training}/{key}", value, record["epoch"])

    def _append_history(self, training: str, record: dict) -> None:
        """history/<training>.csv gets the epoch's row (a header first; a new column starts a new header)."""
        folder = self.path.parent / "history"
        path = folder / ("".join(c if c.isalnum() or c in "._-" else "_" for c in training).strip("_") + ".csv")
        keys = list(record)
        header = ",".join(keys)
        fresh = not path.is_file() or self._headers.get(path) != header
        line = ",".join(str(record[k]) for k in keys) + "\n"
        append_text(path, (header + "\n" if fresh else "") + line, root=self.path.parent)
        if fresh:
            self._headers[path] = header

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.board is not None:
            self.board.close()
            self.board = None


def require_tensorboard():
    """The TensorBoard writer class (the tensorboard extra); a one-line error when it is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        from pskd.errors import ConfigError

        raise ConfigError("logging.tensorboard: the tensorboard package is not installed "
                          "(pip install 'pskd[tensorboard]')") from None
    return SummaryWriter


def tensorboard_writer(folder: Path):
    """TensorBoard's own writer, into a folder pskd makes first (so that a link planted there is refused)."""
    writer = require_tensorboard()
    create_folder(folder, exist_ok=True)
    return writer(log_dir=str(folder))


def progress_printer(log):
    """The per-epoch line writer of a log that has one (a RunLog), else None."""
    return getattr(log, "progress", None)
