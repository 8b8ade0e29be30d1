"""TensorBoard logs of a run (per step) and of a study (per trial).

Both write through ``torch.utils.tensorboard.SummaryWriter``, which needs the
``tensorboard`` package: without it, opening a writer is a :class:`ConfigError` that
says how to install it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from autotune.errors import ConfigError
from autotune.runtime import RunSummary, StepRecord

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["StepLogger", "open_writer", "require_tensorboard", "write_study_summaries"]

_INSTALL = "pip install 'autotune[tensorboard]'"


def require_tensorboard() -> None:
    """Raise a one-line ConfigError with the fix when the tensorboard package is missing."""
    try:
        import torch.utils.tensorboard  # noqa: F401  (needs the tensorboard package)
    except ImportError:
        raise ConfigError(
            f"--tensorboard needs the tensorboard package, which is not installed; run {_INSTALL}."
        ) from None


def open_writer(logdir: str | Path) -> SummaryWriter:
    """A SummaryWriter on ``logdir``; a ConfigError with the fix without tensorboard."""
    require_tensorboard()
    from torch.utils.tensorboard import SummaryWriter

    try:
        return SummaryWriter(log_dir=str(logdir))
    except OSError as exc:
        raise ConfigError(f"--tensorboard {logdir}: cannot write there ({exc}).") from None


class StepLogger:
    """A run's per-step callback: loss, LR and samples/s at each optimizer step.

    Scalars: ``train/loss``, ``train/lr``, ``train/samples_per_s``; :meth:`close` adds
    ``train/peak_memory_bytes`` at the last step when the run measured it.
    """

    def __init__(self, logdir: str | Path) -> None:
        self.writer = open_writer(logdir)
        self.last_step = 0

    def __call__(self, record: StepRecord) -> None:
        step = record.step
        self.writer.add_scalar("train/loss", record.loss, step)
        self.writer.add_scalar("train/lr", record.lr, step)
        self.writer.add_scalar("train/samples_per_s", record.samples_per_s, step)
        self.last_step = step

    def log_summary(self, summary: RunSummary) -> None:
        """The run's peak memory, at its last step, when the run measured it."""
        if summary.peak_memory_bytes is not None:
            step = summary.steps_completed or self.last_step
            self.writer.add_scalar("train/peak_memory_bytes", summary.peak_memory_bytes, step)

    def close(self) -> None:
        """Flush and close the event file; safe to call twice."""
        self.writer.close()


_RUN_FIELDS = ("samples_per_s", "time_to_target_s", "peak_memory_bytes")


def write_study_summaries(
    study_or_storage: optuna.Study | str, study_name: str | None, logdir: str | Path
) -> int:
    """One TensorBoard point per finished trial, plus its hyperparameters; returns the count.

    ``study_or_storage`` is a study, or a storage URL holding ``study_name``. Scalars are
    stepped by trial number: ``trial/value`` (the objective) and, from the trial's
    ``run`` user attribute, ``trial/samples_per_s``, ``trial/time_to_target_s`` and
    ``trial/peak_memory_bytes``. Each trial's parameters go to the HParams plugin.
    """
    study = _study(study_or_storage, study_name)
    writer = open_writer(logdir)
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    try:
        for trial in finished:
            metrics = _trial_metrics(trial)
            for key, value in metrics.items():
                writer.add_scalar(f"trial/{key}", value, trial.number)
            writer.add_hparams(
                _hparams(trial),
                {f"hparam/{k}": v for k, v in metrics.items()},
                run_name=f"trial-{trial.number:04d}",
                global_step=trial.number,
            )
    finally:
        writer.close()
    return len(finished)


def _study(study_or_storage: optuna.Study | str, study_name: str | None) -> optuna.Study:
    if isinstance(study_or_storage, optuna.Study):
        return study_or_storage
    if study_name is None:
        raise ConfigError("a storage URL needs a study name; pass study_name.")
    try:
        return optuna.load_study(study_name=study_name, storage=study_or_storage)
    except KeyError:
        raise ConfigError(
            f"no study named {study_name!r} in the storage; check the name "
            f"(autotune search --study-name)."
        ) from None


def _trial_metrics(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    metrics: dict[str, float] = {}
    if trial.value is not None and math.isfinite(trial.value):
        metrics["value"] = float(trial.value)
    run = _run_attr(trial)
    for key in _RUN_FIELDS:
        value = run.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            metrics[key] = float(value)
    return metrics


def _run_attr(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    raw = trial.user_attrs.get("run")
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    return {}


def _hparams(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    params: dict[str, Any] = {"state": trial.state.name}
    status = trial.user_attrs.get("status")
    if isinstance(status, str):
        params["status"] = status
    for key, value in trial.params.items():
        params[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return params
