"""A step larger than an epoch is not run: on a small dataset the search prunes, before any
process starts, the systems configs whose ranks get no micro-batch and the convergence
trials whose accumulation would take samples twice within one step (was: mlp_digits'
search ran micro 256 x accum 8 = 2,048 on its 1,797 samples, and a 40-sample task's ran a
global batch of 256)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import optuna
import pytest

from autotune import space as spaces
from autotune.config import TrainConfig
from autotune.search._convergence import ConvergencePlan, _run_one
from autotune.search._progress import trial_line
from autotune.search._study import NOT_RUN, counted
from autotune.search._systems import nothing_fits, predict_systems
from autotune.search._types import BaselineRun, Measured


def _config(micro: int, accum: int = 1, world: int = 1) -> TrainConfig:
    return TrainConfig(
        micro_batch_size=micro,
        grad_accum_steps=accum,
        world_size=world,
        optimizer={"lr": 1e-2},
    )


@pytest.mark.parametrize(
    ("micro", "accum", "world", "size", "said"),
    [
        (8, 5, 1, 40, None),  # exactly one epoch per step
        (8, 4, 2, 64, None),  # 32 samples per rank: 4 micro-batches each
        (8, 3, 2, 40, "give each of the 2 ranks 2 micro-batches of 8, fewer than "),
        (16, 4, 1, 40, "a global batch of 64 is more than an epoch: the dataset's 40 "),
        (32, 1, 2, 40, "micro_batch_size=32 x world_size=2 needs 64 samples, but the "),
        (512, 8, 1, None, None),  # an IterableDataset: no epoch to exceed
    ],
)
def test_a_step_is_checked_against_one_epoch_per_rank(
    micro: int, accum: int, world: int, size: int | None, said: str | None
) -> None:
    reason = spaces.epoch_overrun(_config(micro, accum, world), size)
    if said is None:
        assert reason is None
    else:
        assert reason is not None and said in reason, reason


def test_the_systems_phase_only_needs_a_micro_batch_per_rank() -> None:
    # accumulation is the convergence phase's: a systems run of it only times the step
    assert spaces.short_dataset(_config(16, accum=8), 40) is None
    assert spaces.short_dataset(_config(16, world=2), 40) is None
    assert spaces.short_dataset(_config(32, world=2), 40) is not None


def _report() -> Any:
    """What predict_systems reads: every variant viable, fast and small."""
    variant = SimpleNamespace(
        viable=True,
        predict_peak_bytes=lambda micro: 1000.0 * micro,
        predict_samples_per_s=lambda micro: 100.0 * micro,
    )
    return SimpleNamespace(
        memory_budget=SimpleNamespace(budget_bytes=1e12),
        hardware=SimpleNamespace(device=SimpleNamespace(kind="cpu")),
        variant=lambda precision, mode: variant,
    )


def test_systems_configs_whose_ranks_get_no_micro_batch_are_pruned_with_the_reason() -> None:
    space = spaces.parse_space(
        {
            "schema_version": 1,
            "systems": {"micro_batch_size": [8, 16, 32], "world_size": [1, 2]},
        }
    )
    predicted = predict_systems(space, _report(), _config(8), dataset_size=40)
    ran = {(c.config.micro_batch_size, c.config.world_size) for c in predicted.fitting}
    assert ran == {(8, 1), (16, 1), (32, 1), (8, 2), (16, 2)}
    assert predicted.over_memory == []
    assert len(predicted.short_of_data) == 1
    values, reason = predicted.pruned[0]  # the study records it as PRUNED, with the reason
    assert (values["micro_batch_size"], values["world_size"]) == (32, 2)
    assert reason == (
        "micro_batch_size=32 x world_size=2 needs 64 samples, but the dataset has only 40"
    )
    # without a size (an IterableDataset) nothing is pruned for it
    assert len(predict_systems(space, _report(), _config(8)).fitting) == 6


def test_a_space_whose_every_config_needs_more_samples_than_the_dataset_stops_with_the_fix() -> (
    None
):
    space = spaces.parse_space(
        {"schema_version": 1, "systems": {"micro_batch_size": [64], "world_size": [2]}}
    )
    predicted = predict_systems(space, _report(), _config(8), dataset_size=100)
    said = nothing_fits(predicted, _report())
    assert said == (
        "no config in the search space can start: micro_batch_size=64 x world_size=2 needs "
        "128 samples, but the dataset has only 100. Give a --space with smaller "
        "micro_batch_size and world_size values, or a larger dataset."
    )


class _NeverRun:
    """A Trialist stand-in: a pruned-before-paying trial must start no process."""

    startup_s = 0.0

    def run(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("the trial ran a process")


def _plan(space: spaces.SearchSpace, systems: Measured, dataset_size: int) -> ConvergencePlan:
    losses = [0.7 - 0.001 * k for k in range(100)]
    base_run = Measured(
        train=_config(8),
        losses=losses,
        elapsed_s=[0.01 * (k + 1) for k in range(100)],
        samples_per_s=800.0,
    )
    baseline = BaselineRun(run=base_run, steps=100, target_loss=0.65, target_from="baseline")
    return ConvergencePlan(
        space, _config(8), [systems], baseline, None, 0.0, dataset_size=dataset_size
    )


def test_a_convergence_trial_past_an_epoch_is_pruned_unrun_and_not_counted() -> None:
    space = spaces.parse_space(
        {
            "schema_version": 1,
            "systems": {"micro_batch_size": [16]},
            "convergence": {"grad_accum_steps": [1, 4], "lr": {"low": 1e-3, "high": 1e-1}},
        }
    )
    systems = Measured(train=_config(16), losses=[0.7], elapsed_s=[0.01], samples_per_s=1600.0)
    study = optuna.create_study()
    study.enqueue_trial({"grad_accum_steps": 4, "lr": 1e-2})
    trial = study.ask()
    frozen = _run_one(_plan(space, systems, 40), trial, systems, _NeverRun(), 1.0)  # type: ignore[arg-type]
    assert frozen.state == optuna.trial.TrialState.PRUNED
    assert frozen.user_attrs["status"] == "PRUNED"
    assert frozen.user_attrs[NOT_RUN] is True
    assert frozen.user_attrs["pruned_by"] == (
        "not run (a global batch of 64 is more than an epoch: the dataset's 40 samples give "
        "2 micro-batches of 16, fewer than grad_accum_steps=4, so every step would take some "
        "samples twice)"
    )
    assert "pruned: not run (a global batch of 64" in trial_line(frozen)
    assert counted(study) == []  # it cost nothing: --trials and the patience skip it


def test_a_search_whose_every_trial_was_past_an_epoch_says_so() -> None:
    """Was: "no trial reached the target loss; give a larger --budget", where no trial ran."""
    from autotune.search import missed_target

    study = optuna.create_study()
    for _ in range(2):
        trial = study.ask()
        trial.set_user_attr(NOT_RUN, True)
        trial.set_user_attr("pruned_by", "not run (a global batch of 128 is more than an epoch)")
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    systems = Measured(train=_config(32), losses=[0.7], elapsed_s=[0.01], samples_per_s=1.0)
    space = spaces.parse_space({"schema_version": 1, "systems": {"micro_batch_size": [32]}})
    said = missed_target(study, _plan(space, systems, 40).baseline)
    assert said == (
        "no trial could run: each one's step took more than an epoch (trial 0: a global batch "
        "of 128 is more than an epoch). Give a --space with smaller grad_accum_steps (or "
        "micro_batch_size) values, or a larger dataset."
    )
