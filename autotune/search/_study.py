"""The Optuna side of a search: storage, the phase studies, resume, cached facts, and the
bookkeeping that lets killed-and-restarted searches and several workers share one study.

Workers. Every process running ``autotune search`` is a *worker*, named by its host, pid
and process start time (:class:`Worker`). Each convergence trial records its worker and a
heartbeat (refreshed every ``BEAT_S`` seconds while it runs). A RUNNING trial whose worker
is gone - on this host: its process no longer exists; elsewhere: no heartbeat for
``GRACE_S`` seconds - is *stale*: it is marked FAIL with status ``INTERRUPTED`` and does
not count toward ``--trials``, so a restarted or surviving worker runs another in its place.
A finished trial is never touched again, so nothing finished is lost or re-run.

Exact trial counts. :func:`next_trial` checks the count before ``ask`` and again after
it, against the trials numbered below the new one (the storage numbers trials atomically,
so every worker sees the same order): a trial that finds ``--trials`` counted trials
below it is told FAIL with status ``SURPLUS`` at once and the worker stops. INTERRUPTED
and SURPLUS trials are not counted; every other finished or live running one is.

Locks. Work that one worker must do for all (the probe, baseline and systems phase; the
confirmation) is guarded by :meth:`Studies.hold`: a claim is queued atomically as a
WAITING trial of the ``<name>/claims`` study, and the lowest-numbered live claim that is
not released holds the lock. A dead holder's claim is skipped, so a restart takes over.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy.exc
from optuna.storages.journal import JournalFileBackend
from pydantic import BaseModel

from autotune.errors import ConfigError
from autotune.search._shield import SearchInterrupted, shield_storage, shielded

__all__ = [
    "GRACE_S",
    "IDENTITY_KEY",
    "INTERRUPTED",
    "NOT_RUN",
    "SURPLUS",
    "SearchInterrupted",
    "Studies",
    "Worker",
    "counted",
    "fail_stale",
    "next_trial",
    "open_storage",
    "redact",
    "study_summary",
    "tracked",
]

_M = TypeVar("_M", bound=BaseModel)
log = logging.getLogger("autotune.search")

BEAT_S = 10.0  # heartbeat period of a running trial or a held claim
GRACE_S = 60.0  # a worker on another host is dead after this long without a heartbeat
_UNCLAIMED_S = 10.0  # a RUNNING trial whose worker is still unrecorded after this is stale
_POLL_S = 0.5  # how often a waiting worker looks again (locks, other workers' trials)
INTERRUPTED = "INTERRUPTED"  # status of a trial whose search stopped (signal, kill, error)
SURPLUS = "SURPLUS"  # status of a trial asked for by a worker racing past --trials
_UNCOUNTED = (INTERRUPTED, SURPLUS)
# User attr of a trial pruned before any process started (it would repeat samples within a
# step): it cost nothing, so it does not count toward --trials or the patience.
NOT_RUN = "not_run"
_JOURNAL = "journal:///"
_RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")
_SQLITE_TIMEOUT_S = 60  # wait this long for another worker's write lock, not sqlite's 5 s
_FINISHED = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)
_RUNNING = optuna.trial.TrialState.RUNNING


def redact(url: str) -> str:
    """A storage URL safe to print: the password replaced by ``***``."""
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", url)


def _scrub(text: str, url: str) -> str:
    """``text`` with the URL's password replaced, wherever a driver quoted it."""
    found = re.search(r"://[^:/@]+:([^@]+)@", url)
    return text.replace(found.group(1), "***") if found else text


# -- storage ------------------------------------------------------------------------------


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The Optuna storage for ``--storage``.

    ``journal:///PATH`` (PATH relative, or absolute with a fourth slash, as for SQLite) is
    an append-only journal file (:class:`optuna.storages.JournalStorage`) that several
    workers on one machine or a shared file system may write at once. ``sqlite:///``,
    ``postgresql://``, ``mysql://``... are SQLAlchemy URLs for :class:`RDBStorage`; SQLite
    waits up to a minute for another writer's lock.

    Raises:
        ConfigError: the URL is not one of those, or the storage cannot be opened; the
            message never contains the URL's password.
    """
    try:
        return _retrying(lambda: _open(url))
    except ConfigError:
        raise
    except (
        ValueError,
        ImportError,
        RuntimeError,
        OSError,
        sqlalchemy.exc.SQLAlchemyError,
    ) as exc:
        first = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "", url)
        raise ConfigError(
            f"--storage {redact(url)} cannot be opened ({type(exc).__name__}: {first}); check "
            f"the URL and that the database is reachable, e.g. sqlite:///autotune.db."
        ) from None


_T = TypeVar("_T")
IDENTITY_KEY = "identity"  # the convergence study's user attribute :mod:`._identity` reads
_ATTEMPTS = 3  # workers starting together race to create the tables; the loser retries


def _retrying(make: Callable[[], _T]) -> _T:
    """``make()``, again after a short pause if the database errs: a concurrent worker's
    schema creation ("table ... already exists") or lock is over by then."""
    for attempt in range(_ATTEMPTS - 1):
        try:
            return make()
        except sqlalchemy.exc.DBAPIError:  # OperationalError, IntegrityError (tables)
            time.sleep(0.5 * (attempt + 1))
    return make()


def _open(url: str) -> optuna.storages.BaseStorage:
    if url.startswith(_JOURNAL):
        return _journal(url[len(_JOURNAL) :], url)
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    if scheme not in _RDB_SCHEMES:
        raise ConfigError(
            f"--storage {redact(url)} is not a storage URL; use sqlite:///autotune.db, "
            f"journal:///autotune.log or postgresql://user:password@host/db."
        )
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if scheme == "sqlite":
        kwargs = {"connect_args": {"timeout": _SQLITE_TIMEOUT_S}}
    return optuna.storages.RDBStorage(_with_driver(url), engine_kwargs=kwargs)


def _with_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed: SQLAlchemy 2.1 defaults to
    psycopg 3, while ``autotune[postgres]`` installs psycopg2; ``postgres://`` too."""
    scheme, rest = url.split("://", 1)
    if scheme not in ("postgresql", "postgres"):
        return url
    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://{rest}"
    raise ConfigError(
        f"--storage {redact(url)} needs a PostgreSQL driver; pip install 'autotune[postgres]' "
        f"(psycopg2-binary)."
    )


def _journal(path: str, url: str) -> optuna.storages.BaseStorage:
    if not path or Path(path).is_dir():
        raise ConfigError(
            f"--storage {url} needs a file path after journal:///, e.g. journal:///autotune.log "
            f"(relative) or journal:////shared/autotune.log (absolute)."
        )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    backend = JournalFileBackend(path)
    return optuna.storages.JournalStorage(backend)


# -- workers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Worker:
    """One ``autotune search`` process: host (name and boot id), pid, process start time."""

    host: str
    pid: int
    started: str

    def __str__(self) -> str:
        return f"{self.host}/{self.pid}/{self.started}"

    @classmethod
    def parse(cls, text: object) -> Worker | None:
        """The worker a trial recorded, or None for anything else."""
        if not isinstance(text, str) or text.count("/") != 2:
            return None
        host, pid, started = text.split("/")
        return cls(host, int(pid), started) if pid.isdigit() else None

    def alive(self, heartbeat: float | None, now: float) -> bool:
        """On this host: its process still exists (not a new one with its pid). Elsewhere:
        its last heartbeat is less than ``GRACE_S`` old."""
        if self.host == _HOST:
            return _process_started(self.pid) == self.started
        return heartbeat is not None and now - heartbeat < GRACE_S


def _host_id() -> str:
    boot = ""
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    return f"{socket.gethostname().replace('/', '_')}:{boot}"


def _process_started(pid: int) -> str | None:
    """The process's start time (clock ticks after boot), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: existence only
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "0"
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


_HOST = _host_id()


def this_worker() -> Worker:
    """This process, as trials and claims record it."""
    return Worker(_HOST, os.getpid(), _process_started(os.getpid()) or "0")


def _alive(trial: optuna.trial.FrozenTrial, now: float) -> bool:
    worker = Worker.parse(trial.user_attrs.get("worker"))
    beat = trial.user_attrs.get("heartbeat")
    if worker is not None:
        return worker.alive(beat if isinstance(beat, (int, float)) else None, now)
    # No worker recorded: made by something else than a search's next_trial (which records
    # it in the write that creates the trial), so judged by its age.
    start = trial.datetime_start
    return start is None or (datetime.now() - start).total_seconds() < _UNCLAIMED_S


class _Heartbeat:
    """One daemon thread per process refreshing the ``heartbeat`` attribute of the trials
    (and claims) this worker is running, so workers on other hosts see it is alive."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._beating: dict[tuple[int, int], optuna.Study] = {}
        self._thread: threading.Thread | None = None

    def add(self, study: optuna.Study, trial_id: int) -> None:
        with self._lock:
            self._beating[(id(study), trial_id)] = study
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="autotune-heartbeat", daemon=True
                )
                self._thread.start()

    def remove(self, study: optuna.Study, trial_id: int) -> None:
        with self._lock:
            self._beating.pop((id(study), trial_id), None)

    def _run(self) -> None:
        while True:
            time.sleep(BEAT_S)
            with self._lock:
                beating = list(self._beating.items())
            for (_, trial_id), study in beating:
                try:
                    study._storage.set_trial_user_attr(trial_id, "heartbeat", time.time())
                except Exception:  # finished meanwhile, or the database blinked: next time
                    log.debug("heartbeat of trial %d skipped", trial_id, exc_info=True)


_HEART = _Heartbeat()


# -- trials: stale ones, counting, asking, tracking ----------------------------------------


def _mark(study: optuna.Study, trial: optuna.trial.FrozenTrial, status: str, reason: str) -> None:
    """Record a RUNNING trial as FAIL with ``status``; another worker may have beaten us."""
    handle = optuna.trial.Trial(study, trial._trial_id)
    with contextlib.suppress(ValueError, RuntimeError):
        handle.set_user_attr("status", status)
        handle.set_user_attr("reason", reason)
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def fail_stale(study: optuna.Study) -> int:
    """Mark RUNNING trials whose worker is gone FAIL/INTERRUPTED; returns how many."""
    now = time.time()
    stale = [t for t in study.get_trials(deepcopy=False, states=(_RUNNING,)) if not _alive(t, now)]
    for trial in stale:
        owner = trial.user_attrs.get("worker", "an unknown worker")
        _mark(study, trial, INTERRUPTED, f"interrupted: its search process ({owner}) died")
    if stale:
        log.warning("marked %d trial(s) left RUNNING by a dead search as FAIL", len(stale))
    return len(stale)


def counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count toward ``--trials``: finished ones that were not INTERRUPTED or
    SURPLUS or pruned unrun (:data:`NOT_RUN`), and RUNNING ones whose worker is alive; in
    number order."""
    now = time.time()
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if (
            t.state in _FINISHED
            and t.user_attrs.get("status") not in _UNCOUNTED
            and not t.user_attrs.get(NOT_RUN)
        )
        or (t.state == _RUNNING and _alive(t, now))
    ]


def next_trial(
    study: optuna.Study, max_trials: int | None, fixed: dict[str, Any] | None = None
) -> optuna.Trial | None:
    """A new trial of ``study`` for this worker, or None when ``max_trials`` trials are
    counted (see the module docstring for why the count is exact with several workers).
    With ``fixed``, the trial's ``suggest_*`` calls return those params (see :func:`_ask`)."""
    fail_stale(study)
    if max_trials is not None and len(counted(study)) >= max_trials:
        return None
    _reseed_if_shared(study)
    made: list[optuna.Trial] = []
    with _interrupted_if_raised(study, made):  # a signal before the caller tracks it ...
        # ... held while the trial is made, or the storage call that created it RUNNING
        # would raise on its return, before ``made`` holds it: left RUNNING to the next run
        with shielded():
            made.append(_ask(study, fixed))
        return _within_limit(study, made[0], max_trials)


def _within_limit(
    study: optuna.Study, trial: optuna.Trial, max_trials: int | None
) -> optuna.Trial | None:
    """``trial``, or None (marked SURPLUS) when ``max_trials`` trials numbered below it
    count: workers that asked at once all made one, and the lowest numbers run."""
    if max_trials is None:
        return trial
    below = [t for t in counted(study) if t.number < trial.number]
    if len(below) < max_trials:
        return trial
    handle = study._storage.get_trial(trial._trial_id)
    _mark(study, handle, SURPLUS, f"another worker reached --trials {max_trials} first")
    return None


def _ask(study: optuna.Study, fixed: dict[str, Any] | None) -> optuna.Trial:
    """``study.ask()``, but the trial is created RUNNING and owned by this worker in one
    write. Asked first and claimed after, a search killed between the two writes left a
    RUNNING trial no one owned, alive to a resumed search for ``_UNCLAIMED_S`` (CI's chaos
    test killed one there). With ``fixed``, the trial has those params, as an enqueued one
    has them: an enqueued (WAITING) trial can be popped by two workers at once on SQLite,
    and run twice."""
    template = optuna.trial.FrozenTrial(
        number=-1,
        state=_RUNNING,
        value=None,
        datetime_start=datetime.now(),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={"worker": str(this_worker()), "heartbeat": time.time()},
        system_attrs={} if fixed is None else {"fixed_params": fixed},
        intermediate_values={},
        trial_id=-1,
    )
    study._thread_local.cached_all_trials = None  # as ask() does: the sampler sees it all
    return optuna.Trial(study, study._storage.create_new_trial(study._study_id, template))


def _reseed_if_shared(study: optuna.Study) -> None:
    """A sampler seeded like the one of an earlier run (resumed after a kill) or of another
    worker would draw the very configs they drew: reseed it at random whenever the study
    holds trials this process did not run. A fresh single-worker search stays repeatable."""
    me = str(this_worker())
    trials = study.get_trials(deepcopy=False)
    if any(t.user_attrs.get("worker", me) != me for t in trials):
        study.sampler.reseed_rng()


@contextlib.contextmanager
def tracked(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Heartbeat ``trial`` while the block runs; if the block raises anything (a signal's
    SearchInterrupted, an error) while the trial is unfinished, record it FAIL with status
    INTERRUPTED and the reason, and re-raise."""
    try:
        _HEART.add(study, trial._trial_id)
        yield
    except BaseException as exc:
        _record_interrupted(study, trial, exc)
        raise
    finally:
        _HEART.remove(study, trial._trial_id)


@contextlib.contextmanager
def _interrupted_if_raised(study: optuna.Study, trials: Sequence[optuna.Trial]) -> Iterator[None]:
    """If the block raises, record each of ``trials`` that is unfinished INTERRUPTED (as
    :func:`tracked` does, for the moments between asking for a trial and tracking it);
    ``trials`` is read when the block raises, so the block may fill it."""
    try:
        yield
    except BaseException as exc:
        for trial in trials:
            _record_interrupted(study, trial, exc)
        raise


def _record_interrupted(study: optuna.Study, trial: optuna.Trial, exc: BaseException) -> None:
    """Best effort: if recording fails too (the database is gone), the next search on the
    study finds the trial's worker dead and records it then."""
    try:
        frozen = study._storage.get_trial(trial._trial_id)
        if frozen.state == _RUNNING:
            why = f"by {exc}" if isinstance(exc, SearchInterrupted) else f"({type(exc).__name__})"
            _mark(study, frozen, INTERRUPTED, f"interrupted {why}; the search stopped")
    except Exception:
        log.warning("trial %d could not be recorded as interrupted", trial.number, exc_info=True)


# -- the studies --------------------------------------------------------------------------


class Studies:
    """The systems study (maximise samples/s), the convergence study (minimise time to
    target) and the claims study (locks), in one storage, so ``autotune search`` run
    again - or on several workers at once - resumes and shares them.

    Facts the search computes once per study (the probe, the baseline run, the confirmed
    result) live in the convergence study's user attributes, so a resumed search or
    another worker does not pay for them twice.
    """

    def __init__(
        self, storage: str, name: str, sampler: optuna.samplers.BaseSampler, pruner: Any
    ) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        backend = shield_storage(open_storage(storage))
        try:
            _retrying(lambda: self._create(backend, name, sampler, pruner))
        except (ValueError, RuntimeError, sqlalchemy.exc.SQLAlchemyError) as exc:
            first = _scrub(str(exc).strip().splitlines()[0], storage) if str(exc) else ""
            raise ConfigError(
                f"--storage {redact(storage)} cannot hold the study ({type(exc).__name__}: "
                f"{first}); check the URL and the database's permissions."
            ) from None
        self.name = name
        self.failed_stale = fail_stale(self.convergence)

    def _create(
        self,
        backend: optuna.storages.BaseStorage,
        name: str,
        sampler: optuna.samplers.BaseSampler,
        pruner: Any,
    ) -> None:
        self.systems = optuna.create_study(
            storage=backend,
            study_name=f"{name}/systems",
            direction="maximize",
            load_if_exists=True,
        )
        self.convergence = optuna.create_study(
            storage=backend,
            study_name=name,
            direction="minimize",
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
        self.claims = optuna.create_study(
            storage=backend, study_name=f"{name}/claims", load_if_exists=True
        )

    def identify(self, identity: str) -> None:
        """Record the search's identity (JSON) in a study that has none: a new one, or one
        begun before identities were recorded (:mod:`._identity` compares it on resume)."""
        if IDENTITY_KEY not in self.convergence.user_attrs:
            self.convergence.set_user_attr(IDENTITY_KEY, identity)

    def stored(self, key: str, model: type[_M]) -> _M | None:
        """The fact stored under ``key`` (see :meth:`cached`), or None."""
        stored = self.convergence.user_attrs.get(key)
        return None if stored is None else model.model_validate_json(stored)

    def store(self, key: str, value: BaseModel) -> None:
        self.convergence.set_user_attr(key, value.model_dump_json())

    def cached(self, key: str, model: type[_M], compute: Callable[[], _M]) -> _M:
        """``compute()`` once per study; later calls (and resumed searches) read it back."""
        stored = self.stored(key, model)
        if stored is not None:
            return stored
        value = compute()
        self.store(key, value)
        return value

    def next_convergence_trial(
        self, max_trials: int | None, seed_at: Callable[[int], dict[str, Any] | None]
    ) -> optuna.Trial | None:
        """:func:`next_trial` of the convergence study, with the params ``seed_at(k)`` when
        it is trial k and that is not None (the sampler's otherwise): with several workers
        asking at once, exactly one creates trial k, the one that finds k trials while it
        holds the lock ``seed``."""
        study = self.convergence
        if seed_at(len(study.get_trials(deepcopy=False))) is None:
            return next_trial(study, max_trials)
        self.hold("seed")
        trial = None
        try:
            made = len(study.get_trials(deepcopy=False))
            trial = next_trial(study, max_trials, seed_at(made))
        finally:
            with _interrupted_if_raised(study, [trial] if trial is not None else []):
                self.release("seed")
        return trial

    def finished(self, study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        """Trials that ended (any state but RUNNING/WAITING), in number order."""
        return study.get_trials(deepcopy=False, states=_FINISHED)

    # -- locks shared by all workers --------------------------------------------------------

    def hold(self, key: str, on_wait: Callable[[str], None] | None = None) -> None:
        """Block until this worker holds the lock ``key`` (re-entrant; see the module
        docstring). ``on_wait`` is told once, with the holder, if the lock is busy."""
        mine = self._my_claim(key) or self._new_claim(key)
        _HEART.add(self.claims, mine._trial_id)
        told = False
        while True:
            now = time.time()
            live = [c for c in self._claims(key) if not c.user_attrs.get("released")]
            holder = next((c for c in live if _alive(c, now)), None)
            if holder is None or holder.number == mine.number:
                return
            if not told and on_wait is not None:
                on_wait(f"waiting for worker {holder.user_attrs.get('worker')} ({key})")
                told = True
            time.sleep(_POLL_S)

    def release(self, key: str) -> None:
        """Give the lock ``key`` up, if this worker holds or waits for it."""
        mine = self._my_claim(key)
        if mine is not None:
            _HEART.remove(self.claims, mine._trial_id)
            self.claims._storage.set_trial_user_attr(mine._trial_id, "released", True)

    def _claims(self, key: str) -> list[optuna.trial.FrozenTrial]:
        return [t for t in self.claims.get_trials(deepcopy=False) if t.user_attrs.get("key") == key]

    def _my_claim(self, key: str) -> optuna.trial.FrozenTrial | None:
        me = str(this_worker())
        return next(
            (
                c
                for c in self._claims(key)
                if c.user_attrs.get("worker") == me and not c.user_attrs.get("released")
            ),
            None,
        )

    def _new_claim(self, key: str) -> optuna.trial.FrozenTrial:
        token = uuid.uuid4().hex
        attrs = {"key": key, "worker": str(this_worker()), "token": token}
        self.claims.enqueue_trial({}, user_attrs={**attrs, "heartbeat": time.time()})
        return next(c for c in self._claims(key) if c.user_attrs.get("token") == token)

    def confirmation(
        self, model: type[_M], on_wait: Callable[[str], None] | None = None
    ) -> tuple[str, _M | None]:
        """After this worker's last trial: wait for the other workers' trials, then take
        the lock for confirming the study as it now stands. Returns the lock's key (also
        the key to :meth:`store` the result under and to :meth:`release`) and the result
        if a worker - another, or this search before it was killed - already stored it."""
        key = f"tuned/{self.settle(on_wait)}"
        self.hold(key, on_wait)
        return key, self.stored(key, model)

    def settle(self, on_wait: Callable[[str], None] | None = None) -> int:
        """Wait until no worker runs a convergence trial; return how many are counted."""
        told = False
        while True:
            fail_stale(self.convergence)
            trials = counted(self.convergence)
            running = [t for t in trials if t.state == _RUNNING]
            if not running:
                return len(trials)
            if not told and on_wait is not None:
                on_wait(f"waiting for {len(running)} trial(s) of other workers to finish")
                told = True
            time.sleep(_POLL_S)


def study_summary(storage: str, name: str) -> str:
    """One line on what the study holds, for the end of an interrupted search."""
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(storage))
    except (ConfigError, KeyError, ValueError, RuntimeError, sqlalchemy.exc.SQLAlchemyError):
        return f"study {name!r} has no convergence trials yet"
    finished = [t for t in study.get_trials(deepcopy=False) if t.state in _FINISHED]
    counts = Counter(str(t.user_attrs.get("status", t.state.name)).upper() for t in finished)
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"
    return f"study {name!r}: {len(finished)} convergence trial(s) finished ({parts})"
