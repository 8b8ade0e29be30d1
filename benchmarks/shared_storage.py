"""Several workers on one Optuna storage: is the trial count exact, is anything lost?

    python benchmarks/shared_storage.py [--workers 4] [--trials 40] [--postgres URL]

Each worker is a process running the convergence phase's bookkeeping without training:
:func:`autotune.search._study.next_trial` until it returns None, each trial tracked and
told after a short sleep. Storages measured: a shared SQLite file through Optuna's plain
URL (SQLite's default 5 s lock wait), the same through autotune's storage (a 60 s wait),
autotune's journal file storage, and PostgreSQL when ``--postgres`` is given. Per storage:
seconds, worker errors (a worker exits 1 and prints the exception, e.g. "database is
locked"), counted trials vs ``--trials``, duplicated trial numbers, trials left RUNNING.
Exits 1 when a storage autotune offers loses or over-counts a trial.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_WORKER_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Outcome:
    """What a group of workers left in the shared study."""

    storage: str
    seconds: float
    errors: list[str]  # the last line of each failed worker's stderr
    counted: int
    numbers_duplicated: int
    left_running: int


def worker(url: str, study_name: str, trials: int, plain: bool) -> int:
    """One worker: take trials until ``trials`` are counted; exit status 0 or 1."""
    import optuna

    from autotune.search._study import next_trial, open_storage, tracked

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = url if plain else open_storage(url)
    study = optuna.create_study(storage=storage, study_name=study_name, load_if_exists=True)
    while (trial := next_trial(study, trials)) is not None:
        with tracked(study, trial):
            value = trial.suggest_float("x", 0.0, 1.0)
            time.sleep(0.02)  # a trial's own work; the storage traffic is what is measured
            study.tell(trial, value)
    return 0


def run_workers(url: str, workers: int, trials: int, plain: bool = False) -> Outcome:
    """Start ``workers`` processes on ``url`` at once, wait for them, inspect the study."""
    study_name = f"shared-{time.time_ns()}"
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", url, study_name]
    command += [str(trials)] + (["--plain"] if plain else [])
    started = time.monotonic()
    procs = [
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(workers)
    ]
    errors = []
    for proc in procs:
        try:
            _, stderr = proc.communicate(timeout=_WORKER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate(timeout=30)
        if proc.returncode != 0:
            lines = stderr.decode(errors="replace").strip().splitlines() or ["(no output)"]
            errors.append(lines[-1])
    return _inspect(url, study_name, time.monotonic() - started, errors)


def _inspect(url: str, study_name: str, seconds: float, errors: list[str]) -> Outcome:
    import optuna

    from autotune.search._study import counted, open_storage

    study = optuna.load_study(study_name=study_name, storage=open_storage(url))
    every = study.get_trials(deepcopy=False)
    numbers = [t.number for t in every]
    running = [t for t in every if t.state == optuna.trial.TrialState.RUNNING]
    return Outcome(
        storage=url.split("://")[0],
        seconds=seconds,
        errors=errors,
        counted=len(counted(study)),
        numbers_duplicated=len(numbers) - len(set(numbers)),
        left_running=len(running),
    )


def main() -> int:
    if len(sys.argv) >= 2 and sys.argv[1] == "--worker":
        url, name, trials = sys.argv[2], sys.argv[3], int(sys.argv[4])
        return worker(url, name, trials, plain="--plain" in sys.argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--postgres", help="postgresql://user:password@host:port/db")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.workers} workers, --trials {args.trials}")
    for column in ("storage", "s", "worker errors", "counted", "dup. numbers", "left RUNNING"):
        table.add_column(column)
    bad = False
    with tempfile.TemporaryDirectory() as tmp:
        cases = [
            ("sqlite (optuna's URL, 5 s lock wait)", f"sqlite:///{tmp}/plain.db", True),
            ("sqlite (autotune, 60 s lock wait)", f"sqlite:///{tmp}/autotune.db", False),
            ("journal file", f"journal:///{tmp}/autotune.log", False),
        ]
        if args.postgres:
            cases.append(("postgresql", args.postgres, False))
        for label, url, plain in cases:
            got = run_workers(url, args.workers, args.trials, plain)
            errors = "; ".join(sorted(set(got.errors)))[:80] or "none"
            table.add_row(
                label, f"{got.seconds:.1f}", f"{len(got.errors)}: {errors}", str(got.counted),
                str(got.numbers_duplicated), str(got.left_running),
            )  # fmt: skip
            exact = got.counted == args.trials and not got.numbers_duplicated
            bad |= not plain and not (exact and not got.errors and not got.left_running)
    Console().print(table)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
