"""The fork server: workers forked from a warm image train exactly as fresh interpreters
do, never hang on OpenMP's state, and fall back to fresh interpreters where forking
cannot be trusted. (tests/test_trial.py runs every ending under both launchers.)"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from autotune.config import TrainConfig
from autotune.search._measure import FORK_SERVER_ENV, Trialist
from autotune.trial import PLAIN, ForkServer, TrialResult, TrialSpec, TrialStatus, run_trial
from tests.conftest import TINY_TASK

WriteTask = Callable[..., Path]

# Prints, at import, what the worker's process looks like: its parent and its threads.
REPORTING_TASK = (
    "import os, torch\n"
    "print(f'PARENT={os.getppid()} THREADS={torch.get_num_threads()} "
    'TMPDIR={os.environ.get("TMPDIR")}\', flush=True)\n' + TINY_TASK
)
# Prints, at import, which of what torch imports lazily the worker would still import.
LAZY_REPORTING_TASK = (
    "import sys\nfrom autotune._trial_zygote import LAZY_IMPORTS\n"
    "print(f'UNLOADED={[m for m in LAZY_IMPORTS if m not in sys.modules]}', flush=True)\n"
    + TINY_TASK
)
# A parallel region in the process that forks (here: the server, importing the task)
# leaves GNU OpenMP's thread pool in a state a forked child hangs on.
PARALLEL_AT_IMPORT = "import torch\n_ = torch.randn(1024, 1024) @ torch.randn(1024, 1024)\n"


def _spec(task: Path, **values: object) -> TrialSpec:
    train = TrainConfig.model_validate({"micro_batch_size": 16, "optimizer": {"lr": 1e-2}})
    return TrialSpec(task_path=task, train=train, steps=6, device="cpu", timeout_s=60.0, **values)


def _reported(result: TrialResult) -> dict[str, str]:
    found = re.search(r"PARENT=(\d+) THREADS=(\d+) TMPDIR=(\S+)", result.output_tail)
    assert found, result.output_tail
    return dict(zip(("parent", "threads", "tmpdir"), found.groups(), strict=True))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ForkServer]:
    (tmp_path / "warm.py").write_text(PARALLEL_AT_IMPORT + TINY_TASK)
    forks = ForkServer(tmp_path / "warm.py", tmp_path / "server.log")
    yield forks
    forks.close()


def test_a_forked_worker_trains_exactly_as_a_fresh_interpreter(
    write_task: WriteTask, tmp_path: Path, server: ForkServer
) -> None:
    spec = _spec(write_task(REPORTING_TASK))
    plain = run_trial(spec, workdir=tmp_path / "plain", launcher=PLAIN)
    forked = run_trial(spec, workdir=tmp_path / "forked", launcher=server)
    assert plain.status is forked.status is TrialStatus.OK, forked.output_tail
    assert server.fallback is None
    assert [r.loss for r in forked.steps] == [r.loss for r in plain.steps]  # same seed, data
    fresh, child = _reported(plain), _reported(forked)
    assert fresh["parent"] == str(os.getpid()) and child["parent"] == str(server.pid)
    assert child["threads"] == fresh["threads"]  # not the server's single thread
    assert child["tmpdir"] == str(tmp_path / "forked" / "tmp")  # its own environment


def test_a_forked_worker_starts_with_what_torch_imports_lazily_already_imported(
    write_task: WriteTask, tmp_path: Path, server: ForkServer
) -> None:
    """torch.optim imports torch._dynamo at a run's first optimizer: until the server
    imported it, every forked trial paid that import (2-2.5 s on 2 cores) before its first
    step, 90% of a small trial's start-up."""
    spec = _spec(write_task(LAZY_REPORTING_TASK))
    plain = run_trial(spec, workdir=tmp_path / "plain", launcher=PLAIN)
    forked = run_trial(spec, workdir=tmp_path / "forked", launcher=server)
    assert plain.status is forked.status is TrialStatus.OK, forked.output_tail
    assert "UNLOADED=['torch._dynamo']" in plain.output_tail  # a fresh worker imports it late
    assert "UNLOADED=[]" in forked.output_tail


def test_the_server_builds_the_dataset_once_for_every_worker(
    write_task: WriteTask, tmp_path: Path
) -> None:
    """A dataset that takes seconds to build (tokenizing a corpus) cost every trial those
    seconds, and a 2-minute search of a 3-second dataset ran 2 trials."""
    builds = tmp_path / "builds.txt"
    counting = TINY_TASK.replace(
        "def build_dataset():\n",
        "def build_dataset():\n"
        f"    with open({str(builds)!r}, 'a') as f:\n"
        "        f.write(f'{__import__(\"os\").getpid()}\\n')\n",
    )
    task = write_task(counting)
    forks = ForkServer(task, tmp_path / "server.log")
    try:
        results = [
            run_trial(_spec(task), workdir=tmp_path / f"t{i}", launcher=forks) for i in range(2)
        ]
        assert [r.status for r in results] == [TrialStatus.OK] * 2, results[0].output_tail
        assert forks.fallback is None
        assert builds.read_text().split() == [str(forks.pid)]
    finally:
        forks.close()


def test_parallel_work_at_import_does_not_hang_a_forked_worker(
    write_task: WriteTask, tmp_path: Path, server: ForkServer
) -> None:
    task = write_task(PARALLEL_AT_IMPORT + TINY_TASK)  # the child computes in parallel too
    first = run_trial(_spec(task), workdir=tmp_path / "first", launcher=server)
    second = run_trial(_spec(task), workdir=tmp_path / "second", launcher=server)
    for result in (first, second):
        assert result.status is TrialStatus.OK, result.reason
        assert result.wall_s < 30  # a hang would run into the 60 s timeout
    assert server.fallback is None and first.pid != second.pid


def test_memory_limited_trials_start_as_fresh_interpreters(
    write_task: WriteTask, tmp_path: Path, server: ForkServer
) -> None:
    spec = _spec(write_task(REPORTING_TASK), memory_limit_bytes=8 << 30)
    result = run_trial(spec, workdir=tmp_path / "trial", launcher=server)
    assert result.status is TrialStatus.OK, result.output_tail
    assert _reported(result)["parent"] == str(os.getpid())  # RLIMIT_AS bounds a fresh space
    assert server.fallback is None  # only that trial: the server stays in use


@pytest.mark.slow
def test_a_dead_server_costs_its_trial_and_later_trials_start_fresh(
    write_task: WriteTask, tmp_path: Path, server: ForkServer
) -> None:
    slow_loss = TINY_TASK.replace("    x, y = batch\n", "    time.sleep(0.2)\n    x, y = batch\n")
    sleepy = write_task("import time\n" + slow_loss, name="sleepy.py")

    def kill_server_at_step_2(record: object) -> bool:
        if getattr(record, "step", 0) == 2 and server.pid is not None:
            os.killpg(server.pid, signal.SIGKILL)
        return False

    spec = _spec(sleepy).model_copy(update={"steps": 50})
    killed = run_trial(
        spec, workdir=tmp_path / "killed", on_step=kill_server_at_step_2, launcher=server
    )
    assert killed.status is TrialStatus.CRASH and killed.signal == "SIGKILL"
    assert server.fallback is not None and "the fork server exited" in server.fallback
    task = write_task(REPORTING_TASK)
    after = run_trial(_spec(task), workdir=tmp_path / "after", launcher=server)
    assert after.status is TrialStatus.OK
    assert _reported(after)["parent"] == str(os.getpid())


def test_a_prepared_server_starts_without_waiting_and_serves_the_first_launch(
    write_task: WriteTask, tmp_path: Path
) -> None:
    slow = write_task("import time\ntime.sleep(2)\n" + REPORTING_TASK, name="slow.py")
    forks = ForkServer(slow, tmp_path / "slow-server.log")
    try:
        started = time.monotonic()
        forks.prepare()
        assert time.monotonic() - started < 1.0 and forks.pid is not None  # importing
        forks.await_ready()
        assert time.monotonic() - started >= 2.0  # its task's 2 s import
        result = run_trial(_spec(slow), workdir=tmp_path / "t", launcher=forks)
        assert result.status is TrialStatus.OK, result.output_tail
        assert _reported(result)["parent"] == str(forks.pid) and forks.fallback is None
    finally:
        forks.close()


def test_close_ends_the_server_and_later_trials_start_fresh(
    write_task: WriteTask, tmp_path: Path, server: ForkServer
) -> None:
    task = write_task(REPORTING_TASK)
    assert run_trial(_spec(task), workdir=tmp_path / "a", launcher=server).status is TrialStatus.OK
    pid = server.pid
    assert pid is not None
    server.close()
    deadline = time.monotonic() + 10
    while _exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _exists(pid) and server.pid is None
    after = run_trial(_spec(task), workdir=tmp_path / "b", launcher=server)
    assert _reported(after)["parent"] == str(os.getpid())


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_search_forks_unless_told_not_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Trialist(tmp_path / "model.py", tmp_path, seed=0) as trials:
        assert isinstance(trials.launcher, ForkServer)
    monkeypatch.setenv(FORK_SERVER_ENV, "0")
    with Trialist(tmp_path / "model.py", tmp_path, seed=0) as trials:
        assert trials.launcher is PLAIN


class _Stop(Exception):
    pass


@pytest.mark.parametrize(("cached", "expected"), [(True, ["server", "task"]), (False, ["task"])])
def test_the_search_starts_its_fork_server_first_when_no_peaks_are_to_be_timed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cached: bool, expected: list[str]
) -> None:
    """With the hardware cached, the server's imports overlap the search's own set-up;
    without, the probe times the peaks alone and starts the server after them."""
    import autotune.search as search

    order: list[str] = []

    def load_task(path: object) -> None:
        order.append("task")
        raise _Stop

    monkeypatch.setattr(ForkServer, "prepare", lambda self: order.append("server"))
    monkeypatch.setattr(search, "load_task", load_task)
    monkeypatch.setattr(search, "cached_hardware", lambda: object() if cached else None)
    task = tmp_path / "model.py"
    task.write_text("")  # read for the study's identity; load_task (mocked) never imports it
    options = search.SearchOptions(task_path=task, storage=f"sqlite:///{tmp_path}/s.db")
    with pytest.raises(_Stop):
        search.run_search(options)
    assert order == expected


def test_the_search_hands_the_cached_peaks_to_its_probe(
    write_task: WriteTask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The peaks the search found cached are the probe's: the cache is read once."""
    import autotune.search as search
    from autotune import profiler

    peaks, seen = object(), []

    def probe(task: object, **kwargs: object) -> None:
        seen.append(kwargs["hardware"])
        raise _Stop

    monkeypatch.setattr(ForkServer, "prepare", lambda self: None)
    monkeypatch.setattr(search, "cached_hardware", lambda: peaks)
    monkeypatch.setattr(profiler, "probe", probe)
    options = search.SearchOptions(
        task_path=write_task(TINY_TASK), storage=f"sqlite:///{tmp_path}/s.db"
    )
    with pytest.raises(_Stop):
        search.run_search(options)
    assert seen == [peaks]


class _Alarm(Exception):
    pass


def _raise_alarm(signum: int, frame: object) -> None:
    raise _Alarm


def test_a_server_stopped_while_it_imports_is_killed_at_once(
    write_task: WriteTask, tmp_path: Path
) -> None:
    """A search stopped during its first trial's launch must not wait for the server's
    imports (here a task file that takes 30 s to import) before it can exit."""
    slow = write_task("import time\ntime.sleep(30)\n" + TINY_TASK, name="slow.py")
    forks = ForkServer(slow, tmp_path / "slow-server.log")
    previous = signal.signal(signal.SIGALRM, _raise_alarm)
    signal.setitimer(signal.ITIMER_REAL, 1.0)  # a stop signal while it imports
    try:
        with pytest.raises(_Alarm):
            run_trial(_spec(slow), workdir=tmp_path / "t", launcher=forks)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, previous)
    started = time.monotonic()
    forks.close()
    assert time.monotonic() - started < 2.0 and forks.pid is None


def _context_switches(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.MULTILINE)
    assert found, status
    return int(found.group(1))


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs pidfds (Linux >= 5.3)")
def test_the_server_sleeps_while_its_worker_trains(
    write_task: WriteTask, tmp_path: Path, server: ForkServer
) -> None:
    """A server that woke every 20 ms to look for exits took a core from a 2-thread trial
    50 times a second (forked trials measured 5-9% below fresh ones on 2 cores)."""
    slow_loss = TINY_TASK.replace("    x, y = batch\n", "    time.sleep(0.1)\n    x, y = batch\n")
    sleepy = write_task("import time\n" + slow_loss, name="sleepy.py")
    run_trial(_spec(sleepy), workdir=tmp_path / "warm", launcher=server)  # starts the server
    assert server.pid is not None
    before = _context_switches(server.pid)
    result = run_trial(
        _spec(sleepy).model_copy(update={"steps": 20}), workdir=tmp_path / "t", launcher=server
    )
    woke = _context_switches(server.pid) - before
    assert result.status is TrialStatus.OK and result.wall_s > 2.0
    assert woke < 10, f"the server woke {woke} times during a {result.wall_s:.1f} s trial"


@pytest.mark.parametrize("warm_task", [True, False])
def test_a_server_told_not_to_warm_the_task_forks_before_its_imports(
    write_task: WriteTask, tmp_path: Path, warm_task: bool
) -> None:
    """benchmarks.fork_bench's "forked, task not preloaded": the server imports torch but
    not the task file, so its imports happen in each child, as in a fresh interpreter."""
    task = write_task("print('TASK-IMPORTED', flush=True)\n" + TINY_TASK)
    log = tmp_path / "server.log"
    forks = ForkServer(task, log, warm_task=warm_task)
    try:
        result = run_trial(_spec(task), workdir=tmp_path / "trial", launcher=forks)
    finally:
        forks.close()
    assert result.status is TrialStatus.OK and forks.fallback == "the fork server was closed"
    assert "TASK-IMPORTED" in result.output_tail  # the child imports it either way
    assert ("TASK-IMPORTED" in log.read_text()) is warm_task
