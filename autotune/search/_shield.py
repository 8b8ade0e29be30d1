"""Holding the search's stop signal back while the storage is mid-call.

SIGINT and SIGTERM stop ``autotune search`` by raising :class:`SearchInterrupted` in the
main thread wherever it is (:func:`autotune._cli_support.stop_on_signals`), so that a
running trial is stopped at once. Raised inside a storage call, though, that exception can
leave SQLAlchemy's connection inside a transaction that holds SQLite's write lock until the
collector gets to it; the search's own record of the interruption then waits behind that
lock (for a minute: the storage's timeout), and the stop misses its bound. With trials
forked from a warm server the main thread spends much of a fast search in storage calls,
and a loop that signals a busy SQLite study at random moments left it locked 1 time in 6.

So the search's storage is wrapped (:func:`shield_storage`): while a call of the main
thread is inside it, a stop signal is held (:func:`interrupt`) and raised the moment the
outermost call returns. Storage calls take milliseconds; one stuck on a lock is what the
stop's hard deadline (``STOP_BOUND_S``) is for.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import optuna

__all__ = ["SearchInterrupted", "interrupt", "shield_storage", "shielded"]


class SearchInterrupted(BaseException):
    """SIGINT or SIGTERM reached ``autotune search``.

    The CLI's signal handler raises it; unwinding kills the running trial's process group
    (:func:`autotune.trial.run_trial`) and records that trial FAIL with status
    ``INTERRUPTED`` (:func:`tracked`). A BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` on the way swallows it. The CLI exits with ``exit_code``.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports death by that signal."""
        return 128 + self.signum


class _Held:
    """The main thread's shield depth, and the signal that arrived within it."""

    depth = 0
    signum: int | None = None


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Within the block (on the main thread) :func:`interrupt` holds its signal; leaving
    the outermost block raises :class:`SearchInterrupted` for it. Other threads (the
    heartbeat) pass straight through: signal handlers only ever run on the main thread."""
    if not _in_main_thread():
        yield
        return
    _Held.depth += 1
    try:
        yield
    finally:
        _Held.depth -= 1
        if _Held.depth == 0 and _Held.signum is not None:
            signum, _Held.signum = _Held.signum, None
            raise SearchInterrupted(signum)


def interrupt(signum: int) -> None:
    """Raise :class:`SearchInterrupted` for ``signum`` now, or, inside :func:`shielded`,
    as soon as the outermost shielded block ends."""
    if _Held.depth > 0 and _in_main_thread():
        _Held.signum = signum
        return
    raise SearchInterrupted(signum)


# Every public method an Optuna storage has (the abstract ones and the defaults that
# RDBStorage and the cache override): each becomes one shielded call of the inner storage.
_METHODS = sorted(
    name
    for name, value in vars(optuna.storages.BaseStorage).items()
    if callable(value) and not name.startswith("_")
)


class _ShieldedStorage(optuna.storages.BaseStorage):
    """An Optuna storage whose every call runs :func:`shielded`; what is not a storage
    method (an attribute of the inner storage) is passed through."""

    def __init__(self, inner: optuna.storages.BaseStorage) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _shielded_call(name: str) -> Callable[..., Any]:
    def call(self: _ShieldedStorage, *args: Any, **kwargs: Any) -> Any:
        with shielded():
            return getattr(self.inner, name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


for _name in _METHODS:
    setattr(_ShieldedStorage, _name, _shielded_call(_name))
_ShieldedStorage.__abstractmethods__ = frozenset()  # each was just defined, above


def shield_storage(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """``storage`` (an RDBStorage gets Optuna's read cache first, as a URL would) with
    every call shielded from the stop signal."""
    cached = optuna.storages.get_storage(storage)
    return _ShieldedStorage(cached)  # type: ignore[abstract]  # the methods are set above
