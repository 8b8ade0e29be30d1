"""Chaos: ``autotune search`` killed with SIGKILL at random moments, restarted each time.

    python benchmarks/chaos.py [--kills 20] [--trials 30] [--seed 0] [--task model.py]

Each cycle starts the search (same SQLite storage, same command) and kills it - half the
time a random 1-8 s after it started, half the time a random 0-3 s after it printed a
progress line it had never printed before (a new phase, a new trial; so every other kill
lands after real progress and the search cannot be kept from finishing). No cycle runs
past its second new progress line, so the search cannot finish before the last kill
while it has more than ``2 * kills`` milestones: about ``--trials`` plus 12. After each kill:

- every trial that had finished (both phases) is still there, unchanged: state, params,
  value, status - else it counts as *lost*;
- a trial the kill left RUNNING is FAIL with status INTERRUPTED once the search runs
  again - else it counts as *lost*;
- no trial parameters appear twice among finished trials (nothing finished is re-run);
- tuned.yaml is absent or a complete, valid TunedConfig;
- no trial worker of the killed search is still alive (they die with their search).

After the last kill the search runs to its end: exit 0, exactly ``--trials`` counted
convergence trials, none left RUNNING, a valid tuned.yaml. Prints ``injected``,
``recorded`` (kills after which every check passed) and ``lost`` (must be 0), and exits
1 if any check failed. Without ``--task`` it tunes a tiny MLP that trains in milliseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import random
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

TINY_TASK = textwrap.dedent(
    """
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset
    from autotune import Task

    def build_model():
        return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))

    def build_dataset():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(256, 8, generator=g)
        y = (x[:, 0] + x[:, 1] > 0).long()
        return TensorDataset(x, y)

    def loss_fn(model, batch):
        x, y = batch
        return nn.functional.cross_entropy(model(x).float(), y)

    task = Task(model=build_model, dataset=build_dataset, loss=loss_fn,
                baseline=dict(batch_size=16, lr=1e-2))
    """
)
SMALL_SPACE = textwrap.dedent(
    """
    systems:
      micro_batch_size: [16, 32]
      precision: [32-true]
    convergence:
      lr: {low: 0.5, high: 2, log: true, relative: true, scaling: none}
    """
)
_STARTUP_TIMEOUT_S = 120.0  # a cycle with no new progress line for this long is a hang
_FINAL_TIMEOUT_S = 600.0
_ORPHAN_WAIT_S = 5.0  # a worker notices its search died within a second (its poll)


@dataclass
class ChaosReport:
    """What the chaos run injected and found."""

    injected: int = 0
    recorded: int = 0
    lost: int = 0
    problems: list[str] = field(default_factory=list)
    final_exit: int | None = None
    counted: int = 0
    interrupted: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems and self.lost == 0 and self.final_exit == 0


@dataclass(frozen=True)
class Setup:
    """One chaos run's files and command."""

    workdir: Path
    task: Path
    space: Path
    trials: int

    @property
    def storage(self) -> str:
        return f"sqlite:///{self.workdir / 'chaos.db'}"

    @property
    def output(self) -> Path:
        return self.workdir / "tuned.yaml"

    @property
    def marker(self) -> str:
        """A path in every command line the search and its trial workers run."""
        return str(self.workdir / "tmp")

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "autotune", "search", str(self.task),
            "--space", str(self.space), "--budget", "1h", "--trials", str(self.trials),
            "--storage", self.storage, "--study-name", "chaos", "--target-loss", "0.5",
            "--confirm-pairs", "3",
            "-o", str(self.output),
        ]  # fmt: skip


class Search:
    """One ``autotune search`` process whose progress lines are read as they come."""

    def __init__(self, setup: Setup) -> None:
        Path(setup.marker).mkdir(parents=True, exist_ok=True)
        env = {**_environ(), "TMPDIR": setup.marker, "COLUMNS": "400"}
        self.proc = subprocess.Popen(
            setup.command(), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.tail: list[str] = []
        self.ended = False  # its output reached the end: the process exited or is exiting
        self.started = time.monotonic()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        if self.proc.stderr is None:  # Popen(stderr=PIPE) always sets it
            return
        for line in self.proc.stderr:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, timeout_s: float) -> str | None:
        """The next line, or None at the end of the output (or after ``timeout_s``)."""
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if line is None:
            self.ended = True
        else:
            self.tail = [*self.tail[-30:], line]
        return line

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return -signal.SIGKILL


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


def _milestone(line: str) -> str:
    """A progress line without its timestamp and measured numbers: what phase or trial."""
    text = re.sub(r"^\s*[\d.]+s\s+", "", line)
    if match := re.match(r"trial \d+", text):
        return match.group(0)
    return re.sub(r"[\d,.]+", "#", text)[:60]


# -- the study as seen from outside --------------------------------------------------------


def _study(setup: Setup, name: str) -> Any:
    """The study ``name`` as stored now, or None before the search created it."""
    import optuna

    from autotune.search._study import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        return optuna.load_study(study_name=name, storage=open_storage(setup.storage))
    except KeyError:
        return None


def _trials(setup: Setup, name: str) -> list[Any]:
    study = _study(setup, name)
    return [] if study is None else list(study.trials)


def _snapshot(setup: Setup) -> dict[tuple[str, int], Any]:
    """Every trial of both phases, by (study, number): state, params, value, status."""
    found = {}
    for name in ("chaos", "chaos/systems"):
        for t in _trials(setup, name):
            found[(name, t.number)] = (t.state.name, t.params, t.value, t.user_attrs.get("status"))
    return found


def _check_tuned(setup: Setup) -> str | None:
    from autotune.config import load_tuned_config
    from autotune.errors import AutotuneError

    if not setup.output.exists():
        return None
    try:
        load_tuned_config(setup.output)
    except AutotuneError as exc:
        return f"tuned.yaml is not a complete config: {exc}"
    return None


def _orphans(setup: Setup) -> list[int]:
    """Live processes (not zombies) whose command line names this run's temp dir."""
    alive = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if setup.marker.encode() not in cmdline.read_bytes():
                continue
            state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z":
                alive.append(int(cmdline.parent.name))
    return alive


class Checker:
    """Compares the study after each kill with what it held before."""

    def __init__(self, setup: Setup, report: ChaosReport) -> None:
        self.setup, self.report = setup, report
        self.finished: dict[tuple[str, int], Any] = {}
        self.was_running: set[tuple[str, int]] = set()

    def after_kill(self, count: bool = True) -> None:
        """Check the study and the files right after a kill, before the restart; ``count``
        the kill as recorded if every check passes."""
        now = _snapshot(self.setup)
        problems = self._compare(now)
        deadline = time.monotonic() + _ORPHAN_WAIT_S
        while (orphans := _orphans(self.setup)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if orphans:
            problems.append(f"trial processes outlived their search: {orphans}")
        if (bad := _check_tuned(self.setup)) is not None:
            problems.append(bad)
        self.report.recorded += count and not problems
        self.report.problems += problems
        self.finished = {k: v for k, v in now.items() if v[0] != "RUNNING"}
        self.was_running |= {k for k, v in now.items() if v[0] == "RUNNING"}

    def _compare(self, now: dict[tuple[str, int], Any]) -> list[str]:
        problems = []
        for key, before in self.finished.items():
            if now.get(key) != before:
                self.report.lost += 1
                problems.append(f"finished trial {key} changed: {before} -> {now.get(key)}")
        for key in list(self.was_running):
            state = now.get(key)
            if state is not None and state[0] != "RUNNING":
                if state[0] != "FAIL" or state[3] != "INTERRUPTED":
                    problems.append(f"killed trial {key} recorded as {state}")
                self.was_running.discard(key)
        done = [(k[0], repr(v[1])) for k, v in now.items() if v[0] in ("COMPLETE", "PRUNED")]
        again = sorted({d for d in done if done.count(d) > 1})
        if again:
            problems.append(f"finished trials' parameters were run again: {again}")
        return problems

    def at_end(self, exit_code: int) -> None:
        """The final, uninterrupted search's checks."""
        from autotune.search._study import counted

        self.after_kill(count=False)  # the same invariants once more
        self.report.final_exit = exit_code
        study = _study(self.setup, "chaos")
        trials = [] if study is None else study.trials
        self.report.interrupted = sum(t.user_attrs.get("status") == "INTERRUPTED" for t in trials)
        self.report.counted = 0 if study is None else len(counted(study))
        if self.was_running:
            self.report.lost += len(self.was_running)
            self.report.problems.append(f"killed trials never recorded: {self.was_running}")
        if any(t.state.name == "RUNNING" for t in trials):
            self.report.problems.append("trials left RUNNING after the final search")
        if self.report.counted != self.setup.trials:
            self.report.problems.append(
                f"the study has {self.report.counted} counted trials, --trials {self.setup.trials}"
            )
        if not self.setup.output.exists():
            self.report.problems.append("the final search wrote no tuned.yaml")


# -- the run -------------------------------------------------------------------------------


def _one_cycle(setup: Setup, rng: random.Random, seen: set[str]) -> Search | None:
    """Start the search and kill it at a random moment; None if it finished first.

    Whatever the moment drawn, the kill comes no later than the second progress line never
    printed before: one cycle advances the search by at most two milestones, so ``kills``
    cycles cannot run a search of more than twice as many milestones to its end (trials
    that take a third of a second once finished six of them, and the search, inside one
    0-3 s window)."""
    search = Search(setup)
    by_time = rng.random() < 0.5
    deadline = search.started + rng.uniform(1.0, 8.0) if by_time else None
    new = 0
    while deadline is None or time.monotonic() < deadline:
        left = _STARTUP_TIMEOUT_S if deadline is None else deadline - time.monotonic()
        line = search.next_line(timeout_s=max(0.01, left))
        if search.ended or (line is None and deadline is None):  # exited, or silent too long
            return None if search.wait(30) == 0 else search
        if line is None or _milestone(line) in seen:
            continue
        seen.add(_milestone(line))
        new += 1
        if new == 2:
            break
        if deadline is None:
            deadline = time.monotonic() + rng.uniform(0.0, 3.0)
    search.kill()
    return search


def run_chaos(setup: Setup, kills: int, seed: int = 0) -> ChaosReport:
    """Kill the search ``kills`` times, then let it finish; see the module docstring."""
    setup.workdir.mkdir(parents=True, exist_ok=True)
    if not setup.task.exists():
        setup.task.write_text(TINY_TASK)
    if not setup.space.exists():
        setup.space.write_text(SMALL_SPACE)
    report, rng, seen = ChaosReport(), random.Random(seed), set[str]()
    checker = Checker(setup, report)
    started = time.monotonic()
    while report.injected < kills:
        search = _one_cycle(setup, rng, seen)
        if search is None:  # it finished between kills: more kills need more trials
            report.problems.append(f"the search finished after only {report.injected} kills")
            break
        if search.proc.returncode != -signal.SIGKILL:
            report.problems.append(f"search exited {search.proc.returncode}: {search.tail[-3:]}")
            break
        report.injected += 1
        checker.after_kill()
    final = Search(setup)
    while final.next_line(timeout_s=_FINAL_TIMEOUT_S) is not None:
        pass
    code = final.wait(60)
    if code != 0:
        report.problems.append(f"the final search exited {code}: {final.tail[-5:]}")
    checker.at_end(code)
    report.seconds = time.monotonic() - started
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--trials", type=int, default=30)  # > 2 * kills - 12
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", type=Path, help="task file (default: a tiny MLP)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="autotune-chaos-") as tmp:
        workdir = Path(tmp)
        task = args.task or workdir / "model.py"
        setup = Setup(workdir, task, workdir / "space.yaml", args.trials)
        report = run_chaos(setup, args.kills, args.seed)
    print(f"injected {report.injected}")
    print(f"recorded {report.recorded}")
    print(f"lost {report.lost}")
    print(
        f"final search: exit {report.final_exit}, {report.counted} counted trials "
        f"(--trials {args.trials}), {report.interrupted} interrupted trials re-run, "
        f"{report.seconds:.0f} s"
    )
    for problem in report.problems:
        print(f"problem: {problem}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
