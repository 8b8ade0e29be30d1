"""Supervised trials: every way a trial can end is recorded with its status and reason,
and no worker process outlives :func:`run_trial` (DESIGN.md, invariant 2)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from autotune import stability
from autotune._trial_worker import classify
from autotune.config import TrainConfig
from autotune.errors import TaskError, TrainingError
from autotune.runtime import StepRecord
from autotune.search._measure import TargetWatch
from autotune.stability import TARGET_SUPPORT_STEPS
from autotune.trial import (
    PLAIN,
    ForkServer,
    Launcher,
    TargetStop,
    TrialResult,
    TrialSpec,
    TrialStatus,
    WorkerError,
    run_trial,
)
from autotune.trial._process import ProgressReader, TrialFiles, output_tail
from autotune.trial._run import first_written_s
from autotune.trial._verdict import Ending, decide, read_outcome, signal_name
from tests.conftest import TINY_TASK

WriteTask = Callable[..., Path]


def _faulty(*lines: str, at_step: int = 1) -> str:
    """TINY_TASK whose loss function runs ``lines`` from the ``at_step``-th call on."""
    body = "".join(f"        {line}\n" for line in lines)
    return TINY_TASK.replace(
        "def loss_fn(model, batch):\n",
        "import os, sys, time\n_calls = [0]\n\n"
        "def loss_fn(model, batch):\n"
        "    _calls[0] += 1\n"
        f"    if _calls[0] >= {at_step}:\n{body}",
    )


def _spec(task: Path, **values: Any) -> TrialSpec:
    values.setdefault("steps", 6)
    values.setdefault("device", "cpu")
    values.setdefault("timeout_s", 60.0)
    train = TrainConfig.model_validate({"micro_batch_size": 16, "optimizer": {"lr": 1e-2}})
    return TrialSpec(task_path=task, train=train, **values)


def _assert_gone(result: TrialResult) -> None:
    """Neither the worker nor anything in its process group is alive."""
    with pytest.raises(ProcessLookupError):
        os.kill(result.pid, 0)
    with pytest.raises(ProcessLookupError):
        os.killpg(result.pid, 0)


@pytest.fixture(scope="module")
def fork_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    """One warm server for the module: a child imports its own spec's task file anyway."""
    folder = tmp_path_factory.mktemp("fork-server")
    (folder / "model.py").write_text(TINY_TASK)
    server = ForkServer(folder / "model.py", folder / "server.log")
    yield server
    server.close()


@pytest.fixture(params=["plain", "forked"])
def launcher(request: pytest.FixtureRequest) -> Iterator[Launcher]:
    """Each subprocess test runs with a fresh interpreter and with a forked worker."""
    if request.param == "plain":
        yield PLAIN
        return
    server: ForkServer = request.getfixturevalue("fork_server")
    yield server
    assert server.fallback is None  # the trial was forked, not quietly run plain


def _trial(
    write_task: WriteTask, tmp_path: Path, source: str, launcher: Launcher, **values: Any
) -> TrialResult:
    spec = _spec(write_task(source), **values)
    result = run_trial(spec, workdir=tmp_path / "trial", launcher=launcher)
    _assert_gone(result)
    assert result.reason and "\n" not in result.reason
    return result


# -- trials in a subprocess --------------------------------------------------------------


def test_healthy_trial_is_ok_with_summary_and_steps(
    write_task: WriteTask, tmp_path: Path, launcher: Launcher
) -> None:
    seen: list[int] = []

    def watch(record: StepRecord) -> bool:
        seen.append(record.step)
        return False  # never prune

    spec = _spec(write_task(TINY_TASK))
    result = run_trial(spec, workdir=tmp_path / "trial", on_step=watch, launcher=launcher)
    _assert_gone(result)
    assert result.status is TrialStatus.OK, result.output_tail
    assert result.reason.startswith("trained 6 steps: final loss ")
    assert result.summary is not None and result.summary.loss_finite
    assert result.summary.peak_memory_bytes is not None  # measure_memory defaults on
    assert [r.step for r in result.steps] == [1, 2, 3, 4, 5, 6] == seen
    assert result.exit_code == 0 and result.signal is None and result.error is None
    assert result.first_step_s is not None and 0 < result.first_step_s <= result.wall_s
    progress = (tmp_path / "trial" / "progress.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in progress] == [1, 2, 3, 4, 5, 6]
    left = {p.name for p in (tmp_path / "trial").iterdir()}
    assert left == {"spec.json", "progress.jsonl", "result.json", "output.log"}
    assert TrialResult.model_validate_json(result.to_json()) == result


LOSS_FAULTS = {  # the loss function's line from step 3 on -> status, reason (a regex)
    "raises": (
        "raise ValueError('boom in the loss')",
        TrialStatus.CRASH,
        r"^task error: .*model\.py:\d+: computing the loss raised ValueError: boom in the loss",
    ),
    "sys.exit": (
        "sys.exit(3)",
        TrialStatus.CRASH,
        r"^the task called sys\.exit\(3\) at .*model\.py:\d+$",
    ),
    "nan": (
        "return model(batch[0]).sum() * float('nan')",
        TrialStatus.UNSTABLE,
        r"^training diverged: non-finite loss \(nan\) at step 3$",
    ),
    "os._exit": (
        "os._exit(0)",
        TrialStatus.CRASH,
        r"^exited with status 0 without writing a result \(after step 2 of 6\)$",
    ),
}


@pytest.mark.parametrize(("line", "status", "reason"), LOSS_FAULTS.values(), ids=LOSS_FAULTS)
def test_failures_in_the_loss_are_recorded(
    write_task: WriteTask,
    tmp_path: Path,
    launcher: Launcher,
    line: str,
    status: TrialStatus,
    reason: str,
) -> None:
    result = _trial(write_task, tmp_path, _faulty(line, at_step=3), launcher)
    assert result.status is status, result.output_tail
    assert re.search(reason, result.reason), result.reason
    again = TrialResult.model_validate_json(result.to_json())  # NaN losses survive
    assert again.model_dump(exclude={"steps", "summary"}) == result.model_dump(
        exclude={"steps", "summary"}
    )
    assert [r.step for r in again.steps] == [r.step for r in result.steps]


@pytest.mark.parametrize(
    ("lines", "name"),
    [(["os.abort()"], "SIGABRT"), (["import ctypes", "ctypes.string_at(0)"], "SIGSEGV")],
    ids=["abort", "segfault"],
)
def test_death_by_signal_is_a_crash_named_by_the_signal(
    write_task: WriteTask, tmp_path: Path, launcher: Launcher, lines: list[str], name: str
) -> None:
    result = _trial(write_task, tmp_path, _faulty(*lines, at_step=2), launcher)
    assert result.status is TrialStatus.CRASH
    assert result.signal == name and result.exit_code is None
    assert result.reason == f"killed by {name} without writing a result (after step 1 of 6)"
    assert [r.step for r in result.steps] == [1]  # streamed before it died
    assert "in loss_fn" in result.output_tail  # faulthandler's stack, for the record


def test_out_of_memory_under_a_memory_limit(
    write_task: WriteTask, tmp_path: Path, launcher: Launcher
) -> None:
    grab = "torch.empty(8 << 30, dtype=torch.uint8)"  # 8 GiB: far past the 2 GiB limit
    result = _trial(write_task, tmp_path, _faulty(grab), launcher, memory_limit_bytes=2 << 30)
    assert result.status is TrialStatus.OOM, result.output_tail
    assert result.error is not None and result.error.error == "oom"
    assert result.reason.startswith("out of memory under memory_limit_bytes=2,147,483,648: ")
    assert "can't allocate memory" in result.reason


def test_memory_limit_below_torch_itself_is_a_config_error(
    write_task: WriteTask, tmp_path: Path, launcher: Launcher
) -> None:
    result = _trial(write_task, tmp_path, TINY_TASK, launcher, memory_limit_bytes=64 << 20)
    assert result.status is TrialStatus.CRASH
    assert result.error is not None and result.error.error == "config"
    assert "memory_limit_bytes must exceed what the worker maps" in result.reason


def test_broken_task_file_is_a_task_error(
    write_task: WriteTask, tmp_path: Path, launcher: Launcher
) -> None:
    result = _trial(write_task, tmp_path, "raise RuntimeError('no data here')\n", launcher)
    assert result.status is TrialStatus.CRASH and result.steps == []
    assert result.error is not None and result.error.error == "task"
    assert "importing the task file raised RuntimeError: no data here" in result.reason


@pytest.mark.slow
def test_hang_times_out_and_the_group_is_killed(
    write_task: WriteTask, tmp_path: Path, launcher: Launcher
) -> None:
    # It hangs in step 1: on a loaded machine it may not even get there within the timeout,
    # and the record is the same either way.
    result = _trial(write_task, tmp_path, _faulty("time.sleep(1000)"), launcher, timeout_s=4.0)
    assert result.status is TrialStatus.TIMEOUT and result.steps == []
    assert result.reason == (
        "no result within timeout_s=4 s (after step 0 of 6); its process group was killed"
    )
    assert result.signal == "SIGTERM" and 4.0 <= result.wall_s < 10.0


def test_on_step_true_prunes_at_that_step(
    write_task: WriteTask, tmp_path: Path, launcher: Launcher
) -> None:
    spec = _spec(write_task(_faulty("time.sleep(0.02)")), steps=10_000)
    result = run_trial(spec, workdir=tmp_path, on_step=lambda r: r.step == 3, launcher=launcher)
    _assert_gone(result)
    assert result.status is TrialStatus.PRUNED and result.summary is None
    assert [r.step for r in result.steps] == [1, 2, 3]
    assert result.reason.startswith("pruned at step 3 (loss ") and result.reason.endswith(
        ") by on_step"
    )


def test_a_worker_told_the_target_ends_its_run_there_itself(
    write_task: WriteTask, tmp_path: Path, launcher: Launcher
) -> None:
    """The supervisor looks at the progress every POLL_S (0.25 s): a small model's run
    would go on that long past its target, and be killed. Told the target, the worker ends
    the run at the step where the watch stops it, and exits 0."""
    spec = _spec(write_task(TINY_TASK), steps=10_000, stop_at=TargetStop(loss=0.4))
    watch = TargetWatch(0.4, math.inf)
    result = run_trial(spec, workdir=tmp_path, on_step=watch, launcher=launcher)
    _assert_gone(result)
    assert result.status is TrialStatus.PRUNED, result.reason
    assert result.exit_code == 0 and result.signal is None  # not the supervisor's SIGTERM
    reached = stability.steps_to_target([r.loss for r in result.steps], 0.4)
    assert reached is not None and len(result.steps) == reached + 1 + TARGET_SUPPORT_STEPS


def test_a_worker_with_two_ranks_ends_them_at_its_target_too(
    write_task: WriteTask, tmp_path: Path
) -> None:
    """With ranks, the stop is raised where rank 0's records arrive; the ranks are stopped
    on the way out, and the worker still exits 0 at the step the watch stops it."""
    train = TrainConfig.model_validate(
        {"micro_batch_size": 16, "world_size": 2, "optimizer": {"lr": 1e-2}}
    )
    spec = _spec(write_task(TINY_TASK), steps=10_000, stop_at=TargetStop(loss=0.4))
    spec = spec.model_copy(update={"train": train})
    result = run_trial(spec, workdir=tmp_path, on_step=TargetWatch(0.4, math.inf))
    assert result.status is TrialStatus.PRUNED and result.exit_code == 0, result.reason
    reached = stability.steps_to_target([r.loss for r in result.steps], 0.4)
    assert reached is not None and len(result.steps) == reached + 1 + TARGET_SUPPORT_STEPS


# The worker's exit takes a second after its last step, as a torchrun teardown can: the
# task slows the os._exit that ends the worker's process.
SLOW_EXIT = (
    "import os, time\n_exit = os._exit\n"
    "os._exit = lambda code: (time.sleep(1.0), _exit(code))\n" + TINY_TASK
)


def test_a_worker_already_ending_at_its_target_is_left_to_exit_by_itself(
    write_task: WriteTask, tmp_path: Path
) -> None:
    """The watch stops the run at the step where the worker ends it itself; a worker that
    is still exiting when the supervisor looks is not cut short by a SIGTERM."""
    spec = _spec(write_task(SLOW_EXIT), steps=10_000, stop_at=TargetStop(loss=0.4))
    result = run_trial(spec, workdir=tmp_path, on_step=TargetWatch(0.4, math.inf))
    _assert_gone(result)
    assert result.status is TrialStatus.PRUNED, result.reason
    assert result.exit_code == 0 and result.signal is None and result.wall_s < 10.0


def test_a_worker_that_ends_at_its_target_unwatched_is_pruned_there_not_a_crash(
    write_task: WriteTask, tmp_path: Path
) -> None:
    spec = _spec(write_task(TINY_TASK), steps=10_000, stop_at=TargetStop(loss=0.4, min_steps=60))
    result = run_trial(spec, workdir=tmp_path)
    assert result.status is TrialStatus.PRUNED and result.exit_code == 0, result.reason
    assert len(result.steps) == 60
    assert result.reason == "ended by the worker at step 60, at its target 0.4"


def test_a_worker_ignoring_sigterm_is_killed_after_the_grace(
    write_task: WriteTask, tmp_path: Path, launcher: Launcher
) -> None:
    ignore = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"  # at import
    spec = _spec(write_task(ignore + _faulty("time.sleep(1000)", at_step=2)))
    stop = lambda r: r.step == 1  # noqa: E731
    result = run_trial(spec, workdir=tmp_path, on_step=stop, grace_s=0.5, launcher=launcher)
    _assert_gone(result)
    assert result.status is TrialStatus.PRUNED and result.signal == "SIGKILL"


def test_interrupting_the_parent_leaves_no_orphan(
    write_task: WriteTask, tmp_path: Path, launcher: Launcher
) -> None:
    pid_file = tmp_path / "worker.pid"
    # written once: rewritten every step, a kill between truncate and write leaves it empty
    write = f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))"
    source = _faulty(f"if _calls[0] == 1: {write}", "time.sleep(0.02)")
    spec = _spec(write_task(source), steps=10_000)

    def interrupt(record: StepRecord) -> bool:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_trial(spec, workdir=tmp_path / "trial", on_step=interrupt, launcher=launcher)
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


PARENT = """
import sys
from pathlib import Path
from autotune.trial import PLAIN, ForkServer, TrialSpec, run_trial
spec = TrialSpec.model_validate_json(Path(sys.argv[1]).read_text())
work = Path(sys.argv[2])
launcher = ForkServer(spec.task_path, work / "server.log") if sys.argv[3] == "forked" else PLAIN
run_trial(spec, workdir=work, launcher=launcher)
"""


def _alive_in_group(pgid: int) -> list[int]:
    """Pids of live (not zombie) processes in group ``pgid``; reaping orphans is init's job."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z" and int(fields[2]) == pgid:
                alive.append(int(stat.parent.name))
    return alive


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.parametrize("how", ["plain", "forked"])
def test_a_supervisor_killed_by_sigkill_takes_its_worker_along(
    write_task: WriteTask, tmp_path: Path, how: str
) -> None:
    pid_file = tmp_path / "worker.pid"
    source = _faulty(f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))", "time.sleep(1000)")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(_spec(write_task(source)).model_dump_json())
    command = [sys.executable, "-c", PARENT, str(spec_file), str(tmp_path / "trial"), how]
    parent = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        assert _alive_in_group(worker) == [worker]
        server = _parent_of(worker) if how == "forked" else None
        assert (server is not None and server != parent.pid) or _parent_of(worker) == parent.pid
    finally:
        parent.kill()
        parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    groups = [worker] if server is None else [worker, server]
    while any(_alive_in_group(g) for g in groups) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [_alive_in_group(g) for g in groups] == [[] for _ in groups]


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


# -- the parts, without a subprocess -----------------------------------------------------


def test_spec_is_closed_and_round_trips(tmp_path: Path) -> None:
    spec = _spec(tmp_path / "model.py", memory_limit_bytes=3 << 30)
    assert TrialSpec.model_validate_json(spec.model_dump_json()) == spec
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        TrialSpec.model_validate({**spec.model_dump(), "timeout": 3})
    with pytest.raises(ValidationError, match="greater than 0"):
        _spec(tmp_path / "model.py", timeout_s=0)


def test_progress_reader_leaves_a_partial_line_for_later(tmp_path: Path) -> None:
    path = tmp_path / "progress.jsonl"
    reader = ProgressReader(path)
    assert reader.read() == []  # not written yet
    record = {"step": 1, "loss": float("nan"), "elapsed_s": 0.1, "samples": 16}
    record |= {"step_time_s": 0.1, "samples_per_s": 160.0, "lr": 0.01}
    line = json.dumps(record) + "\n"
    path.write_text(line + line[:10])
    first = reader.read()
    assert [r.step for r in first] == [1] and first[0].loss != first[0].loss  # NaN kept
    with open(path, "a") as handle:
        handle.write(line[10:])
    assert [r.step for r in reader.read()] == [1]
    assert reader.read() == []


def test_output_tail_keeps_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(100)) + b"\xff bad byte\n")
    tail = output_tail(log).splitlines()
    assert len(tail) == 20 and tail[0] == "line 81" and tail[-1] == "\ufffd bad byte"
    assert output_tail(tmp_path / "missing.log") == ""


def test_classify_finds_the_allocation_failure_behind_a_task_error() -> None:
    try:
        try:
            raise RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: 8 GB")
        except RuntimeError as inner:
            raise TaskError("model.py:3: computing the loss raised RuntimeError") from inner
    except TaskError as exc:
        error = classify(exc)
    assert error.error == "oom" and error.type == "RuntimeError"
    assert classify(MemoryError()).model_dump() == {
        "error": "oom",
        "type": "MemoryError",
        "message": "the allocation failed",
    }
    assert classify(SystemExit()).message == "the task called sys.exit()"
    assert classify(KeyError("k")) == WorkerError(error="exception", type="KeyError", message="'k'")
    died = classify(TrainingError("rank 1 was killed by SIGKILL after step 4."))
    assert died.model_dump() == {
        "error": "exception",
        "type": "TrainingError",
        "message": "rank 1 was killed by SIGKILL after step 4.",
    }


def test_sigkill_without_a_record_is_not_claimed_as_oom(tmp_path: Path) -> None:
    spec = _spec(tmp_path / "model.py", memory_limit_bytes=2 << 30)
    verdict = decide(Ending(-signal.SIGKILL, None, [], None), spec)
    assert verdict.status is TrialStatus.CRASH
    assert verdict.reason.startswith("killed by SIGKILL without writing a result (after step 0")
    assert "OOM killer is the usual cause" in verdict.reason
    assert signal_name(77) == "signal 77"


def test_an_unreadable_result_file_is_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text('{"summary": ')
    outcome = read_outcome(path)
    assert isinstance(outcome, str) and "cannot be read" in outcome
    verdict = decide(Ending(0, None, [], outcome), _spec(tmp_path / "model.py"))
    assert verdict.status is TrialStatus.CRASH and verdict.reason == outcome
    assert read_outcome(tmp_path / "absent.json") is None


def test_files_left_by_an_earlier_trial_are_removed(tmp_path: Path) -> None:
    files = TrialFiles(tmp_path / "trial")
    files.reset()
    for path in (files.spec, files.result, files.progress, files.log):
        path.write_text("stale")
    files.reset()
    assert sorted(p.name for p in files.workdir.iterdir()) == ["tmp"]
    (files.inductor / "cache").mkdir(parents=True)
    files.clear_scratch()
    assert list(files.workdir.iterdir()) == []


def _step(step: int, elapsed_s: float) -> StepRecord:
    return StepRecord(step=step, loss=1.0, elapsed_s=elapsed_s, samples=16 * step,
                      step_time_s=0.01, samples_per_s=1600.0, lr=0.01)  # fmt: skip


def test_a_first_step_is_dated_by_its_write_not_by_the_poll_that_saw_it() -> None:
    records = [_step(1, 0.50), _step(2, 0.52), _step(3, 0.54)]
    # the file was last written 0.60 s after launch, with two steps (0.04 s) after the first
    assert first_written_s(records, written_s=0.60, seen_s=0.80) == pytest.approx(0.56)
    assert first_written_s(records, written_s=0.90, seen_s=0.80) == 0.80  # the poll bounds it
    assert first_written_s(records, written_s=0.01, seen_s=0.80) == 0.0


def test_the_progress_reader_keeps_the_files_last_write(tmp_path: Path) -> None:
    path = tmp_path / "progress.jsonl"
    reader = ProgressReader(path)
    reader.read()
    assert reader.written_at is None  # not written yet
    record = _step(1, 0.1).model_dump()
    path.write_text(json.dumps(record) + "\n")
    os.utime(path, (1_000_000.0, 1_000_000.25))
    assert [r.step for r in reader.read()] == [1]
    assert reader.written_at == 1_000_000.25
