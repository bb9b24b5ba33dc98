"""Errors a user can cause and fix. The CLI prints their message on one line and exits with code 2."""


class UserError(Exception):
    """A problem with the user's input: data, configuration or command line. Never a bug in pskd."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class DataError(UserError):
    """A dataset folder or file is missing, unreadable or malformed."""


class ConfigError(UserError):
    """A configuration file or override is invalid."""


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite: the run stops (its checkpoints up to then are kept)."""
