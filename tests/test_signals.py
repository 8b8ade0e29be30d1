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
