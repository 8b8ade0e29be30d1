"""Exceptions that reach the user as one sentence.

Every error a user can fix (a bad task file, a bad config, a wrong CLI value) is an
:class:`AutotuneError`. The CLI prints ``str(error)`` on one line and exits with
``error.exit_code``; it never shows a traceback for these. The library never calls
``sys.exit``: it raises, and the caller decides.
"""

from __future__ import annotations

import torch

# torch's CPU allocator reports failure as a plain RuntimeError (a c10::Error) with this
# text, not as torch.OutOfMemoryError; the exception's own message, read in the process
# that raised it, is the only signal it gives.
CPU_ALLOC_FAILED = "DefaultCPUAllocator: can't allocate memory"


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


def allocation_failure(exc: BaseException) -> BaseException | None:
    """The allocation failure in ``exc``'s chain (a TaskError may wrap one), if any:
    ``torch.OutOfMemoryError``, ``MemoryError``, or the CPU allocator's RuntimeError."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (torch.OutOfMemoryError, MemoryError)):
            return current
        if isinstance(current, RuntimeError) and CPU_ALLOC_FAILED in str(current):
            return current
        current = current.__cause__ or current.__context__
    return None
