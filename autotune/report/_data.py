"""Reading a search's two studies (and its tuned.yaml) into what the report shows.

The report reads, never writes: it refuses a SQLite URL whose file does not exist (Optuna
would create an empty database there) and opens no study that is not already stored.
Everything stored by an older or newer search that this version cannot parse is shown as
missing, not raised: a report of a partial study is still worth having.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from pydantic import ValidationError

from autotune.config import (
    EDITED,
    BaselineMeasured,
    Measured,
    TrainConfig,
    TunedConfig,
    load_tuned_config,
)
from autotune.errors import ConfigError
from autotune.explain import Explanation, explain
from autotune.search import redact
from autotune.search._study import open_storage

__all__ = [
    "Comparison",
    "ConvergenceTrial",
    "Importances",
    "ReportData",
    "Side",
    "SystemsTrial",
    "load_report_data",
]

SYSTEMS_SUFFIX = "/systems"
_AUX_SUFFIXES = (SYSTEMS_SUFFIX, "/claims")  # a search's helper studies, not reported alone
_CONFIRMED = re.compile(r"tuned/(\d+)")  # the confirmed TunedConfig after N counted trials
DEFAULT_TUNED = Path("tuned.yaml")
MIN_IMPORTANCE_TRIALS = 5  # fANOVA on fewer completed trials ranks noise
_State = optuna.trial.TrialState


@dataclass(frozen=True)
class ConvergenceTrial:
    """One trial of the convergence study (objective: seconds to the target loss)."""

    number: int
    outcome: str  # what the status counts use: "OK (reached target)", "PRUNED", "OOM", ...
    value: float | None  # time to target; for a run that missed it, the penalty value
    reached: bool
    params: dict[str, Any]
    train: TrainConfig | None
    reason: str


@dataclass(frozen=True)
class SystemsTrial:
    """One trial of the systems study (objective: samples/s)."""

    number: int
    outcome: str  # "OK", "PRUNED" (by the memory model), "OOM", "CRASH", ...
    samples_per_s: float | None
    peak_memory_bytes: int | None
    memory_measured: bool  # False: the probe's memory model predicted the peak
    params: dict[str, Any]
    reason: str


@dataclass(frozen=True)
class Side:
    """One column of the baseline-vs-tuned table."""

    label: str
    train: TrainConfig
    samples_per_s: float | None
    time_to_target_s: float | None
    peak_memory_bytes: int | None


@dataclass(frozen=True)
class Comparison:
    """Baseline against the tuned config, and where the numbers come from."""

    source: str
    baseline: Side | None = None
    tuned: Side | None = None
    speedup: float | None = None  # time to target: baseline / tuned
    # where the baseline never reached the target: the median lower bound on ``speedup``
    speedup_at_least: float | None = None
    throughput_speedup: float | None = None  # samples/s: tuned / baseline
    # tuned.yaml's measured.rejected (as one line) and measured.warnings: what weakens it
    warnings: list[str] = field(default_factory=list)
    why: Explanation | None = None  # the speed-up's two measured factors (autotune.explain)


@dataclass(frozen=True)
class Importances:
    """fANOVA importances of the convergence parameters, or why there are none."""

    values: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows, read once from the storage."""

    study_name: str
    storage: str  # redacted: safe to print
    convergence: list[ConvergenceTrial]
    systems: list[SystemsTrial]
    importances: Importances
    comparison: Comparison
    target_loss: float | None = None
    target_from: str | None = None
    baseline_time_to_target_s: float | None = None
    tuned_yaml: str | None = None  # the config to apply, as YAML
    tuned_yaml_source: str = ""


def load_report_data(
    storage: str, study: str | None = None, tuned: Path | None = None
) -> ReportData:
    """Read study ``study`` (default: the one tuned.yaml names, else the only one) and its
    systems study from ``storage``; ``tuned`` (default: ./tuned.yaml when it is this study's)
    gives the confirmed baseline-vs-tuned numbers.

    Raises :class:`ConfigError` (one line with the fix) for a storage that cannot be opened,
    a study that is not there (naming the ones that are) or an unreadable tuned.yaml.
    """
    tuned_config = _load_tuned(tuned)
    backend = _open_storage(storage)
    names = optuna.study.get_all_study_names(storage=backend)
    name = _choose_study(names, study, tuned_config, storage)
    if tuned is None and tuned_config is not None and not _same_study(tuned_config, name):
        tuned_config = None  # ./tuned.yaml belongs to another study
    convergence = optuna.load_study(study_name=name, storage=backend)
    systems = (
        optuna.load_study(study_name=name + SYSTEMS_SUFFIX, storage=backend)
        if name + SYSTEMS_SUFFIX in names
        else None
    )
    trials = [_convergence_trial(t) for t in convergence.get_trials(deepcopy=False)]
    baseline = _json_attr(convergence.user_attrs, "baseline")
    where = str(tuned or DEFAULT_TUNED)  # says where the tuned config came from
    if tuned_config is None:
        tuned_config, where = _stored_confirmation(convergence.user_attrs, where)
    yaml_text, yaml_source = _tuned_yaml(tuned_config, trials, where)
    return ReportData(
        study_name=name,
        storage=redact(storage),
        convergence=trials,
        systems=[_systems_trial(t) for t in systems.get_trials(deepcopy=False)] if systems else [],
        importances=_importances(convergence),
        comparison=_comparison(tuned_config, baseline, trials, where),
        target_loss=_float(baseline.get("target_loss")),
        target_from=baseline.get("target_from"),
        baseline_time_to_target_s=_float(baseline.get("run", {}).get("time_to_target_s")),
        tuned_yaml=yaml_text,
        tuned_yaml_source=yaml_source,
    )


def _load_tuned(path: Path | None) -> TunedConfig | None:
    if path is not None:
        return load_tuned_config(path)
    if DEFAULT_TUNED.is_file():
        return load_tuned_config(DEFAULT_TUNED)
    return None


def _stored_confirmation(attrs: dict[str, Any], default: str) -> tuple[TunedConfig | None, str]:
    """The latest confirmed config a search stored in the study (``tuned/N``), if any."""
    keys = sorted((int(m[1]), k) for k in attrs if (m := _CONFIRMED.fullmatch(k)))
    for count, key in reversed(keys):
        try:
            config = TunedConfig.model_validate_json(attrs[key])
        except (ValidationError, TypeError):
            continue
        return config, f"the study's confirmed result after {count} trials"
    return None, default


def _same_study(config: TunedConfig, name: str) -> bool:
    given = config.provenance.study_name if config.provenance else None
    return given is None or given == name


_FILE_SCHEMES = ("sqlite:///", "journal:///")  # storages that live in one local file


def _open_storage(url: str) -> optuna.storages.BaseStorage:
    """Open an existing storage, as ``autotune search`` does; never create one (Optuna
    would create an empty SQLite database or journal file at a mistyped path)."""
    scheme = next((s for s in _FILE_SCHEMES if url.startswith(s)), None)
    if scheme is not None and url != "sqlite:///:memory:":
        path = Path(url.removeprefix(scheme).split("?", 1)[0])
        if not path.is_file():
            raise ConfigError(
                f"--storage {redact(url)}: {path} does not exist; run `autotune search model.py` "
                f"first, or pass the --storage URL the search used."
            )
    return open_storage(url)


def _choose_study(
    names: list[str], wanted: str | None, tuned: TunedConfig | None, storage: str
) -> str:
    """The convergence study to report; its systems study is ``name + '/systems'``."""
    studies = sorted(n for n in names if not n.endswith(_AUX_SUFFIXES))
    where = redact(storage)
    if not studies:
        raise ConfigError(
            f"{where} holds no autotune study; run `autotune search model.py --storage "
            f"{where}` first."
        )
    listed = ", ".join(studies)
    if wanted is not None:
        for suffix in _AUX_SUFFIXES:
            wanted = wanted.removesuffix(suffix)
        if wanted not in studies:
            raise ConfigError(
                f"no study {wanted!r} in {where}; the studies there are: {listed}; "
                f"pass one with --study."
            )
        return wanted
    from_tuned = tuned.provenance.study_name if tuned and tuned.provenance else None
    if from_tuned in studies:
        return str(from_tuned)
    if len(studies) == 1:
        return studies[0]
    raise ConfigError(f"{where} holds several studies ({listed}); pick one with --study NAME.")


def _json_attr(attrs: dict[str, Any], key: str) -> dict[str, Any]:
    """A JSON user attribute as a dict; empty when absent or unreadable."""
    try:
        value = json.loads(attrs[key])
    except (KeyError, TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _train(data: Any) -> TrainConfig | None:
    try:
        return TrainConfig.model_validate(data)
    except ValidationError:
        return None


def _float(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _int(value: Any) -> int | None:
    return int(value) if _float(value) is not None else None


def _convergence_outcome(trial: optuna.trial.FrozenTrial) -> str:
    status = str(trial.user_attrs.get("status", "")).upper()
    if trial.state == _State.COMPLETE:
        return "OK (reached target)" if trial.user_attrs.get("reached") else "OK (missed target)"
    if trial.state == _State.PRUNED:
        return "PRUNED"
    if trial.state == _State.FAIL:
        # A finished process whose run could not be read, or a search killed mid-trial.
        return status if status not in ("", "OK", "PRUNED") else "FAIL"
    return trial.state.name  # RUNNING, WAITING


def _convergence_trial(trial: optuna.trial.FrozenTrial) -> ConvergenceTrial:
    attrs = trial.user_attrs
    return ConvergenceTrial(
        number=trial.number,
        outcome=_convergence_outcome(trial),
        value=_float(trial.value) if trial.state == _State.COMPLETE else None,
        reached=bool(attrs.get("reached")),
        params=dict(trial.params),
        train=_train(_json_attr(attrs, "train")),
        reason=_convergence_reason(trial),
    )


def _convergence_reason(trial: optuna.trial.FrozenTrial) -> str:
    attrs = trial.user_attrs
    reason = str(attrs.get("stability") or attrs.get("reason") or "")
    if trial.state == _State.PRUNED:  # the search stopped it: the pruner, or a lost cause
        why = attrs.get("pruned_by") or "behind the median of earlier trials"
        return f"{why} ({reason})" if reason else str(why)
    return reason


def _systems_trial(trial: optuna.trial.FrozenTrial) -> SystemsTrial:
    attrs = trial.user_attrs
    measured = _json_attr(attrs, "run").get("peak_memory_bytes")
    memory = _int(measured) if measured is not None else _int(attrs.get("predicted_peak_bytes"))
    status = str(attrs.get("status", "")).upper()
    complete = trial.state == _State.COMPLETE
    return SystemsTrial(
        number=trial.number,
        outcome="OK" if complete else (status or trial.state.name),
        samples_per_s=_float(trial.value) if complete else None,
        peak_memory_bytes=memory,
        memory_measured=measured is not None,
        params=dict(trial.params),
        reason=str(attrs.get("reason") or ""),
    )


def _importances(study: optuna.Study) -> Importances:
    """fANOVA importances when enough trials completed; otherwise a sentence saying why not."""
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(_State.COMPLETE,))
        if _float(t.value) is not None
    ]
    if len(done) < MIN_IMPORTANCE_TRIALS:
        return Importances(
            note=f"Too few completed trials for parameter importances: {len(done)} of the "
            f"{MIN_IMPORTANCE_TRIALS} needed. Run the search longer (a larger --budget or "
            f"--trials; the same command resumes the study) and report again."
        )
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError) as exc:
        return Importances(note=f"Parameter importances could not be computed: {exc}")
    if not values:
        return Importances(note="No parameter was varied across the completed trials.")
    return Importances(
        values={k: float(v) for k, v in values.items()},
        note=f"fANOVA over {len(done)} completed trials, on the objective (seconds to target).",
    )


def _best(trials: list[ConvergenceTrial]) -> ConvergenceTrial | None:
    reached = [t for t in trials if t.reached and t.value is not None]
    return min(reached, key=lambda t: t.value or math.inf) if reached else None


def _comparison(
    tuned: TunedConfig | None,
    baseline: dict[str, Any],
    trials: list[ConvergenceTrial],
    source: str,
) -> Comparison:
    measured = tuned.measured if tuned is not None else None
    if tuned is not None and measured is not None and measured.baseline is not None:
        return _from_tuned(tuned, measured, measured.baseline, source)
    return _from_study(baseline, trials)


def _from_tuned(
    tuned: TunedConfig, measured: Measured, base: BaselineMeasured, source: str
) -> Comparison:
    spread = measured.time_to_target_spread
    pairs = f"medians over {spread.n} interleaved runs each" if spread else "confirmation runs"
    return Comparison(
        source=f"{source}: the confirmation of the search ({pairs}).",
        baseline=Side(
            "baseline", base.train, base.throughput_samples_per_s, base.time_to_target_s, None
        ),
        tuned=Side(
            "tuned",
            tuned.train,
            measured.throughput_samples_per_s,
            measured.time_to_target_s,
            measured.peak_memory_bytes,
        ),
        speedup=measured.speedup_vs_baseline,
        speedup_at_least=measured.speedup_at_least.median if measured.speedup_at_least else None,
        throughput_speedup=measured.throughput_speedup.median
        if measured.throughput_speedup
        else None,
        warnings=_edited(tuned) + _rejected(measured) + list(measured.warnings),
        why=explain(tuned),
    )


def _edited(tuned: TunedConfig) -> list[str]:
    """The warning for a train section edited after the search: the numbers beside it are
    of the config before (:meth:`TunedConfig.edited`)."""
    if not tuned.edited():
        return []
    return [f"{EDITED}: the tuned column's numbers are not of the config shown."]


def _rejected(measured: Measured) -> list[str]:
    rejected = measured.rejected
    if rejected is None:
        return []
    how = f"{rejected.speedup.median:.2f}x" if rejected.speedup else "never at the target"
    return [f"The search's pick was measured {how} against the baseline; the baseline is kept."]


def _from_study(baseline: dict[str, Any], trials: list[ConvergenceTrial]) -> Comparison:
    run = baseline.get("run", {})
    base_train = _train(run.get("train"))
    base = (
        Side(
            "baseline",
            base_train,
            _float(run.get("samples_per_s")),
            _float(run.get("time_to_target_s")),
            _int(run.get("peak_memory_bytes")),
        )
        if base_train is not None
        else None
    )
    best = _best(trials)
    tuned = (
        Side(f"best trial #{best.number}", best.train, None, best.value, None)
        if best is not None and best.train is not None
        else None
    )
    speedup = (
        base.time_to_target_s / tuned.time_to_target_s
        if base and tuned and base.time_to_target_s and tuned.time_to_target_s
        else None
    )
    found = "the baseline run and the best trial" if tuned else "the baseline run"
    return Comparison(
        source=f"the study: {found}, single runs, not confirmed (no tuned.yaml with measured "
        f"evidence was given; pass --tuned tuned.yaml for the confirmed numbers).",
        baseline=base,
        tuned=tuned,
        speedup=speedup,
    )


def _tuned_yaml(
    tuned: TunedConfig | None, trials: list[ConvergenceTrial], source: str
) -> tuple[str | None, str]:
    if tuned is not None:
        data = tuned.model_dump(mode="json", exclude_none=True)
        return yaml.safe_dump(data, sort_keys=False), source
    best = _best(trials)
    if best is None or best.train is None:
        return None, "no tuned.yaml, and no trial of the study reached the target yet."
    data = {"train": best.train.model_dump(mode="json", exclude_none=True)}
    return (
        yaml.safe_dump(data, sort_keys=False),
        f"the study's best trial #{best.number} (no tuned.yaml given: not yet confirmed "
        f"against the baseline; `autotune run model.py -c FILE` accepts this train: section).",
    )
