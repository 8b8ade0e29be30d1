"""Search spaces: loading, one-line errors, feasibility, Optuna mapping, scaling rules."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import optuna
import pytest

from autotune.config import EveryK, OptimizerConfig, TrainConfig
from autotune.errors import ConfigError
from autotune.space import (
    BUNDLED_SPACES,
    MAX_WARMUP_FRACTION,
    Facts,
    PowerOfTwoRange,
    SearchSpace,
    Viability,
    allowed_accum,
    bundled_space_path,
    check_memory,
    choices,
    convergence_seed,
    decode_checkpointing,
    decode_params,
    encode_checkpointing,
    encode_params,
    load_space,
    parse_space,
    restrict,
    scaled_lr,
    suggest_convergence,
    suggest_systems,
    systems_grid,
    to_train_config,
    warmup_for,
)
from tests.conftest import ROOT

optuna.logging.set_verbosity(optuna.logging.WARNING)

BASE = TrainConfig(micro_batch_size=16, optimizer=OptimizerConfig(name="adamw", lr=1e-3))
CPU2 = Facts(device_kind="cpu", cpu_cores=2)


def _trial(seed: int = 0) -> optuna.Trial:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()


def _space(**sections: Any) -> SearchSpace:
    return parse_space(sections, "test.yaml")


# --- loading -------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUNDLED_SPACES)
def test_bundled_spaces_load_by_name_and_path(name: str) -> None:
    space = load_space(name)
    assert space.source == str(ROOT / "search_spaces" / f"{name}.yaml")
    assert bundled_space_path(name).is_file()
    assert load_space(bundled_space_path(name)) == space
    dims = space.dimensions()
    for key in ("systems.micro_batch_size", "systems.precision", "convergence.lr"):
        assert key in dims
    assert "32-true" in choices(dims["systems.precision"])  # the reference is always there


@pytest.mark.parametrize("name", BUNDLED_SPACES)
def test_every_bundled_value_carries_a_comment(name: str) -> None:
    lines = bundled_space_path(name).read_text().splitlines()
    values = [line for line in lines if re.match(r"\s+(- |\w+: \{)", line)]
    assert values
    for line in values:
        assert " # " in line, f"{name}.yaml: no reason given for `{line.strip()}`"


def test_bundled_spaces_reflect_their_models() -> None:
    cnn, transformer = load_space("cnn"), load_space("transformer")
    assert min(choices(cnn.systems.micro_batch_size)) >= 16  # BatchNorm: no tiny micro-batches
    assert EveryK(every_k=2) in (transformer.systems.activation_checkpointing or [])
    assert set(transformer.convergence.schedule or []) == {"cosine", "onecycle"}
    assert "bf16-mixed" in (transformer.systems.precision or [])


def test_power_of_two_range_expands() -> None:
    assert PowerOfTwoRange(low=8, high=64).values() == [8, 16, 32, 64]
    assert PowerOfTwoRange(low=4, high=4).values() == [4]


BAD_FILES = [
    (
        "systems: {precision: [32-true\n",
        r"bad\.yaml:2: malformed YAML \(expected .*\); fix the syntax\.",
    ),
    ("- 1\n- 2\n", r"bad\.yaml: expected a YAML mapping .* but got list"),
    ("systems: {batch: [8]}\n", r"bad\.yaml: systems\.batch: unknown key; remove it"),
    ("colour: blue\nsystems: {compile: [true]}\n", r"bad\.yaml: colour: unknown key"),
    (
        "systems: {micro_batch_size: [8, 0]}\n",
        r"bad\.yaml: systems\.micro_batch_size\.choices\.1: Input should be greater than or "
        r"equal to 1 \(got 0\)",
    ),
    (
        "systems: {micro_batch_size: []}\n",
        r"bad\.yaml: systems\.micro_batch_size\.choices: must list at least one value; add one",
    ),
    (
        "systems: {precision: []}\n",
        r"bad\.yaml: systems\.precision: must list at least one value",
    ),
    (
        "systems: {world_size: [1, 2, 1]}\n",
        r"systems\.world_size\.choices: lists 1 twice; remove the duplicate",
    ),
    (
        "systems: {micro_batch_size: {low: 64, high: 8}}\n",
        r"systems\.micro_batch_size\.range: low must be <= high, but got low=64, high=8; swap",
    ),
    (
        "systems: {micro_batch_size: {low: 8, high: 100}}\n",
        r"systems\.micro_batch_size\.range: high must be a power of two, but got high=100; "
        r"use 64 or 128",
    ),
    (
        "systems: {micro_batch_size: {low: 8, high: 64, log: false}}\n",
        r"searched over powers of two; set log: true or list the choices",
    ),
    (
        "systems: {micro_batch_size: 32}\n",
        r"systems\.micro_batch_size: must be a list of choices or \{low, high, log: true\} "
        r"\(got 32\)",
    ),
    (
        "systems: {precision: [32-true, fp8]}\n",
        r"systems\.precision\.1: Input should be '32-true', 'bf16-mixed', '16-mixed' or "
        r"'bf16-true' \(got 'fp8'\)",
    ),
    (
        "systems: {activation_checkpointing: [none, {every_k: 0}]}\n",
        r"systems\.activation_checkpointing\.1\.every_k: Input should be greater than or equal "
        r"to 1 \(got 0\)",
    ),
    (
        "systems: {activation_checkpointing: [some]}\n",
        r"systems\.activation_checkpointing\.0: Input should be 'none' or 'full' \(got 'some'\)",
    ),
    (
        "convergence: {lr: {low: 0.1, high: 0.001}}\n",
        r"bad\.yaml: convergence\.lr: low must be <= high, but got low=0\.1, high=0\.001; swap",
    ),
    (
        "convergence: {lr: {low: 0.001, high: 0.1, scaling: sqrt}}\n",
        r"convergence\.lr: scaling: sqrt applies only to a relative range; set relative: true",
    ),
    (
        "convergence: {warmup_fraction: {low: 0.0, high: 1.5}}\n",
        r"convergence\.warmup_fraction\.high: Input should be less than 1 \(got 1\.5\)",
    ),
    (
        "convergence: {warmup_fraction: {low: 0.0, high: 0.1, log: true}}\n",
        r"convergence\.warmup_fraction: a log range needs low > 0, but got low=0; raise low",
    ),
    (
        "convergence: {schedule: [cosine, step]}\n",
        r"convergence\.schedule\.1: Input should be 'constant', 'linear', 'cosine' or "
        r"'onecycle' \(got 'step'\)",
    ),
    ("description: nothing\n", r"bad\.yaml: the space searches no dimension; give systems:"),
]


@pytest.mark.parametrize(("text", "match"), BAD_FILES)
def test_bad_file_is_one_line_naming_file_field_and_fix(
    tmp_path: Path, text: str, match: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_space(path)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(str(path))


def test_missing_file_and_unknown_name() -> None:
    with pytest.raises(ConfigError, match=r"Search space file 'nope/x\.yaml' does not exist"):
        load_space("nope/x.yaml")
    with pytest.raises(
        ConfigError,
        match=r"Search space 'gpt' is neither a file nor a bundled space \(default, "
        r"transformer, cnn\)",
    ):
        load_space("gpt")


# --- feasibility ---------------------------------------------------------------------


def test_restrict_removes_what_the_cpu_cannot_run(caplog: pytest.LogCaptureFixture) -> None:
    facts = Facts(
        device_kind="cpu",
        cpu_cores=2,
        precisions={
            "16-mixed": Viability(viable=False, reason="fp16 matmul peak is 0.05x fp32's"),
            "bf16-mixed": Viability(viable=True, reason="1.8x fp32"),
        },
        checkpoint_blocks=False,
        compile=Viability(viable=False, reason="no C++ compiler for inductor"),
        dataset_size=100,
    )
    with caplog.at_level(logging.INFO, logger="autotune.space"):
        space, removals = restrict(load_space("default"), facts)
    assert space.systems.world_size == [1, 2]
    assert space.systems.precision == ["32-true", "bf16-mixed"]
    assert space.systems.activation_checkpointing == ["none"]
    assert space.systems.compile == [False]
    assert space.systems.micro_batch_size == [4, 8, 16, 32, 64]
    assert space.convergence == load_space("default").convergence
    assert space.source == load_space("default").source
    text = {str(r) for r in removals}
    assert "world_size=4 removed: 4 ranks need 4 CPU cores (one each), but this machine has 2" in (
        text
    )
    assert "precision=16-mixed removed: fp16 matmul peak is 0.05x fp32's" in text
    assert any(
        r.startswith("activation_checkpointing={every_k: 2} removed: the model") for r in text
    )
    assert "compile=true removed: no C++ compiler for inductor" in text
    assert "micro_batch_size=128 removed: the dataset has only 100 samples" in text
    assert len(caplog.records) == len(removals) == 2 + 1 + 2 + 1 + 3


def test_restrict_on_cuda_counts_gpus_not_cores() -> None:
    facts = Facts(device_kind="cuda", device_count=4, cpu_cores=2)
    space, removals = restrict(load_space("default"), facts)
    assert space.systems.world_size == [1, 2, 4]
    assert [str(r) for r in removals] == [
        "world_size=8 removed: 8 ranks need 8 GPUs, but this machine has 4"
    ]


def test_restrict_keeps_a_feasible_space_as_is() -> None:
    space = _space(systems={"world_size": [1, 2]})
    assert restrict(space, CPU2) == (space, [])


@pytest.mark.parametrize(
    ("systems", "facts", "match"),
    [
        (
            {"world_size": [4, 8]},
            CPU2,
            r"test\.yaml: systems\.world_size has no value this machine can run \(4: 4 ranks need "
            r"4 CPU cores .*; add 1 to systems\.world_size, or remove the dimension",
        ),
        (
            {"precision": ["16-mixed"]},
            Facts(
                device_kind="cpu",
                cpu_cores=2,
                precisions={"16-mixed": Viability(viable=False, reason="fp16 is 20x slower")},
            ),
            r"systems\.precision has no value .* \(16-mixed: fp16 is 20x slower\); add 32-true",
        ),
        (
            {"activation_checkpointing": ["full", {"every_k": 2}]},
            Facts(device_kind="cpu", cpu_cores=2, checkpoint_blocks=False),
            r"systems\.activation_checkpointing has no value .*no repeated blocks.*; add none",
        ),
    ],
)
def test_restrict_errors_when_a_dimension_is_emptied(
    systems: dict[str, Any], facts: Facts, match: str
) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        restrict(_space(systems=systems), facts)
    assert "\n" not in str(info.value)


def test_check_memory_prunes_before_paying() -> None:
    config = BASE.model_copy(update={"micro_batch_size": 64, "world_size": 2})

    def predict(batch: int) -> float:
        return 100e6 + 2e6 * batch  # 228 MB at 64

    fits = check_memory(config, predict, 300e6)
    assert fits.fits and fits.predicted_bytes == pytest.approx(228e6)
    assert "fits the budget" in fits.reason
    shared = check_memory(config, predict, 300e6, ranks_share_memory=True)
    assert not shared.fits and shared.predicted_bytes == pytest.approx(456e6)
    assert re.search(
        r"predicted peak 2 ranks x 217 MiB = 435 MiB \(micro_batch_size=64, "
        r"32-true, checkpointing none\) exceeds the budget 286 MiB",
        shared.reason,
    )
    unknown = check_memory(config, None, 300e6)
    assert unknown.fits and unknown.predicted_bytes is None and "no memory model" in unknown.reason
    assert check_memory(config, predict, None).fits


# --- Optuna ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["none", "full", EveryK(every_k=1), EveryK(every_k=2), EveryK(every_k=12)]
)
def test_checkpointing_encoding_round_trips(value: Any) -> None:
    encoded = encode_checkpointing(value)
    assert isinstance(encoded, str)
    assert decode_checkpointing(encoded) == value


def test_checkpointing_encoding_details() -> None:
    assert encode_checkpointing(EveryK(every_k=2)) == "every_k:2"
    assert encode_checkpointing({"every_k": 3}) == "every_k:3"
    for bad in ("every_k:0", "every_k:x", "every:2", "partial"):
        with pytest.raises(ValueError, match="must be 'none', 'full' or 'every_k:<k>'"):
            decode_checkpointing(bad)


def test_suggest_systems_with_a_real_trial() -> None:
    space = load_space("transformer")
    seen = set()
    for seed in range(8):
        trial = _trial(seed)
        values = suggest_systems(trial, space)
        assert set(values) == set(systems_grid(space))
        assert values["micro_batch_size"] in choices(space.systems.micro_batch_size)
        assert values["activation_checkpointing"] in (space.systems.activation_checkpointing or [])
        # Optuna stores the string; the values hold the decoded setting.
        assert trial.params["activation_checkpointing"] == encode_checkpointing(
            values["activation_checkpointing"]
        )
        assert decode_params(trial.params, space) == values
        seen.add(trial.params["activation_checkpointing"])
    assert any(s.startswith("every_k:") for s in seen)


def test_systems_grid_drives_a_grid_sampler() -> None:
    space = _space(
        systems={
            "micro_batch_size": {"low": 8, "high": 16},
            "activation_checkpointing": ["none", {"every_k": 2}],
        }
    )
    grid = systems_grid(space)
    assert grid == {"micro_batch_size": [8, 16], "activation_checkpointing": ["none", "every_k:2"]}
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid, seed=0))
    found: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        found.append(suggest_systems(trial, space))
        return 0.0

    study.optimize(objective, n_trials=4)
    assert len({(v["micro_batch_size"], str(v["activation_checkpointing"])) for v in found}) == 4


def test_suggest_convergence_relative_lr_and_conditional_min_lr() -> None:
    space = load_space("transformer")
    systems = {"micro_batch_size": 32, "world_size": 2}
    for seed in range(6):
        trial = _trial(seed)
        values = suggest_convergence(trial, space, systems)
        lr = space.convergence.lr
        assert lr is not None and lr.relative
        assert lr.low <= values["lr_multiplier"] <= lr.high
        assert values["lr_scaling"] == "sqrt" and "lr_scaling" not in trial.params
        assert values["schedule"] in ("cosine", "onecycle")
        assert 0.02 <= values["warmup_fraction"] <= 0.2
        assert "min_lr_ratio" in values
        assert trial.user_attrs["global_batch_size"] == 32 * values["grad_accum_steps"] * 2
        assert decode_params(trial.params, space) == values

    constant = _space(
        convergence={"schedule": ["constant"], "min_lr_ratio": {"low": 0, "high": 0.5}}
    )
    assert suggest_convergence(_trial(), constant, {}) == {"schedule": "constant"}


def test_suggest_convergence_absolute_lr() -> None:
    space = _space(convergence={"lr": {"low": 1e-4, "high": 1e-2}})
    trial = _trial()
    values = suggest_convergence(trial, space, {})
    assert set(values) == {"lr"} and 1e-4 <= values["lr"] <= 1e-2
    assert to_train_config(values, BASE, 10).optimizer.lr == values["lr"]


@pytest.mark.parametrize("name", BUNDLED_SPACES)
def test_to_train_config_from_suggestions_is_valid(name: str) -> None:
    space = load_space(name)
    for seed in range(5):
        trial = _trial(seed)
        systems = suggest_systems(trial, space)
        values = {**systems, **suggest_convergence(trial, space, systems)}
        config = to_train_config(values, BASE, steps=120)
        product = values["micro_batch_size"] * values["grad_accum_steps"] * values["world_size"]
        assert config.global_batch_size == config.global_batch == product
        assert config.precision == values["precision"]
        assert config.activation_checkpointing == values["activation_checkpointing"]
        assert config.schedule.total_steps == 120
        assert config.schedule.warmup_steps == round(values["warmup_fraction"] * 120)
        rule_lr = scaled_lr(1e-3, 16, product, "sqrt")  # adamw: sqrt
        assert config.optimizer.lr == pytest.approx(values["lr_multiplier"] * rule_lr)
        # The config survives a round trip through its own schema.
        assert TrainConfig.model_validate(config.model_dump()) == config


def test_to_train_config_keeps_the_base_and_clips_warmup() -> None:
    base = BASE.model_copy(update={"grad_accum_steps": 3, "global_batch_size": 48})
    config = to_train_config({"micro_batch_size": 32, "warmup_fraction": 0.99}, base, steps=10)
    assert config.global_batch_size == 32 * 3  # recomputed, not the base's 48
    assert config.schedule.warmup_steps == 9  # < total_steps, always
    assert config.optimizer == BASE.optimizer and config.precision == "32-true"
    sgd = BASE.model_copy(update={"optimizer": BASE.optimizer.model_copy(update={"name": "sgd"})})
    linear = to_train_config({"micro_batch_size": 64, "lr_multiplier": 0.5}, sgd, steps=10)
    assert linear.optimizer.lr == pytest.approx(0.5 * 1e-3 * 4)  # linear rule for SGD
    encoded = to_train_config({"activation_checkpointing": "every_k:2"}, BASE, steps=10)
    assert encoded.activation_checkpointing == EveryK(every_k=2)
    with pytest.raises(ValueError, match="does not know the value"):
        to_train_config({"dropout": 0.1}, BASE, steps=10)


def test_seed_params_follow_the_scaling_rules_and_enqueue() -> None:
    space = load_space("default")
    params = convergence_seed(space, BASE, {"micro_batch_size": 64, "world_size": 1}, 2, steps=100)
    # global batch 128 = 8x the base 16: multiplier 1 (the rule itself), warmup 3 doublings.
    assert params == {
        "grad_accum_steps": 2,
        "lr_multiplier": 1.0,
        "schedule": "constant",
        "warmup_fraction": 0.06,
    }
    study = optuna.create_study()
    study.enqueue_trial(params)
    trial = study.ask()
    values = suggest_convergence(trial, space, {"micro_batch_size": 64})
    assert encode_params(values) == params
    config = to_train_config({"micro_batch_size": 64, **values}, BASE, steps=100)
    assert config.optimizer.lr == pytest.approx(1e-3 * math.sqrt(8))
    assert config.schedule.warmup_steps == 6

    absolute = _space(convergence={"lr": {"low": 1e-4, "high": 2e-3}})
    seeded = convergence_seed(absolute, BASE, {"micro_batch_size": 64}, 1, steps=100)
    assert seeded == {"lr": 2e-3}  # sqrt rule says 2e-3 exactly (4x batch): within the range


def test_a_seed_takes_the_nearest_accumulation_the_space_allows() -> None:
    """A space of grad_accum_steps [4, 8]: the seed at accumulation 1 stopped the search
    with Optuna's "'1' not in (4, 8)" and a traceback."""
    space = _space(convergence={"grad_accum_steps": [4, 8], "lr": {"low": 1e-4, "high": 1e-1}})
    assert allowed_accum(space, 1) == 4
    assert allowed_accum(space, 6) == 8  # nearer by ratio: 8/6 against 6/4
    assert allowed_accum(space, 8) == 8
    assert allowed_accum(_space(convergence={"grad_accum_steps": [1, 4]}), 2) == 1  # a tie
    no_accum = _space(convergence={"lr": {"low": 1e-4, "high": 1e-1}})
    assert allowed_accum(no_accum, 3) == 3  # no accumulation searched: as asked
    seeded = convergence_seed(space, BASE, {"micro_batch_size": 16}, 1, steps=100)
    assert seeded == {"grad_accum_steps": 4, "lr": pytest.approx(2e-3)}  # sqrt rule at 64
    study = optuna.create_study()
    study.enqueue_trial(seeded)
    assert (
        suggest_convergence(study.ask(), space, {"micro_batch_size": 16})["grad_accum_steps"] == 4
    )


# --- scaling rules ---------------------------------------------------------------------


def test_scaling_rules() -> None:
    assert scaled_lr(0.1, 256, 1024, "linear") == pytest.approx(0.4)
    assert scaled_lr(1e-3, 16, 64, "sqrt") == pytest.approx(2e-3)
    assert scaled_lr(1e-3, 64, 16, "sqrt") == pytest.approx(5e-4)
    assert scaled_lr(1e-3, 16, 64, "none") == 1e-3
    with pytest.raises(ValueError, match="base_lr > 0"):
        scaled_lr(0.0, 16, 64)


def test_warmup_rule() -> None:
    assert warmup_for(16, 16, 100) == 0  # no larger than the base: no warmup
    assert warmup_for(8, 16, 100) == 0
    assert warmup_for(32, 16, 100) == 2  # one doubling: 2% of the run
    assert warmup_for(128, 16, 1000) == 60  # three doublings: 6%
    assert warmup_for(16 * 2**20, 16, 1000) == round(MAX_WARMUP_FRACTION * 1000)  # capped
    assert warmup_for(16 * 2**20, 16, 1) == 0  # always fewer than the run's steps
    with pytest.raises(ValueError, match="steps >= 1"):
        warmup_for(16, 16, 0)
