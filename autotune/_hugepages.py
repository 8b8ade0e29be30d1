"""Transparent huge pages for glibc's malloc in the CLI's training commands.

glibc backs its heap and the chunks it maps with transparent huge pages when the process
starts with the tunable ``glibc.malloc.hugetlb=1`` (glibc >= 2.35, a kernel whose THP mode
is ``always`` or ``madvise``). A CPU training step allocates and frees its activations and
gradients through malloc at every step, so fewer TLB misses show directly in samples/s:
on the 2-core AMX host (2026-12-06) the median process trained cnn_digits 6% and tiny_gpt
5% faster with it, interleaved in fresh processes (``scripts/speed_levels.py --env``), and
cnn_digits' processes varied 5% instead of 12%.

A tunable is read once, when the process starts, so :func:`restart_with_hugepages` restarts
the command in place (``execve``: the same pid, arguments and open files) with it set, before
anything is measured. The console script (``autotune.__main__:main``) calls it before it
imports torch or the CLI, so the restart costs a bare interpreter's start, not torch's.
Every process the command starts (trial workers, the fork server, ranks) inherits it, so
the search's trials, its probe and ``autotune run`` all measure under the same allocator,
and ``autotune run -c`` reproduces what the search recorded.

The user's own choice wins: a ``GLIBC_TUNABLES`` that already names the tunable is left as
it is, and ``AUTOTUNE_HUGEPAGES=0`` keeps malloc's default.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "OPT_OUT",
    "TRAINING_COMMANDS",
    "TUNABLE",
    "restart_environment",
    "restart_for_measuring",
    "restart_with_hugepages",
]

TUNABLE = "glibc.malloc.hugetlb"
OPT_OUT = "AUTOTUNE_HUGEPAGES"  # "0": keep malloc's default
TRAINING_COMMANDS = frozenset({"run", "probe", "search", "check"})  # what measures or trains
_MIN_GLIBC = (2, 35)  # the release that added glibc.malloc.hugetlb
_THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
log = logging.getLogger(__name__)


def restart_environment(
    environ: Mapping[str, str], glibc: tuple[int, int] | None, thp_mode: str | None
) -> dict[str, str] | None:
    """The environment to restart with, or None when the process should go on as it is.

    ``glibc`` is the C library's version (None: not glibc); ``thp_mode`` the kernel's
    selected THP mode (None: the kernel has no THP).
    """
    if environ.get(OPT_OUT) == "0" or glibc is None or glibc < _MIN_GLIBC:
        return None
    if thp_mode not in ("always", "madvise"):
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if TUNABLE in tunables:  # set by the user, or by our own restart
        return None
    setting = f"{TUNABLE}=1"
    return {**environ, "GLIBC_TUNABLES": f"{tunables}:{setting}" if tunables else setting}


def restart_with_hugepages(argv: Sequence[str]) -> None:
    """Restart this process with huge-page malloc when ``argv`` (the CLI's arguments) names
    a training command and the host supports it; return (and go on as is) otherwise."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command in TRAINING_COMMANDS:
        restart_for_measuring()


def restart_for_measuring() -> None:
    """Restart this process with huge-page malloc where the host supports it, so that what
    it measures is measured as the CLI measures it; return (and go on as is) otherwise.

    For a benchmark's ``__main__``: never call it from code a test imports and runs.
    """
    environment = restart_environment(os.environ, glibc_version(), thp_mode())
    if environment is None:
        return
    log.debug("restarting with GLIBC_TUNABLES=%s", environment["GLIBC_TUNABLES"])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)


def glibc_version() -> tuple[int, int] | None:
    """glibc's (major, minor), or None where the C library is another."""
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):  # not a POSIX system, or not GNU
        return None
    name, _, version = (text or "").partition(" ")
    major, _, minor = version.partition(".")
    if name != "glibc" or not major.isdigit():
        return None
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def thp_mode(path: Path = _THP_MODE) -> str | None:
    """The kernel's selected THP mode (the bracketed word), or None without THP."""
    try:
        text = path.read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None
