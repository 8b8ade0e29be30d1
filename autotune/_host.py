"""How much of this process's CPUs other processes kept busy while it ran.

Every number autotune reports is a timing, and nothing in a run's own numbers shows that
another program shared its cores: a CPU step under contention is slower and far noisier
(threads that wait for each other at every barrier wait for the other program too), and
the search then picks, and ``run -c`` compares, against that. So the commands that time
things watch the host: the busy time of the CPUs this process may run on (``/proc/stat``),
less the CPU time of this process and its descendants (``/proc/PID/stat``, reaped children
included), is what others used.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BUSY_FLOOR_CORES", "CpuShare", "CpuWatch"]

# Others busy on at least this many of our cores (or 10% of them, where more) is contention:
# half a core taken from a 2-core run stalls its 2 threads at every barrier (the measured
# DDP note: oversubscribed threads halve throughput), while daemons and the kernel stay well
# under it on an idle host (tests/test_host.py checks this process tree is not counted).
BUSY_FLOOR_CORES = 0.5
_BUSY_SHARE = 0.1
# /proc/stat columns after the CPU name: user nice system idle iowait irq softirq steal;
# busy is all but idle and iowait. steal is time the hypervisor gave another guest.
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)
_PROC = Path("/proc")


@dataclass(frozen=True)
class CpuShare:
    """What other processes used of this process's ``cores`` CPUs over ``seconds``."""

    cores: int
    others_cores: float
    seconds: float

    @property
    def busy(self) -> bool:
        """Whether others used enough to slow and scatter this process's timings."""
        return self.others_cores >= max(BUSY_FLOOR_CORES, _BUSY_SHARE * self.cores)

    def sentence(self) -> str:
        """E.g. "other processes kept 1.3 of this process's 2 CPU cores busy over 12 s"."""
        return (
            f"other processes kept {self.others_cores:.1f} of this process's {self.cores} CPU "
            f"cores busy over {self.seconds:.0f} s"
        )


class CpuWatch:
    """Starts watching when built; :meth:`share` reads what others used since then.

    Unavailable (every :meth:`share` is None) where ``/proc`` is not Linux's, or where a
    cgroup CPU quota gives this process fewer cores than it may run on: the busy time of
    those CPUs then includes other containers' work inside their own quota.
    """

    def __init__(self) -> None:
        self.cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.usable = bool(self.cpus) and not _quota_below(len(self.cpus))
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        """(wall clock, busy seconds of our CPUs, CPU seconds of our process tree)."""
        if not self.usable:
            return None
        try:
            busy = _busy_ticks(self.cpus)
            own = _tree_ticks(os.getpid())
        except (OSError, ValueError, IndexError):
            return None
        return time.monotonic(), busy / self.tick, own / self.tick

    def share(self) -> CpuShare | None:
        """What others used since the watch began; None where it cannot be told."""
        now = self._sample()
        if self.start is None or now is None or now[0] <= self.start[0]:
            return None
        seconds = now[0] - self.start[0]
        others = (now[1] - self.start[1]) - (now[2] - self.start[2])
        return CpuShare(len(self.cpus), max(0.0, others / seconds), seconds)


def _busy_ticks(cpus: list[int]) -> int:
    wanted = {f"cpu{n}" for n in cpus}
    total = 0
    for line in (_PROC / "stat").read_text().splitlines():
        name, *values = line.split()
        if name in wanted:
            total += sum(int(values[k]) for k in _BUSY_COLUMNS)
    return total


def _tree_ticks(root: int) -> int:
    """CPU ticks of ``root`` and its live descendants, each with its reaped children's."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it exited while we looked
            continue
        # The command name (field 2) may hold spaces and parentheses: split after its ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        ticks[pid] = sum(int(fields[k]) for k in (11, 12, 13, 14))  # utime stime cutime cstime
    tree = {root}
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(ticks.get(pid, 0) for pid in tree)


def _quota_below(cores: int) -> bool:
    """Whether this process's cgroup CPU quota allows fewer than ``cores`` CPUs."""
    quota = _cgroup_quota()
    return quota is not None and quota < cores


def _cgroup_quota() -> float | None:
    """CPUs this process's cgroup allows (v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us``);
    None for no quota, or where it cannot be read."""
    root = Path("/sys/fs/cgroup")
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:  # "ID:controllers:path"
        _, controllers, path = line.split(":", 2)
        where = path.lstrip("/")
        quota = None
        if controllers == "":
            quota = _read_quota(root / where / "cpu.max", None)
        elif "cpu" in controllers.split(","):
            v1 = root / controllers / where
            quota = _read_quota(v1 / "cpu.cfs_quota_us", v1 / "cpu.cfs_period_us")
        if quota is not None:
            return quota
    return None


def _read_quota(quota_file: Path, period_file: Path | None) -> float | None:
    try:
        if period_file is None:  # v2: "QUOTA PERIOD" or "max PERIOD"
            quota, period = quota_file.read_text().split()[:2]
        else:  # v1: -1 for none
            quota, period = quota_file.read_text().strip(), period_file.read_text().strip()
    except (OSError, ValueError):
        return None
    if quota in ("max", "-1"):
        return None
    return int(quota) / int(period)
