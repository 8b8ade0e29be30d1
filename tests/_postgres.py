"""A throwaway PostgreSQL server for tests: initdb + pg_ctl in a temp dir, 127.0.0.1 only,
a random free port, password authentication; skipped with the reason when it cannot run."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

USER, PASSWORD, DATABASE = "tuner", "secret", "autotune"
_TIMEOUT_S = 120


def _bindir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, else Debian's /usr/lib/postgresql/*/bin."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user() -> tuple[list[str], int | None]:
    """initdb refuses root: as root run the server as ``postgres`` (runuser)."""
    if os.geteuid() != 0:
        return [], None
    try:
        uid = pwd.getpwnam("postgres").pw_uid
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
    if shutil.which("runuser") is None:
        pytest.skip("running as root and runuser (util-linux) is missing")
    return ["runuser", "-u", "postgres", "--"], uid


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server and yield ``postgresql://tuner:secret@127.0.0.1:PORT/autotune``."""
    bindir = _bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL binaries (initdb, pg_ctl) not found on PATH or in "
            "/usr/lib/postgresql/*/bin; apt-get install postgresql (.ci/run does)"
        )
    prefix, uid = _as_server_user()
    # Not under TMPDIR: the tests' temp dirs are private to root, the server user must enter.
    root = Path(tempfile.mkdtemp(prefix="autotune-pg-", dir="/tmp" if uid is not None else None))
    data, pwfile, port = root / "data", root / "pw", _free_port()
    pwfile.write_text(PASSWORD + "\n")
    if uid is not None:
        for path in (root, pwfile):
            os.chown(path, uid, -1)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    start = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w"]
    try:
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={pwfile}"]
        _run(prefix, [*initdb, "--auth=scram-sha-256", "-E", "UTF8"])
        _run(prefix, [*start, "-o", options, "start"])
        _create_database(port)
        yield f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DATABASE}"
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            _run(prefix, [*start, "-m", "immediate", "stop"])
        shutil.rmtree(root, ignore_errors=True)


def _run(prefix: list[str], command: list[str]) -> None:
    done = subprocess.run(
        prefix + command, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stderr[-2000:]}")


def _create_database(port: int) -> None:
    import psycopg2

    connection = psycopg2.connect(
        host="127.0.0.1", port=port, user=USER, password=PASSWORD, dbname="postgres"
    )
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        connection.close()
