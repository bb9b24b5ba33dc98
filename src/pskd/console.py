"""Messages for a person at the terminal: one line each, on stderr, so stdout stays for results."""

import sys


def log_stderr(*args, file=None) -> None:
    print(*args, file=file if file is not None else sys.stderr, flush=True)
