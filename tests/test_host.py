"""The host watch tells other processes' CPU use from this process tree's own."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from autotune import _host
from autotune._host import CpuShare, CpuWatch
from autotune.search import _Search

pytestmark = pytest.mark.skipif(
    not Path("/proc/stat").exists() or not CpuWatch().usable,
    reason="needs Linux's /proc and no cgroup CPU quota below the affinity",
)

_SPIN = "import time\nend = time.time() + {s}\nwhile time.time() < end: pass"


@pytest.fixture
def stranger(tmp_path: Path) -> Iterator[None]:
    """A busy process that is not this one's descendant: its shell parent exits at once,
    so it is re-parented (as another user's program would be)."""
    pid_file = tmp_path / "pid"
    spin = _SPIN.format(s=20)
    subprocess.run(
        ["sh", "-c", f'{sys.executable} -c "$0" & echo $! > {pid_file}', spin],
        check=True,
        timeout=10,
    )
    time.sleep(0.3)  # running by now
    yield
    subprocess.run(["kill", pid_file.read_text().strip()], check=False, timeout=10)


def test_a_busy_process_of_someone_else_counts(stranger: None) -> None:
    watch = CpuWatch()
    time.sleep(1.5)
    share = watch.share()
    assert share is not None and share.busy, share
    assert 0.6 < share.others_cores <= share.cores


def test_this_process_and_its_children_do_not_count() -> None:
    watch = CpuWatch()
    child = subprocess.Popen([sys.executable, "-c", _SPIN.format(s=1.0)])
    end = time.time() + 1.0
    while time.time() < end:  # this process busy too
        pass
    child.wait(timeout=10)  # reaped: its time is now this process's children's
    share = watch.share()
    assert share is not None and not share.busy, share


def test_busy_means_half_a_core_or_a_tenth_of_many() -> None:
    assert not CpuShare(cores=2, others_cores=0.4, seconds=1).busy
    assert CpuShare(cores=2, others_cores=0.5, seconds=1).busy
    assert not CpuShare(cores=64, others_cores=6.0, seconds=1).busy
    assert CpuShare(cores=64, others_cores=6.4, seconds=1).busy
    said = CpuShare(cores=2, others_cores=1.26, seconds=12.4).sentence()
    assert said == "other processes kept 1.3 of this process's 2 CPU cores busy over 12 s"


def test_a_quota_below_the_cpus_turns_the_watch_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_host, "_quota_below", lambda cores: True)
    watch = CpuWatch()
    assert not watch.usable and watch.share() is None


def test_the_search_warns_once_and_says_over_what() -> None:
    busy = SimpleNamespace(share=lambda: CpuShare(cores=2, others_cores=1.0, seconds=30))
    search = SimpleNamespace(told_contention=False, watch=busy)
    said = _Search._contention(search, "the whole search")  # type: ignore[arg-type]
    assert said is not None and "busy over 30 s (the whole search)" in said
    assert "stop the other work and search again" in said
    assert _Search._contention(search, "the whole search") is None  # type: ignore[arg-type]
    quiet = SimpleNamespace(share=lambda: CpuShare(cores=2, others_cores=0.1, seconds=30))
    fresh = SimpleNamespace(told_contention=False, watch=quiet)
    assert _Search._contention(fresh, "the whole search") is None  # type: ignore[arg-type]


def test_cgroup_quotas_of_either_version_are_read(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _host._read_quota(tmp_path / "cpu.max", None) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _host._read_quota(tmp_path / "cpu.max", None) is None
    (tmp_path / "q").write_text("200000\n")
    (tmp_path / "p").write_text("100000\n")
    assert _host._read_quota(tmp_path / "q", tmp_path / "p") == 2.0
    (tmp_path / "q").write_text("-1\n")
    assert _host._read_quota(tmp_path / "q", tmp_path / "p") is None
    assert _host._read_quota(tmp_path / "absent", None) is None
