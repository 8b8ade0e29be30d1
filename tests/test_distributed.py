"""Several `autotune search` workers on one storage (SQLite file, journal file, PostgreSQL):
exact trial counts, unique trial numbers, one confirmed result, stale trials of dead
workers recorded and replaced, locks that pass on when their holder dies, and a storage
password that is never printed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest

from autotune.config import load_tuned_config
from autotune.errors import ConfigError
from autotune.search import _study
from autotune.search._study import (
    INTERRUPTED,
    SURPLUS,
    Studies,
    Worker,
    counted,
    fail_stale,
    next_trial,
    open_storage,
)
from benchmarks.chaos import SMALL_SPACE
from benchmarks.shared_storage import run_workers
from tests._postgres import postgres_server
from tests.conftest import TINY_TASK


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


def _storage(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return {"sqlite": f"sqlite:///{tmp_path}/shared.db", "journal": f"journal:///{tmp_path}/j.log"}[
        kind
    ]


# -- many workers, one study ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgres"])
def test_workers_sharing_a_storage_count_trials_exactly(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    got = run_workers(_storage(kind, tmp_path, request), workers=3, trials=12)
    assert got.errors == []  # e.g. no "database is locked"
    assert got.counted == 12 and got.numbers_duplicated == 0 and got.left_running == 0


@pytest.mark.slow
def test_search_workers_share_a_postgres_study(
    postgres_url: str, write_task: Callable[[str], Path], tmp_path: Path
) -> None:
    task = write_task(TINY_TASK)
    space = tmp_path / "space.yaml"
    space.write_text(SMALL_SPACE)

    def worker(i: int) -> subprocess.Popen[str]:
        command = [
            sys.executable, "-m", "autotune", "search", str(task), "--space", str(space),
            "--budget", "1h", "--trials", "4", "--storage", postgres_url,
            "--study-name", "shared", "--target-loss", "0.5", "--confirm-pairs", "3",
            "-o", str(tmp_path / f"tuned{i}.yaml"),
        ]  # fmt: skip
        env = {**os.environ, "COLUMNS": "300"}
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)  # fmt: skip

    procs = [worker(i) for i in range(2)]
    outputs = [proc.communicate(timeout=540) for proc in procs]
    for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr[-3000:]
        assert "secret" not in stdout + stderr  # the password in the URL
    first, second = (load_tuned_config(tmp_path / f"tuned{i}.yaml") for i in range(2))
    assert first == second  # one result, confirmed once, written by both
    assert sum("confirming:" in stderr for _, stderr in outputs) == 1
    assert first.provenance is not None and "secret" not in str(first.provenance.study)
    study = optuna.load_study(study_name="shared", storage=open_storage(postgres_url))
    assert len(counted(study)) == 4
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    workers = {t.user_attrs.get("worker") for t in counted(study)}
    assert len(workers) >= 1


_SEED = {"x": 0.5}
_SEEDING_WORKER = """
import pathlib, sys, time
import optuna
from autotune.search._study import Studies, tracked
url, ready, workers = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3])
optuna.logging.set_verbosity(optuna.logging.WARNING)
studies = Studies(url, "seeded", optuna.samplers.RandomSampler(), optuna.pruners.NopPruner())
(ready / sys.argv[4]).touch()
while len(list(ready.iterdir())) < workers:  # every worker asks at the same moment
    time.sleep(0.001)
seeds = [{"x": 0.5}, {"x": 0.25}]
seed_at = lambda k: seeds[k] if k < len(seeds) else None
while (trial := studies.next_convergence_trial(6, seed_at)) is not None:
    with tracked(studies.convergence, trial):
        value = trial.suggest_float("x", 0.0, 1.0)
        time.sleep(0.05)
        studies.convergence.tell(trial, value)
"""


def test_workers_starting_together_run_each_seed_trial_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/seed.db"
    ready = tmp_path / "ready"
    ready.mkdir()
    command = [sys.executable, "-c", _SEEDING_WORKER, url, str(ready), "2"]
    procs = [
        subprocess.Popen([*command, str(i)], stderr=subprocess.PIPE, text=True) for i in range(2)
    ]
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-2000:]
    study = optuna.load_study(study_name="seeded", storage=open_storage(url))
    assert [t.number for t in study.trials if t.params == _SEED] == [0]  # taken once, first
    assert [t.number for t in study.trials if t.params == {"x": 0.25}] == [1]  # then the 2nd
    assert len(counted(study)) == 6
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))


# -- the bookkeeping, in one process -------------------------------------------------------


def _first_is_seed(number: int) -> dict[str, float] | None:
    return _SEED if number == 0 else None


def test_the_seed_trial_is_created_running_and_owned(tmp_path: Path) -> None:
    studies = _studies(tmp_path)
    trial = studies.next_convergence_trial(None, _first_is_seed)  # never WAITING: no one pops it
    assert trial is not None and trial.number == 0
    frozen = studies.convergence.trials[0]
    assert frozen.state == optuna.trial.TrialState.RUNNING
    assert frozen.user_attrs["worker"] == str(_study.this_worker())
    assert trial.suggest_float("x", 0.0, 1.0) == 0.5
    studies.convergence.tell(trial, 0.5)
    again = studies.next_convergence_trial(None, _first_is_seed)  # trial 1: TPE's
    assert again is not None and again.number == 1
    assert "fixed_params" not in studies.convergence.trials[1].system_attrs


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait(timeout=30)
    return child.pid


def _sqlite_study(tmp_path: Path) -> optuna.Study:
    return optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path}/s.db"), study_name="s")


def test_a_dead_workers_trial_is_interrupted_and_not_counted(tmp_path: Path) -> None:
    study = _sqlite_study(tmp_path)
    me = _study.this_worker()
    dead_here = Worker(me.host, _dead_pid(), "1")
    elsewhere = Worker("other-host:0", 1, "1")
    trials = [study.ask() for _ in range(4)]
    trials[0].set_user_attr("worker", str(dead_here))
    trials[1].set_user_attr("worker", str(elsewhere))
    trials[1].set_user_attr("heartbeat", time.time() - 2 * _study.GRACE_S)  # silent too long
    trials[2].set_user_attr("worker", str(elsewhere))
    trials[2].set_user_attr("heartbeat", time.time())  # beating: alive
    trials[3].set_user_attr("worker", str(me))
    assert fail_stale(study) == 2
    stale = study.trials[:2]
    assert [t.state for t in stale] == [optuna.trial.TrialState.FAIL] * 2
    assert all(t.user_attrs["status"] == INTERRUPTED for t in stale)
    assert stale[0].user_attrs["reason"] == (f"interrupted: its search process ({dead_here}) died")
    assert [t.number for t in counted(study)] == [2, 3]


def test_a_sampled_trial_is_owned_by_the_write_that_creates_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A search killed between creating a trial and recording its worker left it RUNNING and
    # unowned, alive to the resumed search for seconds (CI's chaos test caught it).
    study = _sqlite_study(tmp_path)
    storage = study._storage
    real = storage.create_new_trial
    owners: list[object] = []

    def create(study_id: int, template_trial: optuna.trial.FrozenTrial | None = None) -> int:
        trial_id = real(study_id, template_trial)
        owners.append(storage.get_trial(trial_id).user_attrs.get("worker"))
        return trial_id

    monkeypatch.setattr(storage, "create_new_trial", create)
    assert next_trial(study, None) is not None
    assert owners == [str(_study.this_worker())]


def test_next_trial_stops_at_the_count_and_a_racing_one_is_surplus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = _sqlite_study(tmp_path)
    for _ in range(2):
        trial = next_trial(study, 3)
        assert trial is not None and trial.user_attrs["worker"] == str(_study.this_worker())
        study.tell(trial, 1.0)
    assert next_trial(study, 2) is None  # counted before asking
    # Another worker's trial appears between our count and our ask: ours is surplus.
    real = _study.counted
    answers: list[list[optuna.trial.FrozenTrial]] = [[]]  # the first count sees nothing yet
    monkeypatch.setattr(_study, "counted", lambda s: answers.pop() if answers else real(s))
    assert next_trial(study, 2) is None
    surplus = study.trials[-1]
    assert surplus.state == optuna.trial.TrialState.FAIL
    assert surplus.user_attrs["status"] == SURPLUS
    assert len(real(study)) == 2


def _studies(tmp_path: Path) -> Studies:
    url = f"sqlite:///{tmp_path}/locks.db"
    return Studies(url, "locks", optuna.samplers.RandomSampler(), optuna.pruners.NopPruner())


def test_a_lock_waits_for_a_live_holder_and_skips_a_dead_one(tmp_path: Path) -> None:
    studies = _studies(tmp_path)
    holder = subprocess.Popen(["sleep", "1.5"])
    try:
        started = _study._process_started(holder.pid)
        alive = Worker(_study.this_worker().host, holder.pid, started or "0")
        dead = Worker(alive.host, _dead_pid(), "1")
        for worker in (dead, alive):  # claimed before us, in this order
            studies.claims.enqueue_trial({}, user_attrs={"key": "k", "worker": str(worker)})
        waits: list[str] = []
        begun = time.monotonic()
        studies.hold("k", waits.append)  # the dead claim is skipped; the live one waited for
        assert time.monotonic() - begun >= 0.5
        assert waits == [f"waiting for worker {alive} (k)"]
        assert holder.poll() is not None  # it held the lock until it was gone
    finally:
        holder.kill()
        holder.wait(timeout=30)
    studies.hold("k")  # re-entrant
    studies.release("k")
    studies.hold("k")  # taken again at once: nobody else wants it
    studies.release("k")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("autotune.db", "is not a storage URL; use sqlite:///autotune.db"),
        ("redis://localhost/0", "is not a storage URL"),
        ("journal:///", "needs a file path after journal:///"),
        ("postgresql://u:secret@127.0.0.1:{port}/db", "cannot be opened .*check the URL"),
    ],
)
def test_a_bad_storage_is_one_config_error_without_the_password(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as raised:
        open_storage(url.format(port=_free_port()))
    assert "secret" not in str(raised.value)
    assert "\n" not in str(raised.value)


def test_journal_and_sqlite_urls_open(tmp_path: Path) -> None:
    journal = open_storage(f"journal:///{tmp_path}/sub/j.log")
    assert isinstance(journal, optuna.storages.JournalStorage)
    assert (tmp_path / "sub").is_dir()
    assert isinstance(open_storage(f"sqlite:///{tmp_path}/x.db"), optuna.storages.RDBStorage)
