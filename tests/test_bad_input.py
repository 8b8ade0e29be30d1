"""Bad input everywhere: every malformed file, unknown key, out-of-range value or wrong CLI
value given to `autotune run`, `probe` or `search` is one line naming the problem and the
fix, exit status 2, no traceback. Property tests: the config and space schemas accept and
round-trip every valid document and reject every invalid one with a validation error."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from autotune.cli import app
from autotune.config import (
    PRECISIONS,
    TrainConfig,
    TunedConfig,
    load_tuned_config,
    save_tuned_config,
)
from autotune.errors import ConfigError
from autotune.space import SearchSpace, load_space, parse_space
from tests.conftest import TINY_TASK
from tests.test_cli_errors import stderr_of

runner = CliRunner()

# -- the CLI sweep -----------------------------------------------------------------------

FILES = {  # name -> content; "<dir>" is a directory passed where a file belongs
    "malformed.yaml": "train:\n  micro_batch_size: 8\n  optimizer: {lr: 1e-3\n",
    "unknown-key.yaml": "train: {micro_batch_size: 8, optimizer: {lr: 0.01}, batch: 8}\n",
    "out-of-range.yaml": "train: {micro_batch_size: 0, optimizer: {lr: 0.01}}\n",
    "space-malformed.yaml": "systems: [\n",
    "space-unknown-key.yaml": "systems: {micro_batch_size: [8, 16], batch: [2]}\n",
    "space-out-of-range.yaml": "systems: {micro_batch_size: {low: 0, high: 64, log: true}}\n",
    "space-bad-range.yaml": "convergence: {lr: {low: 0.1, high: 0.01}}\n",
    "dir": "<dir>",
}
# (command line with {task}, {dir} and FILES names as placeholders, what the line must say)
CASES: dict[str, tuple[list[str], str]] = {
    "run-malformed": (["run", "{task}", "-c", "{malformed.yaml}"], r"malformed YAML.*fix"),
    "run-unknown-key": (["run", "{task}", "-c", "{unknown-key.yaml}"], r"unknown key; remove"),
    "run-out-of-range": (["run", "{task}", "-c", "{out-of-range.yaml}"], r">= ?1|equal to 1"),
    "run-config-is-dir": (["run", "{task}", "-c", "{dir}"], r"cannot be read.*pass a readable"),
    "run-task-is-dir": (["run", "{dir}"], r"is a directory; pass the path"),
    "run-steps-0": (["run", "{task}", "--steps", "0"], r"--steps.*see `autotune run --help`"),
    "run-steps-abc": (["run", "{task}", "--steps", "abc"], r"--steps.*see `autotune run --help`"),
    "run-device": (["run", "{task}", "--device", "tpu"], r"must be auto, cpu or cuda"),
    "probe-memory-neg": (["probe", "{task}", "--memory-limit", "-3"], r"expected a size such"),
    "probe-memory-word": (["probe", "{task}", "--memory-limit", "lots"], r"expected a size such"),
    "probe-task-is-dir": (["probe", "{dir}"], r"is a directory; pass the path"),
    "probe-no-task": (["probe", "{missing}"], r"does not exist; pass the path"),
    "search-budget": (["search", "{task}", "--budget", "abc"], r"expected a duration such"),
    "search-budget-neg": (["search", "{task}", "--budget", "-5"], r"--budget"),
    "search-memory": (["search", "{task}", "--memory-limit", "-3"], r"expected a size such"),
    "search-trials-0": (["search", "{task}", "--trials", "0"], r"--trials.*see `autotune"),
    "search-pairs-2": (["search", "{task}", "--confirm-pairs", "2"], r"--confirm-pairs.*see"),
    "search-storage": (["search", "{task}", "--storage", "foo"], r"not a storage URL; use sqlite"),
    "search-storage-dir": (
        ["search", "{task}", "--storage", "journal:///{dir}"],
        r"needs a file path after journal:///",
    ),
    "search-storage-down": (
        ["search", "{task}", "--storage", "postgresql://u:secret@127.0.0.1:1/db"],
        r"cannot be opened .*check the URL",
    ),
    "search-space-malformed": (["search", "{task}", "--space", "{space-malformed.yaml}"],
                               r"malformed YAML.*fix the syntax"),
    "search-space-unknown": (["search", "{task}", "--space", "{space-unknown-key.yaml}"],
                             r"batch: unknown key"),
    "search-space-range": (["search", "{task}", "--space", "{space-out-of-range.yaml}"],
                           r"low.*(greater than or equal to 1|power of two)"),
    "search-space-order": (["search", "{task}", "--space", "{space-bad-range.yaml}"],
                           r"low must be <= high.*swap them"),
    "search-space-dir": (["search", "{task}", "--space", "{dir}"], r"pass a readable YAML"),
    "search-space-name": (["search", "{task}", "--space", "tiny"], r"neither a file nor a bundled"),
    "search-task-is-dir": (["search", "{dir}"], r"is a directory; pass the path"),
}  # fmt: skip
_INFO = re.compile(r"^study storage: ")  # the search's first line, before any error


def _fill(args: list[str], task: Path, tmp_path: Path) -> list[str]:
    names = {"task": str(task), "dir": str(tmp_path / "dir"), "missing": str(tmp_path / "no.py")}
    names |= {name: str(tmp_path / name) for name in FILES}
    return [re.sub(r"\{([^}]+)\}", lambda m: names[m.group(1)], arg) for arg in args]


@pytest.mark.parametrize(("args", "says"), list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_line_with_the_fix_and_exit_2(
    write_task: Callable[[str], Path], tmp_path: Path, args: list[str], says: str
) -> None:
    for name, content in FILES.items():
        if content == "<dir>":
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_text(content)
    result = runner.invoke(app, _fill(args, write_task(TINY_TASK), tmp_path))
    text = stderr_of(result)
    assert result.exit_code == 2, (result.exit_code, text, result.output)
    assert "Traceback" not in text and "Traceback" not in result.output
    lines = [line for line in text.splitlines() if line.strip() and not _INFO.match(line)]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    assert re.search(says, lines[0]), lines[0]
    assert "secret" not in text and "secret" not in result.output


# -- property tests: TrainConfig / TunedConfig -----------------------------------------------

_FLOAT = st.floats(min_value=1e-8, max_value=1e3, allow_nan=False, allow_infinity=False)
_UNIT = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
_CHECKPOINTING = st.one_of(
    st.sampled_from(["none", "full"]), st.builds(lambda k: {"every_k": k}, st.integers(1, 64))
)


@st.composite
def train_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """A valid TrainConfig as YAML would hold it; optional fields sometimes left out."""
    data: dict[str, Any] = {
        "micro_batch_size": draw(st.integers(1, 4096)),
        "optimizer": {"lr": draw(_FLOAT)},
    }
    optional = {
        "grad_accum_steps": st.integers(1, 64),
        "world_size": st.integers(1, 16),
        "precision": st.sampled_from(PRECISIONS),
        "activation_checkpointing": _CHECKPOINTING,
        "compile": st.booleans(),
        "gradient_clip_val": st.one_of(st.none(), _FLOAT),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            data[key] = draw(strategy)
    data["optimizer"] |= draw(
        st.fixed_dictionaries(
            {},
            optional={
                "name": st.sampled_from(["sgd", "adam", "adamw", "adagrad", "rmsprop", "custom"]),
                "weight_decay": st.floats(0.0, 1.0),
                "momentum": st.floats(0.0, 0.99),
            },
        )
    )
    data["schedule"] = draw(_schedules())
    if draw(st.booleans()):
        data["global_batch_size"] = (
            data["micro_batch_size"] * data.get("grad_accum_steps", 1) * data.get("world_size", 1)
        )
    return data


@st.composite
def _schedules(draw: st.DrawFn) -> dict[str, Any]:
    warmup = draw(st.integers(0, 1000))
    schedule: dict[str, Any] = {
        "name": draw(st.sampled_from(["constant", "linear", "cosine", "onecycle"])),
        "warmup_steps": warmup,
        "min_lr_ratio": draw(_UNIT),
    }
    if draw(st.booleans()):
        schedule["total_steps"] = draw(st.integers(warmup + 1, warmup + 10_000))
    return schedule


_JUNK = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)  # fmt: skip
_BOUNDED = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_BOUNDED
@given(train_dicts())
def test_any_valid_train_config_round_trips(data: dict[str, Any]) -> None:
    config = TrainConfig.model_validate(data)
    assert TrainConfig.model_validate(config.model_dump()) == config
    assert TrainConfig.model_validate_json(config.model_dump_json()) == config
    assert config.global_batch_size == config.global_batch


@_BOUNDED
@given(train_dicts(), st.text(min_size=1, max_size=12))
def test_any_valid_tuned_config_round_trips_through_a_yaml_file(
    tmp_path_factory: pytest.TempPathFactory, data: dict[str, Any], task: str
) -> None:
    tuned = TunedConfig(task=task, train=TrainConfig.model_validate(data))
    path = tmp_path_factory.mktemp("tuned") / "tuned.yaml"
    save_tuned_config(tuned, path)
    assert load_tuned_config(path) == tuned


def _mutations() -> st.SearchStrategy[tuple[list[str], Any]]:
    """A path into a train dict and a junk value to put there (or a new, unknown key)."""
    paths = st.sampled_from(
        [
            ["micro_batch_size"], ["grad_accum_steps"], ["world_size"], ["precision"],
            ["activation_checkpointing"], ["compile"], ["optimizer"], ["optimizer", "lr"],
            ["optimizer", "name"], ["schedule", "warmup_steps"], ["schedule", "min_lr_ratio"],
            ["global_batch_size"], ["gradient_clip_val"], ["unknown"], ["optimizer", "unknown"],
        ]
    )  # fmt: skip
    return st.tuples(paths, _JUNK)


def _put(data: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    target = data
    for key in path[:-1]:
        target = target.setdefault(key, {}) if isinstance(target.get(key), dict) else target
    target[path[-1]] = value
    return data


@_BOUNDED
@given(train_dicts(), _mutations())
def test_a_mutated_train_config_is_valid_or_a_validation_error(
    data: dict[str, Any], mutation: tuple[list[str], Any]
) -> None:
    mutated = _put(data, *mutation)
    try:
        TrainConfig.model_validate(mutated)
    except ValidationError:
        return
    assert "unknown" not in mutated and "unknown" not in mutated["optimizer"]


@_BOUNDED
@given(
    train_dicts(),
    st.sampled_from(["micro_batch_size", "grad_accum_steps", "world_size"]),
    st.integers(-1000, 0),
)
def test_out_of_range_counts_are_rejected(data: dict[str, Any], key: str, value: int) -> None:
    data.pop("global_batch_size", None)
    with pytest.raises(ValidationError, match=key):
        TrainConfig.model_validate({**data, key: value})


@_BOUNDED
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_any_config_file_loads_or_is_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, content: str | bytes
) -> None:
    path = tmp_path_factory.mktemp("cfg") / "tuned.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    try:
        load_tuned_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)


# -- property tests: SearchSpace ---------------------------------------------------------------


def _int_dimension() -> st.SearchStrategy[Any]:
    powers = st.tuples(st.integers(0, 12), st.integers(0, 12)).map(sorted)
    return st.one_of(
        st.lists(st.integers(1, 4096), min_size=1, max_size=5, unique=True),
        powers.map(lambda p: {"low": 1 << p[0], "high": 1 << p[1], "log": True}),
    )


def _subset(values: list[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.sampled_from(values), min_size=1, max_size=len(values), unique_by=repr)


def _range(low: float, high: float, **extra: Any) -> st.SearchStrategy[dict[str, Any]]:
    bound = st.floats(low, high, allow_nan=False)
    return st.tuples(bound, bound).map(sorted).map(lambda b: {"low": b[0], "high": b[1], **extra})


SYSTEMS = {
    "micro_batch_size": _int_dimension(),
    "precision": _subset(list(PRECISIONS)),
    "activation_checkpointing": _subset(["none", "full", {"every_k": 2}, {"every_k": 3}]),
    "world_size": st.lists(st.integers(1, 8), min_size=1, max_size=4, unique=True),
    "compile": _subset([False, True]),
}
CONVERGENCE = {
    "grad_accum_steps": _int_dimension(),
    "lr": st.one_of(
        _range(1e-6, 10.0, log=True),
        _range(0.1, 10.0, relative=True, scaling="sqrt"),
        _range(1e-5, 1.0, log=False),
    ),
    "schedule": _subset(["constant", "linear", "cosine", "onecycle"]),
    "warmup_fraction": _range(0.0, 0.99),
    "min_lr_ratio": _range(0.0, 1.0),
    "weight_decay": _range(0.0, 0.5),
}


@st.composite
def space_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """A valid search space document: at least one dimension in some section."""
    systems = draw(st.fixed_dictionaries({}, optional=SYSTEMS))
    convergence = draw(st.fixed_dictionaries({}, optional=CONVERGENCE))
    if not systems and not convergence:
        systems = {"micro_batch_size": draw(_int_dimension())}
    data: dict[str, Any] = {"systems": systems, "convergence": convergence}
    if draw(st.booleans()):
        data["description"] = draw(st.text(max_size=20))
    return data


@_BOUNDED
@given(space_dicts())
def test_any_valid_space_round_trips_through_a_yaml_file(
    tmp_path_factory: pytest.TempPathFactory, data: dict[str, Any]
) -> None:
    space = parse_space(data)
    again = SearchSpace.model_validate(space.model_dump())
    assert again.model_dump() == space.model_dump()
    path = tmp_path_factory.mktemp("space") / "space.yaml"
    path.write_text(yaml.safe_dump(space.model_dump(mode="json", exclude_none=True)))
    assert load_space(path).model_dump() == space.model_dump()


def _space_mutations() -> st.SearchStrategy[tuple[list[str], Any]]:
    paths = st.sampled_from(
        [[section, name] for section, dims in (("systems", SYSTEMS), ("convergence", CONVERGENCE))
         for name in dims] + [["systems", "unknown"], ["unknown"], ["schema_version"]]
    )  # fmt: skip
    return st.tuples(paths, _JUNK)


@_BOUNDED
@given(space_dicts(), _space_mutations())
def test_a_mutated_space_is_valid_or_one_config_error(
    data: dict[str, Any], mutation: tuple[list[str], Any]
) -> None:
    mutated = _put(data, *mutation)
    try:
        parse_space(mutated)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    assert "unknown" not in mutated and "unknown" not in mutated.get("systems", {})


@_BOUNDED
@given(space_dicts(), st.floats(allow_nan=True, allow_infinity=True))
def test_a_learning_rate_range_with_a_bad_low_is_rejected(data: dict[str, Any], low: float) -> None:
    if math.isfinite(low) and low > 0:
        return
    data["convergence"]["lr"] = {"low": low, "high": 1.0}
    with pytest.raises(ConfigError, match="lr"):
        parse_space(data)
