"""The one vocabulary every layer speaks: :class:`TrainConfig` and :class:`TunedConfig`.

Closed pydantic models (``extra="forbid"``): an unknown key or an out-of-range value is an
error that names the field and the fix, never a silently ignored setting. Field names
follow Lightning's where one exists (``precision: bf16-mixed``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from autotune._io import read_yaml, write_text_atomic, yaml_error_message
from autotune.errors import ConfigError

if TYPE_CHECKING:
    from autotune.task import Task

__all__ = [
    "EDITED",
    "OTHER_TASK",
    "PRECISIONS",
    "ActivationCheckpointing",
    "BaselineMeasured",
    "DeviceInfo",
    "EveryK",
    "Measured",
    "OptimizerConfig",
    "Precision",
    "Provenance",
    "Rejected",
    "ScheduleConfig",
    "Spread",
    "TrainConfig",
    "TunedConfig",
    "file_sha256",
    "load_train_config",
    "load_tuned_config",
    "save_tuned_config",
    "train_digest",
]

Precision = Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true"]
PRECISIONS: tuple[Precision, ...] = ("32-true", "bf16-mixed", "16-mixed", "bf16-true")
OptimizerName = Literal["sgd", "adam", "adamw", "adagrad", "rmsprop", "custom"]
ScheduleName = Literal["constant", "linear", "cosine", "onecycle"]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EveryK(_Closed):
    """Checkpoint every k-th block (blocks 0, k, 2k, ...)."""

    every_k: int = Field(ge=1, description="Checkpoint block i when i % every_k == 0.")


ActivationCheckpointing = Literal["none", "full"] | EveryK


def checkpointing_label(mode: ActivationCheckpointing) -> str:
    """``none``, ``full`` or ``every k blocks``: how tables name a checkpointing mode."""
    return f"every {mode.every_k} blocks" if isinstance(mode, EveryK) else mode


class OptimizerConfig(_Closed):
    """The optimizer and its base learning rate (the peak of the schedule)."""

    name: OptimizerName = Field(
        "adamw", description="A torch optimizer, or 'custom' for the Task's own callable."
    )
    lr: float = Field(gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="Decoupled for adamw, L2 otherwise.")
    momentum: float = Field(0.0, ge=0, lt=1, description="Momentum for sgd and rmsprop.")


class ScheduleConfig(_Closed):
    """The learning-rate schedule: linear warmup from 0, then the named shape."""

    name: ScheduleName = Field("constant", description="Shape after warmup.")
    warmup_steps: int = Field(0, ge=0, description="Optimizer steps of linear warmup.")
    min_lr_ratio: float = Field(
        0.0, ge=0, le=1, description="Final LR as a fraction of the peak (linear/cosine/onecycle)."
    )
    total_steps: int | None = Field(
        None, ge=1, description="Steps the schedule spans; None means the run's step count."
    )

    @model_validator(mode="before")
    @classmethod
    def _named(cls, data: Any) -> Any:
        """``schedule: cosine`` is ``schedule: {name: cosine}``."""
        return {"name": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _warmup_fits(self) -> ScheduleConfig:
        if self.total_steps is not None and self.warmup_steps >= self.total_steps:
            raise ValueError(
                f"warmup_steps must be less than total_steps, but got "
                f"warmup_steps={self.warmup_steps}, total_steps={self.total_steps}; "
                f"shorten the warmup or lengthen the schedule."
            )
        return self


class TrainConfig(_Closed):
    """What to apply to a training run. ``global batch = micro x accum x world``."""

    micro_batch_size: int = Field(ge=1, description="Samples per rank per forward pass.")
    grad_accum_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    world_size: int = Field(1, ge=1, description="Data-parallel ranks (processes).")
    global_batch_size: int | None = Field(
        None, ge=1, description="Optional; when given it must equal micro x accum x world."
    )
    precision: Precision = Field("32-true", description="Lightning's precision names.")
    activation_checkpointing: ActivationCheckpointing = Field(
        "none", description="'none', 'full' (every block) or {every_k: k}."
    )
    compile: bool = Field(False, description="Wrap the model in torch.compile.")
    optimizer: OptimizerConfig
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    gradient_clip_val: float | None = Field(
        None, gt=0, description="Clip the global gradient norm to this value; None: no clip."
    )

    @model_validator(mode="after")
    def _global_batch(self) -> TrainConfig:
        product = self.micro_batch_size * self.grad_accum_steps * self.world_size
        if self.global_batch_size is None:
            object.__setattr__(self, "global_batch_size", product)
        elif self.global_batch_size != product:
            raise ValueError(
                f"global_batch_size must equal micro_batch_size x grad_accum_steps x "
                f"world_size = {self.micro_batch_size} x {self.grad_accum_steps} x "
                f"{self.world_size} = {product}, but got {self.global_batch_size}; "
                f"fix one of them or drop global_batch_size."
            )
        return self

    @property
    def global_batch(self) -> int:
        """Samples per optimizer step over all ranks."""
        return self.micro_batch_size * self.grad_accum_steps * self.world_size


class Spread(_Closed):
    """A repeated measurement: median and range over ``n`` repeats."""

    median: float
    low: float
    high: float
    n: int = Field(ge=1)


class DeviceInfo(_Closed):
    kind: Literal["cpu", "cuda"]
    name: str
    count: int = Field(ge=1)
    memory_bytes: int | None = Field(None, ge=0)


class BaselineMeasured(_Closed):
    train: TrainConfig
    throughput_samples_per_s: float = Field(gt=0)
    time_to_target_s: float | None = Field(None, ge=0)


class Rejected(_Closed):
    """The search's pick, kept out of ``train``: the interleaved confirmation measured it
    no faster than the baseline, so the file recommends the baseline instead."""

    train: TrainConfig
    trial: int | None = Field(None, description="Its convergence trial (None: fp32 fallback).")
    speedup: Spread | None = Field(
        None,
        description="Its time-to-target speed-up over the baseline, per confirmation pair "
        "in which the baseline reached the target (a pair in which it did not counts at its "
        "upper bound, as in speedup_spread); None where it reached the target in no pair.",
    )


class Measured(_Closed):
    """The evidence behind a tuned config, as measured on ``device``."""

    device: DeviceInfo
    throughput_samples_per_s: float = Field(gt=0, description="Median over timed steps.")
    throughput_spread: Spread | None = None
    peak_memory_bytes: int | None = Field(None, ge=0)
    mfu: float | None = Field(None, ge=0, description="Achieved / measured peak FLOP/s.")
    target_loss: float | None = None
    time_to_target_s: float | None = Field(None, ge=0)
    time_to_target_spread: Spread | None = None
    baseline: BaselineMeasured | None = None
    speedup_vs_baseline: float | None = Field(None, gt=0)
    speedup_spread: Spread | None = Field(
        None,
        description="Time-to-target speed-up over the baseline, per confirmation pair in "
        "which the baseline reached the target; a pair whose tuned run did not counts at its "
        "upper bound, the baseline's time over that run's length (under 1).",
    )
    speedup_at_least: Spread | None = Field(
        None,
        description="Where the baseline reached the target in no confirmation pair (a "
        "target it cannot reach in its budget): per pair, the baseline run's length over "
        "the tuned config's time to the target, a lower bound on the speed-up. None where "
        "the speed-up itself was measured (speedup_spread).",
    )
    throughput_speedup: Spread | None = Field(
        None, description="samples/s of the tuned config over the baseline's, per pair."
    )
    confirmation_seeds: list[int] = Field(
        default_factory=list,
        description="The seed of each confirmation pair, in order; both runs of a pair "
        "share it, and the search's trials trained on none of them. Empty: written before "
        "autotune recorded it (every pair then ran on the search's seed).",
    )
    rejected: Rejected | None = Field(
        None, description="The search's pick, measured slower than the baseline: not applied."
    )
    gradient_noise_scale: float | None = Field(
        None,
        gt=0,
        description="The probe's simple gradient noise scale B_simple, in samples, measured "
        "at init: a lower bound (it grows as the loss falls). None: not measured, or degenerate.",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="What makes these numbers weaker than they look, each with its fix.",
    )
    unused_parameters: list[str] = Field(
        default_factory=list,
        description="Trainable parameters the probe's backward left without a gradient: "
        "DDP in the user's own trainer needs find_unused_parameters=True for them (the "
        "exports say how); autotune's runtime finds them itself.",
    )
    find_unused_parameters: bool | None = Field(
        None,
        description="Whether DDP in the user's own trainer must look for parameters without "
        "a gradient every step: the task's Task.find_unused_parameters where it declares it "
        "(a model whose data decides which parameters it uses), else whether "
        "unused_parameters names any. None: written before autotune recorded it.",
    )
    task_sha256: str | None = Field(
        None,
        description="sha256 of the task file's bytes these numbers were measured with: run "
        "and check do not hold another (or an edited) task file to them. None: written "
        "before autotune recorded it.",
    )
    train_digest: str | None = Field(
        None,
        description="train_digest() of the train section these numbers were measured with. "
        "A train section edited since no longer matches it, and autotune run, check and "
        "show then hold it to none of them. None: written before autotune recorded it.",
    )


class Provenance(_Closed):
    autotune_version: str
    torch_version: str
    study: str | None = None
    study_name: str | None = None
    trial: int | None = None
    seed: int | None = Field(
        None,
        description="The search's seed (`autotune search --seed`): its trials' initial "
        "weights and data order. None: written before autotune recorded it (seed 0).",
    )
    hardware: str | None = None
    glibc_tunables: str | None = Field(
        None,
        description="GLIBC_TUNABLES the search measured under (autotune's training commands "
        "start with glibc.malloc.hugetlb=1 where glibc and the kernel support it); training "
        "started without it can run slower than what was measured.",
    )


class TunedConfig(_Closed):
    """A tuned config file: what to apply (``train``), the evidence, and where it came from."""

    schema_version: Literal[1] = 1
    task: str | None = Field(None, description="The task file the config was tuned for.")
    train: TrainConfig
    measured: Measured | None = None
    provenance: Provenance | None = None

    def edited(self) -> bool:
        """Whether ``train`` is not the config ``measured`` was measured with: the file was
        edited after the search (False where the file does not record it). What to tell the
        user then starts with :data:`EDITED`."""
        measured = self.measured
        if measured is None or measured.train_digest is None:
            return False
        return measured.train_digest != train_digest(self.train)

    def other_task(self, task_path: Path) -> bool:
        """Whether ``task_path``'s contents are not the task file ``measured`` was measured
        with (False where the file does not record it, or the task cannot be read: the run
        itself says why). What to tell the user then starts with :data:`OTHER_TASK`."""
        recorded = self.measured.task_sha256 if self.measured is not None else None
        if recorded is None:
            return False
        try:
            return file_sha256(task_path) != recorded
        except OSError:
            return False


def file_sha256(path: Path) -> str:
    """sha256 of the file's bytes, as hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


OTHER_TASK = (
    "the task file is not the one the search measured (its contents differ: another task, "
    "or this one edited since), so the file's measured numbers are not of this task"
)


EDITED = (
    "the train section was edited after the search measured it, so the file's measured "
    "numbers are of the config before the edit"
)


def train_digest(train: TrainConfig) -> str:
    """A short fingerprint of every setting in ``train``. The search stores it beside the
    numbers it measured (:attr:`Measured.train_digest`), so that a train section edited
    later (another world size, a micro-batch that fits a smaller machine) is not held to
    the numbers of the config before it."""
    return hashlib.sha256(train.model_dump_json().encode()).hexdigest()[:16]


def train_config_from_baseline(task: Task) -> TrainConfig:
    """Map ``Task.baseline`` (``batch_size``, ``lr`` and any TrainConfig field) to a config;
    its ``steps`` is the baseline's length (:meth:`Task.baseline_steps`), not config."""
    values = dict(task.baseline)
    _known_baseline_keys(task, values)
    values.pop("steps", None)  # the baseline's length, not part of its config
    if "batch_size" in values:
        values.setdefault("micro_batch_size", values.pop("batch_size"))
    values["schedule"] = _baseline_schedule(task, values)
    given = values.pop("optimizer", None) or {}
    if isinstance(given, str):  # baseline=dict(optimizer="sgd", ...): a name
        given = {"name": given}
    if not isinstance(given, Mapping):
        raise ConfigError(
            f"{task.where()}: Task.baseline: optimizer must be a name such as 'adamw' or a dict "
            f"such as dict(name='adamw', lr=1e-3), but got {given!r}."
        )
    optimizer = dict(given)
    for key in ("lr", "weight_decay", "momentum"):
        if key in values:
            optimizer[key] = values.pop(key)
    # Task accepts any case ('AdamW'); the config's names are lower case.
    optimizer.setdefault(
        "name", task.optimizer.lower() if isinstance(task.optimizer, str) else "custom"
    )
    values["optimizer"] = optimizer
    return validate_train_config(values, f"{task.where()}: Task.baseline")


# Task.baseline's own keys beside TrainConfig's fields: the usual names of a training setup.
_BASELINE_KEYS = ("batch_size", "steps", "lr", "weight_decay", "momentum")
_SCHEDULE_KEYS = ("warmup_steps", "min_lr_ratio")


def _known_baseline_keys(task: Task, values: Mapping[str, Any]) -> None:
    """Raise a :class:`ConfigError` naming the closest key for a misspelt baseline key
    (was: ``micro_batch_size: Field required`` for ``batchsize``)."""
    known = sorted({*_BASELINE_KEYS, *_SCHEDULE_KEYS, *TrainConfig.model_fields})
    for key in values:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"the keys are {', '.join(known)}."
        raise ConfigError(f"{task.where()}: Task.baseline: unknown key {key!r}; {hint}")


def _baseline_schedule(task: Task, values: dict[str, Any]) -> dict[str, Any]:
    """The baseline's schedule: ``schedule`` (a name or a dict) with ``warmup_steps`` and
    ``min_lr_ratio`` given beside it folded in."""
    given = values.pop("schedule", None) or {}
    schedule = {"name": given} if isinstance(given, str) else given
    if not isinstance(schedule, Mapping):
        raise ConfigError(
            f"{task.where()}: Task.baseline: schedule must be a name such as 'cosine' or a "
            f"dict such as dict(name='cosine', warmup_steps=100), but got {given!r}."
        )
    return {**schedule, **{k: values.pop(k) for k in _SCHEDULE_KEYS if k in values}}


def validate_train_config(data: Any, where: str) -> TrainConfig:
    """Validate a mapping as a TrainConfig, raising a one-line :class:`ConfigError`."""
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {format_validation_error(exc)}") from None


def load_tuned_config(path: str | Path) -> TunedConfig:
    """Read a tuned.yaml, or a file holding only its ``train:`` section."""
    data = _read_mapping(path)
    if "train" not in data:
        raise ConfigError(
            f"{path}: no `train:` section; a config file holds `train: {{micro_batch_size: ..., "
            f"optimizer: {{lr: ...}}}}` (see `autotune schema`)."
        )
    if set(data) == {"train"}:
        return TunedConfig(task=None, train=validate_train_config(data["train"], str(path)))
    try:
        return TunedConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {format_validation_error(exc)}") from None


def load_train_config(path: str | Path) -> TrainConfig:
    """The ``train`` section of a tuned config file."""
    return load_tuned_config(path).train


def save_tuned_config(config: TunedConfig, path: str | Path) -> None:
    """Write ``config`` as YAML (or JSON for a ``.json`` path), atomically."""
    data = config.model_dump(mode="json", exclude_none=True)
    if str(path).endswith(".json"):
        text = json.dumps(data, indent=2) + "\n"
    else:
        text = yaml.safe_dump(data, sort_keys=False)
    write_text_atomic(path, text)


def _read_mapping(path: str | Path) -> dict[str, Any]:
    try:
        data = read_yaml(path)
    except FileNotFoundError:
        raise ConfigError(f"Config file '{path}' does not exist; check the path.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"Config file '{path}' cannot be read ({exc}); pass a readable YAML file."
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error_message(path, exc)) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a YAML mapping with a `train:` section, but got "
            f"{type(data).__name__}."
        )
    return data


def format_validation_error(exc: ValidationError) -> str:
    """Pydantic's errors as one line: ``field: problem (got value)``; fixes included."""
    parts = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"] if not _is_union_tag(p))
        message = error["msg"]
        if loc.endswith("activation_checkpointing") and error["type"] != "extra_forbidden":
            message = "must be 'none', 'full' or {every_k: k} with k >= 1"
        elif error["type"] == "extra_forbidden":
            message = "unknown key; remove it or check its spelling (see `autotune schema`)"
        elif error["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        got = error.get("input")
        suffix = "" if error["type"] in ("missing", "value_error") else f" (got {got!r})"
        parts.append(f"{loc + ': ' if loc else ''}{message}{suffix}")
    return "; ".join(_dedupe(parts))


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and (part.startswith("literal[") or part == "EveryK")


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
