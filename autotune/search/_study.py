"""The Optuna side of a search: storage, the two phase studies, resume, cached facts."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

import optuna
from pydantic import BaseModel

from autotune.errors import ConfigError

__all__ = ["Studies", "redact"]

_M = TypeVar("_M", bound=BaseModel)
log = logging.getLogger("autotune.search")


def redact(url: str) -> str:
    """A storage URL safe to print: the password replaced by ``***``."""
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", url)


class Studies:
    """The systems study (maximise samples/s) and the convergence study (minimise time to
    target), both in one storage so ``autotune search`` run again resumes them.

    Facts the search computes once per study (the probe, the baseline run) live in the
    convergence study's user attributes, so a resumed search does not pay for them twice.
    """

    def __init__(
        self, storage: str, name: str, sampler: optuna.samplers.BaseSampler, pruner: Any
    ) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            self.systems = optuna.create_study(
                storage=storage,
                study_name=f"{name}/systems",
                direction="maximize",
                load_if_exists=True,
            )
            self.convergence = optuna.create_study(
                storage=storage,
                study_name=name,
                direction="minimize",
                sampler=sampler,
                pruner=pruner,
                load_if_exists=True,
            )
        except (ValueError, ImportError, RuntimeError) as exc:
            raise ConfigError(
                f"--storage {redact(storage)} cannot be opened ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0]}); use e.g. sqlite:///autotune.db."
            ) from None
        self.name = name
        self.failed_stale = self._fail_stale()

    def _fail_stale(self) -> int:
        """Mark trials a killed search left RUNNING as FAIL; their processes are gone."""
        count = 0
        for study in (self.systems, self.convergence):
            for trial in study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
            ):
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                count += 1
        if count:
            log.warning("marked %d trial(s) left RUNNING by a killed search as FAIL", count)
        return count

    def cached(self, key: str, model: type[_M], compute: Callable[[], _M]) -> _M:
        """``compute()`` once per study; later calls (and resumed searches) read it back."""
        stored = self.convergence.user_attrs.get(key)
        if stored is not None:
            return model.model_validate_json(stored)
        value = compute()
        self.convergence.set_user_attr(key, value.model_dump_json())
        return value

    def finished(self, study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        """Trials that ended (any state but RUNNING/WAITING), in number order."""
        done = (
            optuna.trial.TrialState.COMPLETE,
            optuna.trial.TrialState.PRUNED,
            optuna.trial.TrialState.FAIL,
        )
        return study.get_trials(deepcopy=False, states=done)
