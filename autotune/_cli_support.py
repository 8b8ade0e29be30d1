"""CLI plumbing kept out of cli.py: one-line usage errors and graceful SIGINT/SIGTERM."""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any, NoReturn

import typer
from rich.console import Console
from typer._click import exceptions as click_errors  # typer vendors click
from typer.core import TyperGroup

from autotune.search import SearchInterrupted, study_summary
from autotune.search._shield import interrupt

__all__ = ["OneLineErrors", "stop_on_signals"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_REDELIVER_AFTER_S = 0.05  # long enough for the collector to finish its callbacks
STOP_BOUND_S = 9.0  # a signalled search exits within this, however its cleanup fares


class OneLineErrors(TyperGroup):
    """The app's command group: a wrong command-line value (``--budget abc``,
    ``--trials 0``, an unknown option) is one line on stderr, ``error: ...; see ...
    --help``, and exit status 2 - not click's usage block and boxed message."""

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click_errors.NoArgsIsHelpError as exc:
            print(exc.format_message())
            code = 2
        except click_errors.UsageError as exc:  # a bad value, unknown option, missing argument
            _usage_error(exc)
        except click_errors.ClickException as exc:
            print(f"error: {' '.join(exc.format_message().split())}", file=sys.stderr)
            code = exc.exit_code
        except typer.Abort:
            print("aborted.", file=sys.stderr)
            code = 1
        sys.exit(code if isinstance(code, int) else 0)


def _usage_error(exc: click_errors.UsageError) -> NoReturn:
    command = exc.ctx.command_path if exc.ctx is not None else "autotune"
    text = " ".join(exc.format_message().split()).rstrip(".")
    print(f"error: {text}; see `{command} --help`.", file=sys.stderr)
    sys.exit(exc.exit_code)


@contextlib.contextmanager
def stop_on_signals(console: Console, storage: str, study_name: str) -> Iterator[None]:
    """Within the block SIGINT and SIGTERM raise :class:`SearchInterrupted` (once; later
    ones are ignored while the search cleans up). The search then stops its trial's
    process group and records the trial as interrupted; here the study's state is printed
    in one line and the command exits 130 (SIGINT) or 143 (SIGTERM)."""
    fired: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        if not fired:
            fired.append(signum)
            interrupt(signum)  # raises now, or as soon as a storage call returns

    saved = {sig: signal.signal(sig, stop) for sig in _STOP_SIGNALS}
    try:
        with _exit_deadline(STOP_BOUND_S), _redeliver_if_swallowed(fired):
            yield
    except SearchInterrupted as exc:
        summary = study_summary(storage, study_name)
        console.print(
            f"[bold red]interrupted[/] by {exc}: the running trial was stopped and recorded as "
            f"interrupted; {summary}. Run the same command again to resume.",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(exc.exit_code) from None
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _redeliver_if_swallowed(fired: list[int]) -> Iterator[None]:
    """Python runs a signal handler at the next bytecode of the main thread, and that may
    be inside a callback whose exceptions it cannot propagate: a weakref callback run by
    the garbage collector (SQLAlchemy's ``_collection_gced``), a ``__del__``. There the
    :class:`SearchInterrupted` is printed as "Exception ignored" and dropped, and the
    search would run on until the watcher's hard exit. Every such drop passes through
    ``sys.unraisablehook``: here it re-arms the handler and re-delivers the signal, which
    is then raised again once the callback has returned (should it land in another such
    callback, the same happens again)."""
    previous = sys.unraisablehook

    def redeliver(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, SearchInterrupted):
            previous(unraisable)
            return
        fired.clear()
        # from another thread, a moment later: from here the handler would run in this hook
        later = threading.Timer(
            _REDELIVER_AFTER_S, _thread.interrupt_main, (unraisable.exc_value.signum,)
        )
        later.daemon = True
        later.start()

    sys.unraisablehook = redeliver
    try:
        yield
    finally:
        sys.unraisablehook = previous


@contextlib.contextmanager
def _exit_deadline(bound_s: float) -> Iterator[None]:
    """The last resort behind the graceful stop: once SIGINT or SIGTERM arrives, the
    process exits within ``bound_s`` even if the cleanup hangs. Python runs a signal
    handler only between bytecodes, so a main thread stuck in C - SQLite waiting up to a
    minute for another connection's lock - would not even begin to stop; the C-level
    handler's wakeup byte reaches this watcher thread at once, though. A trial it leaves
    behind kills its own group when its parent is gone; the next search records it."""
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    done = threading.Event()
    previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    watcher = threading.Thread(
        target=_watch, args=(reader, done, bound_s), name="autotune-stop", daemon=True
    )
    watcher.start()
    try:
        yield
    finally:
        done.set()
        signal.set_wakeup_fd(previous)
        writer.close()  # the watcher reads the end and returns


def _watch(reader: socket.socket, done: threading.Event, bound_s: float) -> None:
    with reader:  # open until the end: a re-delivered signal writes its byte too
        while (data := reader.recv(1)) and data[0] not in _STOP_SIGNALS:
            pass  # another signal with a Python handler: not ours
        if not data or done.wait(bound_s):
            return
    name = signal.Signals(data[0]).name
    print(
        f"interrupted by {name}: the search did not stop within {bound_s:.0f} s and exits "
        f"now; its running trial is recorded as interrupted when the same command is run "
        f"again to resume.",
        file=sys.stderr,
        flush=True,
    )
    os._exit(128 + data[0])
