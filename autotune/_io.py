"""File helpers shared by every layer that writes: atomic writes and safe YAML."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import yaml


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on success fsync it and rename it over ``path``.

    A reader sees either the old file or the complete new one, never a partial write,
    even when the process is killed mid-write. The file gets the permissions ``open`` would
    give it (an existing file's own, else 0666 less the umask), not the temp file's 0600: a
    tuned.yaml or report is meant to be read by the team and the CI user too.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    permissions = _permissions_for(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, permissions)
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _permissions_for(target: Path) -> int:
    """The permission bits a plain ``open(target, "w")`` would leave ``target`` with."""
    with contextlib.suppress(FileNotFoundError):
        return stat.S_IMODE(target.stat().st_mode)
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask. Linux shows it in /proc (reading it changes nothing); elsewhere
    it is read by setting it and putting it straight back."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """Parse a YAML file with ``yaml.safe_load`` (never the unsafe loader)."""
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def yaml_error_message(path: str | os.PathLike[str], exc: yaml.YAMLError) -> str:
    """One line for a YAML syntax error: ``file:line: malformed YAML (problem); fix ...``."""
    mark = getattr(exc, "problem_mark", None)
    line = f":{mark.line + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or "invalid YAML"
    return f"{path}{line}: malformed YAML ({problem}); fix the syntax."
