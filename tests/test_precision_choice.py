"""Which precision each measured micro-batch runs in: the fitted ratio over the sizes, not
one noisy measurement (autotune/search/_precision.py)."""

from __future__ import annotations

import math

import optuna
import pytest

from autotune import space as spaces
from autotune.config import TrainConfig
from autotune.search._convergence import (
    ConvergencePlan,
    _run_one,
    fastest_realisation,
    systems_choices,
)
from autotune.search._precision import earned_precisions, monotone_fit, settled
from autotune.search._types import BaselineRun, Measured


def _run(micro: int, rate: float, precision: str = "bf16-mixed", accum: int = 1) -> Measured:
    train = TrainConfig(
        micro_batch_size=micro, grad_accum_steps=accum, precision=precision, optimizer={"lr": 1e-3}
    )
    return Measured(train=train, losses=[2.0, 1.0], elapsed_s=[0.1, 0.2], samples_per_s=rate)


# cnn_digits' systems phase in grid_bench_cnn_digits_bf16_192_d7.txt (AVX512-BF16 AMD host):
# bf16 over fp32 1.33x at micro 16, 0.98x at 64, 1.69x at 256.
CNN_D7 = [
    _run(256, 9_976.6),
    _run(64, 5_991.9, "32-true"),
    _run(256, 5_906.1, "32-true"),
    _run(64, 5_865.9),
    _run(16, 4_899.2),
    _run(16, 3_687.5, "32-true"),
]


def _precisions(chosen: list[Measured]) -> dict[int, str]:
    return {m.train.micro_batch_size: m.train.precision for m in chosen}


def test_one_slow_measurement_does_not_take_a_precision_from_its_size() -> None:
    # As measured, micro 64 goes to fp32 (its bf16 twin at 0.98x); between 1.33x and
    # 1.69x the monotone fit puts it at 1.14x, over the 1.10x margin.
    assert _precisions(systems_choices(CNN_D7, anchor=16))[64] == "32-true"
    chosen = systems_choices(settled(CNN_D7), anchor=16)
    assert _precisions(chosen) == {16: "bf16-mixed", 64: "bf16-mixed", 256: "bf16-mixed"}
    bf16 = {m.train.micro_batch_size: m for m in settled(CNN_D7) if m.train.precision != "32-true"}
    assert bf16[64].samples_per_s == pytest.approx(math.sqrt(5_991.9 * 5_865.9 * 1.14), 3e-3)


def test_settling_keeps_each_pairs_geometric_mean_and_the_order_fastest_first() -> None:
    runs = settled(CNN_D7)
    assert [r.samples_per_s for r in runs] == sorted((r.samples_per_s for r in runs), reverse=True)
    twins_64 = [r.samples_per_s for r in runs if r.train.micro_batch_size == 64]
    assert math.prod(twins_64) == pytest.approx(5_991.9 * 5_865.9)
    ratio = max(twins_64) / min(twins_64)
    assert ratio == pytest.approx(math.sqrt(1.33 * 0.98), rel=0.01)  # 16 and 64 pooled


def test_monotone_ratios_are_left_as_measured() -> None:
    # mlp_digits (grid_bench_mlp_digits_bf16_192_d7.txt): 0.55x, 1.08x, 1.05x; the fit
    # pools 64 and 256 at 1.06x, still under the margin: fp32 keeps both.
    mlp = [
        _run(256, 117_835.9),
        _run(256, 112_728.4, "32-true"),
        _run(64, 51_015.4),
        _run(64, 47_254.8, "32-true"),
        _run(16, 19_656.2, "32-true"),
        _run(16, 10_900.2),
    ]
    assert _precisions(systems_choices(settled(mlp), anchor=16)) == {
        16: "32-true",
        64: "32-true",
        256: "32-true",
    }
    rising = [_run(16, 110), _run(16, 100, "32-true"), _run(64, 150), _run(64, 100, "32-true")]
    expected = [rising[2], rising[0], rising[1], rising[3]]  # fastest first, not copies
    assert all(a is b for a, b in zip(settled(rising), expected, strict=True))


def test_two_sizes_and_runs_without_a_twin_are_never_changed() -> None:
    two = [_run(64, 90), _run(64, 100, "32-true"), _run(16, 130), _run(16, 100, "32-true")]
    assert {r.samples_per_s for r in settled(two)} == {90, 100, 130}
    lone = [_run(64, 111), _run(16, 50), _run(256, 80, "32-true", accum=2)]
    assert [r.samples_per_s for r in settled(lone)] == [111, 80, 50]


def test_twins_of_another_step_form_their_own_curve() -> None:
    # accumulation 2's twins do not smooth accumulation 1's
    runs = [
        _run(16, 133),
        _run(16, 100, "32-true"),
        _run(64, 98),
        _run(64, 100, "32-true"),
        _run(256, 169, accum=2),
        _run(256, 100, "32-true", accum=2),
    ]
    assert {r.samples_per_s for r in settled(runs)} == {133, 100, 98, 169}


def test_a_falling_ratio_is_fitted_falling() -> None:
    assert monotone_fit([0.5, 0.1, 0.2]) == pytest.approx([0.5, 0.15, 0.15])
    assert monotone_fit([0.1, 0.3, 0.2, 0.6]) == pytest.approx([0.1, 0.25, 0.25, 0.6])
    assert monotone_fit([]) == []


def test_a_settled_precision_realises_larger_accumulated_batches() -> None:
    # fp32 micro 16 x 4 runs on the fastest micro-batch that computes it: micro 64, now in
    # bf16, where the raw measurements kept it in fp32.
    values = {"micro_batch_size": 16, "precision": "32-true", "grad_accum_steps": 4}
    chosen = CNN_D7[5]
    _, raw = fastest_realisation(values, chosen, CNN_D7)
    assert (raw.train.micro_batch_size, raw.train.precision) == (64, "32-true")
    realised, _ = fastest_realisation(values, chosen, settled(CNN_D7))
    assert (realised["micro_batch_size"], realised["precision"]) == (64, "bf16-mixed")
    assert earned_precisions(settled(CNN_D7)) == settled(CNN_D7)  # all three earned


class _Asked(Exception):
    """Raised by _Recorder with the config a trial would have run."""


class _Recorder:
    """A Trialist stand-in that stops the trial at its run, with the config it got."""

    startup_s = 0.0

    def run(self, config: TrainConfig, *args: object, **kwargs: object) -> None:
        raise _Asked(config)


def _plan(systems: list[Measured]) -> ConvergencePlan:
    base = _run(16, 3_687.5, "32-true").train
    losses = [0.7 - 0.001 * k for k in range(100)]
    run = Measured(
        train=base, losses=losses, elapsed_s=[0.01 * k for k in range(1, 101)], samples_per_s=1e3
    )
    baseline = BaselineRun(run=run, steps=100, target_loss=0.65, target_from="baseline")
    space = spaces.parse_space(
        {
            "schema_version": 1,
            "systems": {"micro_batch_size": [16, 64, 256], "precision": ["32-true", "bf16-mixed"]},
            "convergence": {"grad_accum_steps": [1, 4], "lr": {"low": 1e-3, "high": 1e-1}},
        }
    )
    return ConvergencePlan(space, base, systems, baseline, None, 0.0, dataset_size=1_797)


def test_the_convergence_phase_chooses_and_realises_on_settled_rates() -> None:
    plan = _plan(CNN_D7)
    assert _precisions(plan.choices()) == {16: "bf16-mixed", 64: "bf16-mixed", 256: "bf16-mixed"}
    study = optuna.create_study()
    study.enqueue_trial({"grad_accum_steps": 4, "lr": 1e-2})
    trial = study.ask()
    with pytest.raises(_Asked) as asked:  # fp32 micro 16 x 4 runs as bf16 micro 64 x 1
        _run_one(plan, trial, CNN_D7[5], _Recorder(), 1.0)  # type: ignore[arg-type]
    config = asked.value.args[0]
    assert (config.micro_batch_size, config.grad_accum_steps, config.precision) == (
        64,
        1,
        "bf16-mixed",
    )
