"""A signalled `autotune search` exits within a bound even while its main thread is stuck
in C code that defers Python's signal handler: here SQLite waiting (up to its 60 s busy
timeout) for a lock another connection holds."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autotune._cli_support import STOP_BOUND_S

_STUCK = """
import sqlite3, sys
from rich.console import Console
from autotune._cli_support import stop_on_signals
db = sys.argv[1]
holder = sqlite3.connect(db, isolation_level=None)
holder.execute("BEGIN EXCLUSIVE")  # held for good: every other connection waits
waiter = sqlite3.connect(db, timeout=60)
with stop_on_signals(Console(stderr=True), f"sqlite:///{db}", "s"):
    print("waiting", flush=True)
    waiter.execute("CREATE TABLE t (x)")  # in C, signals deferred, for 60 s
"""


@pytest.mark.skipif(sys.platform != "linux", reason="signals")
def test_sigterm_exits_within_the_bound_while_stuck_in_c(tmp_path: Path) -> None:
    sig, code = signal.SIGTERM, 143
    command = [sys.executable, "-c", _STUCK, str(tmp_path / "locked.db")]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "waiting\n"
    time.sleep(0.5)  # inside SQLite's busy wait
    sent = time.monotonic()
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=90)
    took = time.monotonic() - sent
    assert proc.returncode == code and took < STOP_BOUND_S + 1.0, (took, stderr)
    assert f"interrupted by {sig.name}" in stderr and "run again to resume" in stderr


_IN_A_GC_CALLBACK = """
import gc, os, signal, sys, time, weakref
import typer
from rich.console import Console
from autotune._cli_support import stop_on_signals

class Node:
    pass

def arrives_in_callback(ref):
    os.kill(os.getpid(), signal.SIGTERM)
    sum(range(1000))  # bytecodes inside the callback: the handler runs here

try:
    with stop_on_signals(Console(stderr=True), f"sqlite:///{sys.argv[1]}", "s"):
        node = Node()
        node.cycle = node
        ref = weakref.ref(node, arrives_in_callback)
        del node
        gc.collect()  # the callback runs inside the collector, which drops its exceptions
        time.sleep(3)  # ordinary code: a re-delivered signal stops the search here
        print("not stopped", flush=True)
except typer.Exit as stopped:
    sys.exit(stopped.exit_code)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="signals")
def test_a_signal_dropped_inside_a_gc_callback_still_stops_the_search(tmp_path: Path) -> None:
    command = [sys.executable, "-c", _IN_A_GC_CALLBACK, str(tmp_path / "none.db")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 143, done.stderr
    assert "not stopped" not in done.stdout and "Traceback" not in done.stderr, done.stderr
    # Stopped by the re-delivered signal, inside the 3 s sleep: not by the watcher's hard
    # exit (its line says "did not stop within"). The process's own wall time is no
    # measure: importing torch alone takes 3-5 s of a loaded 2-core CI machine.
    assert "interrupted by SIGTERM: the running trial was stopped" in done.stderr, done.stderr
