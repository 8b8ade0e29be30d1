"""Exceptions that reach the user as one sentence.

Every error a user can fix (a bad task file, a bad config, a wrong CLI value) is an
:class:`AutotuneError`. The CLI prints ``str(error)`` on one line and exits with
``error.exit_code``; it never shows a traceback for these. The library never calls
``sys.exit``: it raises, and the caller decides.
"""

from __future__ import annotations


class AutotuneError(Exception):
    """Base class of errors the user can fix; ``exit_code`` is what the CLI exits with."""

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        # One line, always: the CLI prints it as is.
        super().__init__(" ".join(message.split()))


class TaskError(AutotuneError):
    """The task file (model.py) is missing, broken or breaks the Task contract."""


class ConfigError(AutotuneError):
    """A config file or value is invalid; the message names the field and the fix."""


class TrainingError(AutotuneError):
    """Training could not go on: a rank died, or the run cannot be resumed."""

    exit_code = 1
