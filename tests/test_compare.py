"""benchmarks/compare.py: hand-picked configs over the Task's baseline, timed to its target."""

from __future__ import annotations

import pytest

from autotune.config import TrainConfig
from benchmarks import compare
from benchmarks._grid import Timed


def _base() -> TrainConfig:
    return TrainConfig(micro_batch_size=16, optimizer={"lr": 3e-4, "weight_decay": 0.1})


def test_a_config_changes_only_what_it_names() -> None:
    config = compare.parse_config("micro=4 lr=1e-3 schedule=cosine warmup=10 steps=400", _base())
    assert config.micro_batch_size == 4 and config.grad_accum_steps == 1
    assert config.optimizer.lr == 1e-3 and config.optimizer.weight_decay == 0.1
    assert (config.schedule.name, config.schedule.warmup_steps) == ("cosine", 10)
    assert config.schedule.total_steps == 400
    assert compare.parse_config("accum=2", _base()).optimizer.lr == 3e-4


def test_an_unknown_key_names_the_keys_there_are() -> None:
    with pytest.raises(compare.CompareError, match="unknown config keys.*micro, accum"):
        compare.parse_config("batch=4", _base())
    with pytest.raises(compare.CompareError, match="need key=value, not \\['micro', '4'\\]"):
        compare.parse_config("micro 4", _base())


def test_speedups_are_per_round_against_the_baseline_and_a_miss_is_left_out() -> None:
    base, other = _base(), compare.parse_config("micro=4", _base())
    timed = [Timed(base, [2.0, 3.0, 2.0]), Timed(other, [1.0, None, 0.5])]
    table = compare._table(timed)
    speedups = list(table.columns[2].cells)
    assert speedups[0] == "1.00x (1.00-1.00, n=3)"
    assert speedups[1] == "3.00x (2.00-4.00, n=2)"
