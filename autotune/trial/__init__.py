"""Run one candidate config in a supervised subprocess (DESIGN.md, invariant 2).

A trial can never take the search down: :func:`run_trial` starts a worker process that
trains through :func:`autotune.runtime.train`, follows its progress, enforces a timeout,
and turns every ending (success, divergence, OOM, exception, ``sys.exit``, a signal, a
hang, pruning) into a :class:`TrialResult` with a :class:`TrialStatus` and a one-line
reason. The status is decided from the worker's structured result file and its exit
status or signal, never from the text of its output.
"""

from autotune.trial._launchers import PLAIN, ForkServer, Launcher
from autotune.trial._run import StepJudge, run_trial
from autotune.trial._schema import (
    ErrorKind,
    TargetStop,
    TrialResult,
    TrialSpec,
    TrialStatus,
    WorkerError,
)

__all__ = [
    "PLAIN",
    "ErrorKind",
    "ForkServer",
    "Launcher",
    "StepJudge",
    "TargetStop",
    "TrialResult",
    "TrialSpec",
    "TrialStatus",
    "WorkerError",
    "run_trial",
]
