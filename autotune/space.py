"""Search spaces: ``search_spaces/*.yaml`` -> a validated :class:`SearchSpace` -> Optuna.

A search space is data. Each file is a closed pydantic model (``extra="forbid"``), so an
unknown key, an out-of-range value, ``low > high`` or an empty list of choices is one
line naming the file, the field and the fix. Dimensions come in two groups, one per
search phase (DESIGN.md, "Search, in outline"):

- ``systems`` (phase 1, throughput): micro-batch size, precision, activation
  checkpointing, world size, compile;
- ``convergence`` (phase 2, time to target): gradient accumulation (the global batch),
  learning rate, schedule, warmup fraction, and optionally final LR ratio and weight decay.

A dimension left out (or ``null``) is not searched: the Task's baseline value is kept.
Adding a dimension means a field on :class:`SystemsSpace` or :class:`ConvergenceSpace`
and one line in :func:`to_train_config`; suggestion, restriction and encoding are generic.

Everything here is pure: values in, values out. :func:`restrict` removes what the
hardware cannot run (from :class:`Facts`), :func:`check_memory` prunes a configuration
before any process starts (from the profiler's memory model), ``suggest_*`` map the space
onto an Optuna trial, and :func:`to_train_config` turns the suggested values into a
validated :class:`~autotune.config.TrainConfig`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import optuna
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    model_validator,
)

from autotune._io import read_yaml, yaml_error_message
from autotune.config import (
    ActivationCheckpointing,
    EveryK,
    OptimizerName,
    Precision,
    ScheduleName,
    TrainConfig,
    format_validation_error,
    validate_train_config,
)
from autotune.errors import ConfigError

__all__ = [
    "BUNDLED_SPACES",
    "MAX_WARMUP_FRACTION",
    "WARMUP_FRACTION_PER_DOUBLING",
    "ConvergenceSpace",
    "Facts",
    "FloatRange",
    "LrRange",
    "MemoryVerdict",
    "PowerOfTwoRange",
    "Removal",
    "SearchSpace",
    "SystemsSpace",
    "Viability",
    "allowed_accum",
    "bundled_space_path",
    "check_memory",
    "choices",
    "convergence_seed",
    "decode_checkpointing",
    "decode_params",
    "encode_checkpointing",
    "encode_params",
    "epoch_overrun",
    "load_space",
    "lr_seed_value",
    "parse_space",
    "restrict",
    "scaled_lr",
    "scaling_rule_for",
    "short_dataset",
    "suggest_convergence",
    "suggest_systems",
    "systems_grid",
    "to_train_config",
    "warmup_for",
]

log = logging.getLogger(__name__)

BUNDLED_SPACES: tuple[str, ...] = ("default", "transformer", "cnn")
# search_spaces/ sits at the repository root, beside the autotune/ package.
_BUNDLED_DIR = Path(__file__).resolve().parents[1] / "search_spaces"

ScalingRule = Literal["linear", "sqrt", "none"]

T = TypeVar("T")


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- dimension kinds -----------------------------------------------------------------


def _nonempty_unique(values: list[T]) -> list[T]:
    if not values:
        raise ValueError(
            "must list at least one value; add one, or remove the dimension to keep the "
            "baseline's value"
        )
    seen: list[T] = []
    for value in values:
        if value in seen:
            raise ValueError(f"lists {value!r} twice; remove the duplicate")
        seen.append(value)
    return values


class PowerOfTwoRange(_Closed):
    """Every power of two from ``low`` to ``high``: ``{low: 8, high: 256, log: true}``."""

    low: int = Field(ge=1, description="Smallest value, a power of two.")
    high: int = Field(ge=1, description="Largest value, a power of two.")
    log: bool = Field(
        default=True, description="Must be true: integer ranges are searched over powers of two."
    )

    @model_validator(mode="after")
    def _valid(self) -> PowerOfTwoRange:
        if not self.log:
            raise ValueError(
                "integer ranges are searched over powers of two; set log: true or list the choices"
            )
        for name, value in (("low", self.low), ("high", self.high)):
            if value & (value - 1):
                below = 1 << (value.bit_length() - 1)
                raise ValueError(
                    f"{name} must be a power of two, but got {name}={value}; use {below} or "
                    f"{below * 2}, or list the choices"
                )
        if self.low > self.high:
            raise ValueError(
                f"low must be <= high, but got low={self.low}, high={self.high}; swap them"
            )
        return self

    def values(self) -> list[int]:
        """The powers of two from low to high, ascending."""
        return [1 << k for k in range(self.low.bit_length() - 1, self.high.bit_length())]


class FloatRange(_Closed):
    """A continuous range ``{low, high}``, sampled uniformly or (``log: true``) log-uniformly."""

    low: float = Field(description="Lower bound, included.")
    high: float = Field(description="Upper bound, included; equal to low fixes the value.")
    log: bool = Field(default=False, description="Sample log-uniformly (needs low > 0).")

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(
                f"low and high must be finite numbers, but got low={self.low}, high={self.high}"
            )
        if self.low > self.high:
            raise ValueError(
                f"low must be <= high, but got low={self.low:g}, high={self.high:g}; swap them"
            )
        if self.log and self.low <= 0:
            raise ValueError(
                f"a log range needs low > 0, but got low={self.low:g}; raise low or set log: false"
            )
        return self


class UnitRange(FloatRange):
    """A range of fractions in ``[0, 1)``."""

    low: float = Field(ge=0, lt=1, description="Lower bound, a fraction in [0, 1).")
    high: float = Field(ge=0, lt=1, description="Upper bound, a fraction in [0, 1).")


class RatioRange(FloatRange):
    """A range of ratios in ``[0, 1]``."""

    low: float = Field(ge=0, le=1, description="Lower bound, in [0, 1].")
    high: float = Field(ge=0, le=1, description="Upper bound, in [0, 1].")


class LrRange(FloatRange):
    """The peak learning rate: absolute, or (``relative: true``) multiples of a seed LR.

    With ``relative: true`` the range multiplies the baseline's LR after scaling it to the
    trial's global batch with ``scaling`` (see :func:`scaled_lr`); the multiplier 1.0 is
    exactly the scaling rule's guess, so the search starts where the literature would.
    """

    low: float = Field(gt=0, description="Smallest LR (or multiplier, when relative).")
    high: float = Field(gt=0, description="Largest LR (or multiplier, when relative).")
    log: bool = Field(default=True, description="Sample log-uniformly: LRs matter by ratio.")
    relative: bool = Field(
        default=False, description="low/high multiply the baseline LR scaled to the trial's batch."
    )
    scaling: Literal["auto", "linear", "sqrt", "none"] = Field(
        default="auto",
        description=(
            "How the baseline LR follows the global batch when relative: linear (SGD), sqrt "
            "(Adam-type), none, or auto (by the optimizer)."
        ),
    )

    @property
    def param(self) -> str:
        """The trial parameter that carries it: ``lr_multiplier`` when relative, else ``lr``."""
        return "lr_multiplier" if self.relative else "lr"

    @model_validator(mode="after")
    def _scaling_needs_relative(self) -> LrRange:
        # "auto" (the default) is harmless on an absolute range, and a dumped space has it.
        if "scaling" in self.model_fields_set and not self.relative and self.scaling != "auto":
            raise ValueError(
                f"scaling: {self.scaling} applies only to a relative range; set relative: true "
                f"or remove scaling"
            )
        return self


def _int_kind(value: Any) -> str | None:
    if isinstance(value, list):
        return "choices"
    if isinstance(value, dict | PowerOfTwoRange):
        return "range"
    return None


PositiveInt = Annotated[int, Field(ge=1)]
IntChoices = Annotated[list[PositiveInt], AfterValidator(_nonempty_unique)]
IntDimension = Annotated[
    Annotated[IntChoices, Tag("choices")] | Annotated[PowerOfTwoRange, Tag("range")],
    Discriminator(
        _int_kind,
        custom_error_type="dimension",
        custom_error_message="must be a list of choices or {low, high, log: true}",
    ),
]

# Tag names that autotune.config.format_validation_error leaves out of an error's field.
_LITERAL_TAG = "literal['none', 'full']"
_EVERY_K_TAG = "EveryK"


def _checkpointing_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return _LITERAL_TAG
    if isinstance(value, dict | EveryK):
        return _EVERY_K_TAG
    return None


CheckpointingChoice = Annotated[
    Annotated[Literal["none", "full"], Tag(_LITERAL_TAG)] | Annotated[EveryK, Tag(_EVERY_K_TAG)],
    Discriminator(
        _checkpointing_kind,
        custom_error_type="checkpointing",
        custom_error_message="must be 'none', 'full' or {every_k: k} with k >= 1",
    ),
]


class SystemsSpace(_Closed):
    """Phase 1: what makes a step fast. Objective: samples/s at equal stability."""

    micro_batch_size: IntDimension | None = Field(
        default=None,
        description="Samples per rank per forward pass: choices or a powers-of-two range.",
    )
    precision: Annotated[list[Precision], AfterValidator(_nonempty_unique)] | None = Field(
        default=None,
        description="Lightning precision names; each reduced one is checked against fp32.",
    )
    activation_checkpointing: (
        Annotated[list[CheckpointingChoice], AfterValidator(_nonempty_unique)] | None
    ) = Field(
        default=None, description="'none', 'full' or {every_k: k}: memory traded for recompute."
    )
    world_size: IntDimension | None = Field(
        default=None, description="Data-parallel ranks; values above the devices/cores are removed."
    )
    compile: Annotated[list[bool], AfterValidator(_nonempty_unique)] | None = Field(
        default=None, description="Whether to wrap the model in torch.compile."
    )


class ConvergenceSpace(_Closed):
    """Phase 2: what makes the loss fall per second. Objective: time to the target loss."""

    grad_accum_steps: IntDimension | None = Field(
        default=None,
        description="Micro-batches per optimizer step: global = micro x accum x world.",
    )
    lr: LrRange | None = Field(
        default=None, description="Peak learning rate, absolute or relative."
    )
    schedule: Annotated[list[ScheduleName], AfterValidator(_nonempty_unique)] | None = Field(
        default=None, description="LR schedule shapes after warmup."
    )
    warmup_fraction: UnitRange | None = Field(
        default=None, description="Share of the run's optimizer steps spent in linear warmup."
    )
    min_lr_ratio: RatioRange | None = Field(
        default=None, description="Final LR / peak LR for decaying schedules (not for constant)."
    )
    weight_decay: FloatRange | None = Field(
        default=None, description="Optimizer weight decay (>= 0)."
    )

    @model_validator(mode="after")
    def _weight_decay_non_negative(self) -> ConvergenceSpace:
        if self.weight_decay is not None and self.weight_decay.low < 0:
            raise ValueError(
                f"weight_decay.low must be >= 0, but got {self.weight_decay.low:g}; use 0 or more"
            )
        return self


class SearchSpace(_Closed):
    """A search space file: what each phase of ``autotune search`` may try."""

    schema_version: Literal[1] = Field(default=1, description="Version of this file format.")
    description: str = Field(default="", description="What the space is for, in a sentence.")
    systems: SystemsSpace = Field(
        default_factory=lambda: SystemsSpace.model_validate({}), description="Phase 1 dimensions."
    )
    convergence: ConvergenceSpace = Field(
        default_factory=lambda: ConvergenceSpace.model_validate({}),
        description="Phase 2 dimensions.",
    )
    _source: str = PrivateAttr("<memory>")

    @model_validator(mode="after")
    def _searches_something(self) -> SearchSpace:
        if not self.dimensions():
            raise ValueError(
                "the space searches no dimension; give systems: or convergence: at least one, e.g. "
                "systems: {micro_batch_size: [16, 32, 64]}"
            )
        return self

    @property
    def source(self) -> str:
        """Where the space came from: a file path, or ``<memory>``."""
        return self._source

    def dimensions(self) -> dict[str, Any]:
        """The searched dimensions, ``"group.name" -> spec``, in schema order."""
        found: dict[str, Any] = {}
        for group in ("systems", "convergence"):
            section = getattr(self, group)
            for name in type(section).model_fields:
                spec = getattr(section, name)
                if spec is not None:
                    found[f"{group}.{name}"] = spec
        return found


# --- loading ---------------------------------------------------------------------------


def bundled_space_path(name: str) -> Path:
    """The file of a bundled space (``default``, ``transformer``, ``cnn``)."""
    return _BUNDLED_DIR / f"{name}.yaml"


def load_space(path_or_name: str | Path) -> SearchSpace:
    """Read and validate a search space: a YAML path, or a bundled name such as ``"default"``.

    A bare word (no directory, no suffix) is a bundled name; anything else is a path.
    Every problem is one :class:`ConfigError` line naming the file, the field and the fix.
    """
    text = str(path_or_name)
    is_name = isinstance(path_or_name, str) and "/" not in text and "\\" not in text
    if is_name and not Path(text).suffix:
        if text not in BUNDLED_SPACES:
            raise ConfigError(
                f"Search space '{text}' is neither a file nor a bundled space "
                f"({', '.join(BUNDLED_SPACES)}); give a path to a YAML file or one of those names."
            )
        path = bundled_space_path(text)
    else:
        path = Path(path_or_name)
    try:
        data = read_yaml(path)
    except FileNotFoundError:
        raise ConfigError(
            f"Search space file '{path}' does not exist; check the path, or use a bundled "
            f"space ({', '.join(BUNDLED_SPACES)})."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"Search space file '{path}' cannot be read ({exc}); pass a readable YAML file."
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error_message(path, exc)) from None
    return parse_space(data, str(path))


def parse_space(data: Any, source: str = "<memory>") -> SearchSpace:
    """Validate a mapping (parsed YAML) as a :class:`SearchSpace`; ``source`` names it in errors."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a YAML mapping with systems: and/or convergence: sections, "
            f"but got {type(data).__name__}."
        )
    try:
        space = SearchSpace.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {format_validation_error(exc)}") from None
    space._source = source
    return space


def choices(spec: Any) -> list[Any]:
    """The discrete values of a dimension (a range of powers of two expanded), in order."""
    if isinstance(spec, PowerOfTwoRange):
        return spec.values()
    if isinstance(spec, list):
        return list(spec)
    raise TypeError(f"{type(spec).__name__} is a continuous dimension; it has no choices.")


# --- feasibility -----------------------------------------------------------------------


class Viability(_Closed):
    """Whether the hardware (or the probe) can run something, and why, with numbers."""

    viable: bool
    reason: str = Field(min_length=1)


class Facts(_Closed):
    """What :func:`restrict` needs to know about the machine and the model."""

    device_kind: Literal["cpu", "cuda"] = Field(description="Where training runs.")
    device_count: int = Field(default=1, ge=1, description="GPUs visible (1 on CPU).")
    cpu_cores: int = Field(ge=1, description="CPU cores; one rank per core on CPU.")
    precisions: dict[Precision, Viability] = Field(
        default_factory=dict,
        description="The probe's verdict per precision; a precision not listed is kept.",
    )
    checkpoint_blocks: bool = Field(
        default=True, description="Whether the model has blocks activation checkpointing can wrap."
    )
    compile: Viability | None = Field(
        default=None, description="Whether torch.compile works here; None: assume it does."
    )
    dataset_size: int | None = Field(
        default=None, ge=1, description="Samples in the dataset; a micro-batch cannot exceed it."
    )


@dataclass(frozen=True)
class Removal:
    """One value :func:`restrict` removed from a dimension, and why."""

    dimension: str
    value: Any
    reason: str

    def __str__(self) -> str:
        return f"{self.dimension}={_show(self.value)} removed: {self.reason}"


_Rule = Callable[[Any, Facts], str | None]


def _world_size_rule(value: int, facts: Facts) -> str | None:
    if facts.device_kind == "cuda" and value > facts.device_count:
        return f"{value} ranks need {value} GPUs, but this machine has {facts.device_count}"
    if facts.device_kind == "cpu" and value > facts.cpu_cores:
        return (
            f"{value} ranks need {value} CPU cores (one each), but this machine has "
            f"{facts.cpu_cores}"
        )
    return None


def _precision_rule(value: Precision, facts: Facts) -> str | None:
    verdict = facts.precisions.get(value)
    return None if verdict is None or verdict.viable else verdict.reason


def _checkpointing_rule(value: Any, facts: Facts) -> str | None:
    if value != "none" and not facts.checkpoint_blocks:
        return (
            "the model has no repeated blocks to checkpoint; name them with Task(blocks=[...]) "
            "to search checkpointing"
        )
    return None


def _compile_rule(value: bool, facts: Facts) -> str | None:
    if value and facts.compile is not None and not facts.compile.viable:
        return facts.compile.reason
    return None


def _micro_batch_rule(value: int, facts: Facts) -> str | None:
    if facts.dataset_size is not None and value > facts.dataset_size:
        return f"the dataset has only {facts.dataset_size} samples"
    return None


_RULES: dict[str, _Rule] = {
    "systems.world_size": _world_size_rule,
    "systems.precision": _precision_rule,
    "systems.activation_checkpointing": _checkpointing_rule,
    "systems.compile": _compile_rule,
    "systems.micro_batch_size": _micro_batch_rule,
}
# What to add when a rule empties a dimension: a value every machine can run.
_SAFE_VALUE: dict[str, str] = {
    "systems.world_size": "1",
    "systems.precision": "32-true",
    "systems.activation_checkpointing": "none",
    "systems.compile": "false",
    "systems.micro_batch_size": "a smaller micro-batch",
}


def restrict(space: SearchSpace, facts: Facts) -> tuple[SearchSpace, list[Removal]]:
    """Remove the values the hardware or the model cannot support, each with its reason.

    Rules: world sizes above the GPUs (CUDA) or the CPU cores (CPU); precisions the probe
    marks not viable; checkpointing other than ``none`` when the model has no blocks;
    ``compile: true`` where torch.compile does not work; micro-batches larger than the
    dataset. Each removal is logged. A dimension left empty is a :class:`ConfigError`
    naming the constraint that emptied it and the fix.
    """
    removals: list[Removal] = []
    updates: dict[str, dict[str, Any]] = {}
    for key, spec in space.dimensions().items():
        rule = _RULES.get(key)
        if rule is None:
            continue
        kept, removed = [], []
        for value in choices(spec):
            reason = rule(value, facts)
            if reason is None:
                kept.append(value)
            else:
                removed.append(Removal(key.split(".", 1)[1], value, reason))
        for removal in removed:
            log.info("search space %s: %s", space.source, removal)
        removals.extend(removed)
        if not kept:
            why = "; ".join(f"{_show(r.value)}: {r.reason}" for r in removed)
            raise ConfigError(
                f"{space.source}: {key} has no value this machine can run ({why}); add "
                f"{_SAFE_VALUE[key]} to {key}, or remove the dimension to keep the baseline's "
                f"value."
            )
        if removed:
            group, name = key.split(".", 1)
            updates.setdefault(group, {})[name] = kept
    if not updates:
        return space, removals
    restricted = space.model_copy(
        update={
            group: getattr(space, group).model_copy(update=fields)
            for group, fields in updates.items()
        }
    )
    return restricted, removals


class MemoryVerdict(_Closed):
    """Whether a configuration's predicted peak memory fits the budget (prune before pay)."""

    fits: bool
    predicted_bytes: float | None = Field(description="Predicted peak; None without a model.")
    budget_bytes: float | None = Field(description="The budget; None when unknown.")
    reason: str


def check_memory(
    config: TrainConfig,
    predict_peak_bytes: Callable[[int], float] | None,
    budget_bytes: float | None,
    *,
    ranks_share_memory: bool = False,
) -> MemoryVerdict:
    """Whether ``config`` fits ``budget_bytes`` by the profiler's memory model.

    ``predict_peak_bytes(micro_batch_size)`` is one rank's peak for the config's precision
    and checkpointing (the profiler's variant). With ``ranks_share_memory`` (CPU: every
    rank lives in the same RAM) the prediction is multiplied by the world size. Without a
    model or a budget nothing is pruned: the trial runs and an OOM is recorded as such.
    """
    if predict_peak_bytes is None or budget_bytes is None:
        missing = "memory model" if predict_peak_bytes is None else "memory budget"
        return MemoryVerdict(
            fits=True,
            predicted_bytes=None,
            budget_bytes=budget_bytes,
            reason=f"no {missing}: not pruned, the trial will tell",
        )
    per_rank = float(predict_peak_bytes(config.micro_batch_size))
    ranks = config.world_size if ranks_share_memory else 1
    predicted = per_rank * ranks
    what = (
        f"micro_batch_size={config.micro_batch_size}, {config.precision}, checkpointing "
        f"{_show(config.activation_checkpointing)}"
    )
    total = f"{ranks} ranks x {_bytes(per_rank)} = {_bytes(predicted)}" if ranks > 1 else None
    shown = total or _bytes(predicted)
    if predicted > budget_bytes:
        return MemoryVerdict(
            fits=False,
            predicted_bytes=predicted,
            budget_bytes=budget_bytes,
            reason=f"predicted peak {shown} ({what}) exceeds the budget {_bytes(budget_bytes)}",
        )
    return MemoryVerdict(
        fits=True,
        predicted_bytes=predicted,
        budget_bytes=budget_bytes,
        reason=f"predicted peak {shown} ({what}) fits the budget {_bytes(budget_bytes)}",
    )


def _per_epoch(config: TrainConfig, dataset_size: int) -> int:
    """Whole micro-batches an epoch gives each rank (the runtime's ``batches_per_epoch``)."""
    return (dataset_size // config.world_size) // config.micro_batch_size


def short_dataset(config: TrainConfig, dataset_size: int | None) -> str | None:
    """Why ``config`` cannot start on a dataset of ``dataset_size`` samples (an epoch holds
    no micro-batch for each rank: the runtime's ConfigError), or None; None where the size
    is unknown (an IterableDataset)."""
    if dataset_size is None:
        return None
    micro, world = config.micro_batch_size, config.world_size
    if _per_epoch(config, dataset_size) == 0:
        return (
            f"micro_batch_size={micro} x world_size={world} needs {micro * world} samples, "
            f"but the dataset has only {dataset_size}"
        )
    return None


def epoch_overrun(config: TrainConfig, dataset_size: int | None) -> str | None:
    """Why one optimizer step of ``config`` would draw more than an epoch, or None.

    Each rank gets ``dataset_size // world_size`` samples of an epoch, in whole
    micro-batches (the runtime's order). A step needs ``grad_accum_steps`` micro-batches
    per rank: with fewer in an epoch it takes some samples twice, a larger batch's cost
    with no new data in its gradient. Includes :func:`short_dataset`'s reason.
    """
    if dataset_size is None:
        return None
    micro, world, accum = config.micro_batch_size, config.world_size, config.grad_accum_steps
    per_epoch = _per_epoch(config, dataset_size)
    if per_epoch == 0 or accum <= per_epoch:
        return short_dataset(config, dataset_size)
    whom = "" if world == 1 else f"each of the {world} ranks "
    batches = "1 micro-batch" if per_epoch == 1 else f"{per_epoch} micro-batches"
    return (
        f"a global batch of {config.global_batch} is more than an epoch: the dataset's "
        f"{dataset_size} samples give {whom}{batches} of {micro}, fewer than "
        f"grad_accum_steps={accum}, so every step would take some samples twice"
    )


# --- Optuna ----------------------------------------------------------------------------


def encode_checkpointing(value: ActivationCheckpointing | Mapping[str, int]) -> str:
    """``"none"``/``"full"`` as is, ``{every_k: k}`` as ``"every_k:k"`` (Optuna categoricals)."""
    if isinstance(value, EveryK):
        return f"every_k:{value.every_k}"
    if isinstance(value, Mapping):
        return encode_checkpointing(EveryK.model_validate(dict(value)))
    if value in ("none", "full"):
        return value
    raise ValueError(f"activation_checkpointing must be 'none', 'full' or every_k, got {value!r}.")


def decode_checkpointing(text: str) -> ActivationCheckpointing:
    """The inverse of :func:`encode_checkpointing`."""
    if text in ("none", "full"):
        return "none" if text == "none" else "full"
    prefix, _, k = text.partition(":")
    if prefix == "every_k" and k.isdigit() and int(k) >= 1:
        return EveryK(every_k=int(k))
    raise ValueError(
        f"an encoded activation_checkpointing must be 'none', 'full' or 'every_k:<k>' with "
        f"k >= 1, but got {text!r}."
    )


def _encode(name: str, value: Any) -> Any:
    return encode_checkpointing(value) if name == "activation_checkpointing" else value


def _decode(name: str, value: Any) -> Any:
    return decode_checkpointing(value) if name == "activation_checkpointing" else value


def _suggest_group(trial: optuna.Trial, section: BaseModel) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in type(section).model_fields:
        spec = getattr(section, name)
        if spec is None:
            continue
        encoded = [_encode(name, v) for v in choices(spec)]
        values[name] = _decode(name, trial.suggest_categorical(name, encoded))
    return values


def suggest_systems(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Phase-1 values for ``trial``: one categorical per searched systems dimension.

    Discrete dimensions are categoricals (a powers-of-two range is expanded), so the same
    names and choices also drive :class:`optuna.samplers.GridSampler` (:func:`systems_grid`).
    Checkpointing's ``{every_k: k}`` travels as ``"every_k:k"`` and comes back decoded.
    """
    return _suggest_group(trial, space.systems)


def systems_grid(space: SearchSpace) -> dict[str, list[Any]]:
    """The systems dimensions as a :class:`optuna.samplers.GridSampler` search space."""
    return {
        name: [_encode(name, v) for v in choices(spec)]
        for name in SystemsSpace.model_fields
        if (spec := getattr(space.systems, name)) is not None
    }


def suggest_convergence(
    trial: optuna.Trial, space: SearchSpace, systems: Mapping[str, Any]
) -> dict[str, Any]:
    """Phase-2 values for ``trial``, given the fixed phase-1 ``systems`` values.

    The LR is log-uniform; a relative LR is suggested as ``lr_multiplier`` and the values
    carry ``lr_scaling`` so :func:`to_train_config` can resolve it against the baseline.
    ``min_lr_ratio`` is only suggested for decaying schedules (a conditional parameter).
    When the global batch is known it is recorded as the trial's ``global_batch_size``.
    """
    section = space.convergence
    values: dict[str, Any] = {}
    if section.grad_accum_steps is not None:
        values["grad_accum_steps"] = trial.suggest_categorical(
            "grad_accum_steps", choices(section.grad_accum_steps)
        )
    if section.lr is not None:
        lr = section.lr
        values[lr.param] = trial.suggest_float(lr.param, lr.low, lr.high, log=lr.log)
        if lr.relative:
            values["lr_scaling"] = lr.scaling
    if section.schedule is not None:
        values["schedule"] = trial.suggest_categorical("schedule", list(section.schedule))
    if section.warmup_fraction is not None:
        w = section.warmup_fraction
        values["warmup_fraction"] = trial.suggest_float("warmup_fraction", w.low, w.high, log=w.log)
    if section.min_lr_ratio is not None and values.get("schedule") != "constant":
        r = section.min_lr_ratio
        values["min_lr_ratio"] = trial.suggest_float("min_lr_ratio", r.low, r.high, log=r.log)
    if section.weight_decay is not None:
        d = section.weight_decay
        values["weight_decay"] = trial.suggest_float("weight_decay", d.low, d.high, log=d.log)
    micro, world = systems.get("micro_batch_size"), systems.get("world_size", 1)
    if micro is not None:
        trial.set_user_attr(
            "global_batch_size", int(micro) * int(values.get("grad_accum_steps", 1)) * int(world)
        )
    return values


def encode_params(values: Mapping[str, Any]) -> dict[str, Any]:
    """Suggested values -> Optuna params (for ``study.enqueue_trial``); the inverse of
    :func:`decode_params`. Values that are not trial parameters (``lr_scaling``) are dropped.
    """
    return {k: _encode(k, v) for k, v in values.items() if k != "lr_scaling"}


def decode_params(params: Mapping[str, Any], space: SearchSpace) -> dict[str, Any]:
    """A finished trial's ``params`` -> the values :func:`to_train_config` takes."""
    values = {k: _decode(k, v) for k, v in params.items()}
    lr = space.convergence.lr
    if "lr_multiplier" in values and lr is not None and lr.relative:
        values["lr_scaling"] = lr.scaling
    return values


# --- scaling rules ---------------------------------------------------------------------

# Goyal et al. warm up 5 of 90 epochs for a 32x larger batch (5 doublings): ~1% of the run
# per doubling. Tuning runs are short and noisy, so give 2% per doubling, ...
WARMUP_FRACTION_PER_DOUBLING = 0.02
# ... capped at a fifth of the run, the top of the bundled spaces' warmup ranges.
MAX_WARMUP_FRACTION = 0.2


def scaling_rule_for(optimizer: OptimizerName) -> ScalingRule:
    """The LR scaling rule an optimizer follows: ``linear`` for SGD, ``sqrt`` otherwise."""
    return "linear" if optimizer == "sgd" else "sqrt"


def scaled_lr(base_lr: float, base_batch: int, batch: int, rule: ScalingRule = "sqrt") -> float:
    """The learning rate for global ``batch``, given one tuned at ``base_batch``.

    - ``linear``: ``lr x batch/base`` (Goyal et al. 2017, "Accurate, Large Minibatch SGD:
      Training ImageNet in 1 Hour"): for SGD, together with a gradual warmup
      (:func:`warmup_for`).
    - ``sqrt``: ``lr x sqrt(batch/base)`` (Malladi et al. 2022, "On the SDEs and Scaling
      Rules for Adaptive Gradient Algorithms"): for Adam-type optimizers.
    - ``none``: unchanged.
    """
    if base_lr <= 0 or base_batch < 1 or batch < 1:
        raise ValueError(
            f"scaled_lr needs base_lr > 0 and batches >= 1, but got base_lr={base_lr}, "
            f"base_batch={base_batch}, batch={batch}."
        )
    ratio = batch / base_batch
    if rule == "linear":
        return base_lr * ratio
    if rule == "sqrt":
        return base_lr * math.sqrt(ratio)
    if rule == "none":
        return base_lr
    raise ValueError(f"rule must be 'linear', 'sqrt' or 'none', but got {rule!r}.")


def warmup_for(batch: int, base_batch: int, steps: int) -> int:
    """Warmup steps for a run of ``steps`` at global ``batch``, scaled from ``base_batch``.

    Goyal et al. 2017 pair the linear LR scaling with a gradual warmup that lets the large
    LR start safely: here WARMUP_FRACTION_PER_DOUBLING of the run per doubling of the batch
    over the base, at most MAX_WARMUP_FRACTION, and none at or below the base batch. Always
    fewer than ``steps`` (a schedule needs a step after warmup).
    """
    if batch < 1 or base_batch < 1 or steps < 1:
        raise ValueError(
            f"warmup_for needs batches and steps >= 1, but got batch={batch}, "
            f"base_batch={base_batch}, steps={steps}."
        )
    if batch <= base_batch:
        return 0
    fraction = min(
        MAX_WARMUP_FRACTION, WARMUP_FRACTION_PER_DOUBLING * math.log2(batch / base_batch)
    )
    return min(round(fraction * steps), steps - 1)


def convergence_seed(
    space: SearchSpace,
    base: TrainConfig,
    systems: Mapping[str, Any],
    grad_accum_steps: int,
    steps: int,
) -> dict[str, Any]:
    """Optuna params (for ``study.enqueue_trial``) that follow the known scaling rules.

    For the global batch that ``systems`` and ``grad_accum_steps`` give: the LR from
    :func:`scaled_lr` (multiplier 1.0 when the range is relative) and the warmup from
    :func:`warmup_for`, each clipped into the space's range.
    """
    section = space.convergence
    grad_accum_steps = allowed_accum(space, grad_accum_steps)
    micro = int(systems.get("micro_batch_size", base.micro_batch_size))
    world = int(systems.get("world_size", base.world_size))
    batch = micro * grad_accum_steps * world
    params: dict[str, Any] = {}
    if section.grad_accum_steps is not None:
        params["grad_accum_steps"] = grad_accum_steps
    if section.lr is not None:
        lr = section.lr
        if lr.relative:
            params["lr_multiplier"] = _clip(1.0, lr)
        else:
            rule = scaling_rule_for(base.optimizer.name)
            params["lr"] = _clip(scaled_lr(base.optimizer.lr, base.global_batch, batch, rule), lr)
    if section.schedule is not None:
        name = base.schedule.name
        params["schedule"] = name if name in section.schedule else section.schedule[0]
    if section.warmup_fraction is not None:
        fraction = warmup_for(batch, base.global_batch, steps) / steps
        params["warmup_fraction"] = _clip(fraction, section.warmup_fraction)
    return params


def allowed_accum(space: SearchSpace, wanted: int) -> int:
    """``wanted`` where the space's ``grad_accum_steps`` choices hold it (or it searches
    none), else the nearest choice by ratio, the smaller on a tie: a seed at accumulation 1
    in a space of ``[4, 8]`` stopped the search with Optuna's "'1' not in (4, 8)"."""
    spec = space.convergence.grad_accum_steps
    if spec is None:
        return wanted
    options = [int(value) for value in choices(spec)]
    if wanted in options:
        return wanted
    return min(options, key=lambda value: (abs(math.log(value / wanted)), value))


def lr_seed_value(lr: LrRange, base: TrainConfig, batch: int, value: float) -> float:
    """The parameter (``lr``, or ``lr_multiplier`` when ``lr`` is relative) that gives the
    learning rate ``value`` at global ``batch``, clipped into the range."""
    raw = value / _rule_lr(base, batch, lr.scaling) if lr.relative else value
    return _clip(raw, lr)


def _rule_lr(base: TrainConfig, batch: int, scaling: ScalingRule | Literal["auto"]) -> float:
    """The baseline's LR scaled to ``batch`` by ``scaling`` (``auto``: the optimizer's)."""
    rule = scaling_rule_for(base.optimizer.name) if scaling == "auto" else scaling
    return scaled_lr(base.optimizer.lr, base.global_batch, batch, rule)


def _clip(value: float, bounds: FloatRange) -> float:
    return min(max(value, bounds.low), bounds.high)


# --- values -> TrainConfig -------------------------------------------------------------

_TOP_LEVEL = (
    "micro_batch_size",
    "grad_accum_steps",
    "world_size",
    "precision",
    "activation_checkpointing",
    "compile",
)


def to_train_config(values: Mapping[str, Any], base: TrainConfig, steps: int) -> TrainConfig:
    """The validated :class:`TrainConfig` for ``values`` (from ``suggest_*``) over ``base``.

    Dimensions not in ``values`` keep ``base``'s value. The schedule spans ``steps``
    (``total_steps``), warmup is ``round(warmup_fraction x steps)`` (at most steps - 1),
    the global batch is recomputed as micro x accum x world, and a relative LR is
    ``lr_multiplier x scaled_lr(base lr, base global batch, new global batch)``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, but got {steps}.")
    known = {*_TOP_LEVEL, "lr", "lr_multiplier", "lr_scaling", "schedule", "warmup_fraction"}
    known |= {"min_lr_ratio", "weight_decay"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"to_train_config does not know the value(s) {', '.join(unknown)}; map them onto "
            f"TrainConfig in autotune.space.to_train_config."
        )
    data = base.model_dump()
    data.pop("global_batch_size")  # recomputed from the new micro x accum x world
    for name in _TOP_LEVEL:
        if name in values:
            value = values[name]
            if name == "activation_checkpointing" and isinstance(value, str):
                value = decode_checkpointing(value)
            data[name] = value.model_dump() if isinstance(value, BaseModel) else value
    optimizer, schedule = data["optimizer"], data["schedule"]
    if "lr" in values:
        optimizer["lr"] = float(values["lr"])
    elif "lr_multiplier" in values:
        batch = data["micro_batch_size"] * data["grad_accum_steps"] * data["world_size"]
        seed = _rule_lr(base, batch, values.get("lr_scaling", "auto"))
        optimizer["lr"] = float(values["lr_multiplier"]) * seed
    if "weight_decay" in values:
        optimizer["weight_decay"] = float(values["weight_decay"])
    if "schedule" in values:
        schedule["name"] = values["schedule"]
    if "min_lr_ratio" in values:
        schedule["min_lr_ratio"] = float(values["min_lr_ratio"])
    if "warmup_fraction" in values:
        schedule["warmup_steps"] = min(round(float(values["warmup_fraction"]) * steps), steps - 1)
    schedule["total_steps"] = steps
    return validate_train_config(data, "search values")


# --- formatting ------------------------------------------------------------------------


def _show(value: Any) -> str:
    if isinstance(value, EveryK):
        return f"{{every_k: {value.every_k}}}"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _bytes(value: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(value) >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"
