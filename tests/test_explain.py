"""`autotune.explain`: a measured speed-up split into samples/s and samples to the target."""

from __future__ import annotations

import math
from typing import Any

import pytest

from autotune.config import Rejected, Spread, TunedConfig
from autotune.explain import explain
from tests._tuned import BASELINE, make_tuned


def _spread(median: float) -> Spread:
    return Spread(median=median, low=median * 0.9, high=median * 1.1, n=8)


def _tuned(speedup: float, throughput: float | None, **train: Any) -> TunedConfig:
    """``make_tuned`` with the two measured speed-ups (and the tuned settings) given."""
    tuned = make_tuned(**train)
    assert tuned.measured is not None
    measured = tuned.measured.model_copy(
        update={
            "speedup_spread": _spread(speedup),
            "speedup_vs_baseline": speedup,
            "throughput_speedup": None if throughput is None else _spread(throughput),
        }
    )
    return tuned.model_copy(update={"measured": measured})


def _plain(**overrides: Any) -> dict[str, Any]:
    """Tuned settings equal to the baseline's, apart from ``overrides``."""
    data: dict[str, Any] = {
        "micro_batch_size": 16,
        "grad_accum_steps": 1,
        "precision": "32-true",
        "activation_checkpointing": "none",
        "optimizer": {"name": "adamw", "lr": 1e-3},
        "schedule": {"name": "constant"},
        "gradient_clip_val": None,
    }
    return data | overrides


def test_tiny_gpts_speedup_is_all_fewer_samples_at_a_lower_throughput() -> None:
    """tiny_gpt on the AVX2 host (benchmarks/results/searches/tiny_gpt_avx2_tuned_q.yaml):
    2.62x to the target at 0.76x the samples/s, from batch 16 -> 4 and lr x2."""
    tuned = _tuned(2.62, 0.76, **_plain(micro_batch_size=4, optimizer={"lr": 2e-3}))
    why = explain(tuned)
    assert why is not None
    assert why.samples == pytest.approx(2.62 / 0.76)
    assert why.steps == pytest.approx(2.62 / 0.76 * 4 / 16)  # 0.86: more steps, 4x smaller
    assert why.headline() == (
        "2.62x sooner to loss 0.4321 = 0.76x the samples/s x 3.45x fewer samples to get there"
    )
    assert why.source().startswith("All of it comes from needing fewer samples")
    assert "gives up 24% of the samples/s" in why.source()
    assert why.step_line() == "1.16x as many optimizer steps (of 4 samples, not 16)"
    assert [lever.setting for lever in why.systems] == ["micro-batch"]
    assert [lever.setting for lever in why.optimisation] == ["global batch", "lr"]
    assert why.optimisation[0].line().startswith("global batch 16 -> 4: 4.00x more optimizer")
    assert why.optimisation[1].line() == "lr 0.001 -> 0.002: 2.00x larger steps"


def test_faster_steps_alone_are_told_apart_from_fewer_samples() -> None:
    """mlp_digits (AVX2): 2.65x to the target at 3.37x the samples/s, with 1.27x the samples."""
    tuned = _tuned(2.65, 3.37, **_plain(micro_batch_size=128))
    why = explain(tuned)
    assert why is not None
    assert "x 1.27x more samples to get there" in why.headline()
    assert why.source() == (
        "All of it comes from more samples per second (the systems settings): the tuned config "
        "needs 1.27x the samples but computes them 3.37x as fast."
    )
    assert why.systems[0].line().startswith("micro-batch 16 -> 128: more samples per kernel")


def test_when_both_factors_gain_each_ones_share_is_on_a_log_scale() -> None:
    """cnn_digits (AVX2): 2.49x = 1.27x the samples/s x 1.96x fewer samples."""
    why = explain(_tuned(2.49, 1.27, **_plain(micro_batch_size=32)))
    assert why is not None
    share = math.log(1.27) / math.log(2.49)  # 0.26
    assert why.source() == (
        f"{share:.0%} of it (on a log scale) comes from more samples/s, "
        f"{1 - share:.0%} from fewer samples to the target."
    )


def test_every_changed_setting_is_a_lever_of_its_own_factor_and_no_other() -> None:
    why = explain(_tuned(2.17, 2.03))  # make_tuned: bf16, micro 32 x 2, ckpt, cosine, warmup
    assert why is not None
    assert [lever.setting for lever in why.systems] == [
        "precision",
        "micro-batch",
        "activation checkpointing",
    ]
    assert [lever.setting for lever in why.optimisation] == [
        "global batch",
        "lr",
        "schedule",
        "warmup steps",
    ]
    assert why.systems[0].line() == (
        "precision 32-true -> bf16-mixed: bf16 autocast: half-width matmuls and activations, "
        "fp32 weights"
    )
    assert why.optimisation[0].effect.startswith("4.00x fewer optimizer updates per sample")
    same = explain(_tuned(1.5, 1.5, **_plain()))
    assert same is not None and same.systems == () and same.optimisation == ()
    assert same.step_line() == "about as many optimizer steps as the baseline (of 16 samples)"


def test_a_file_without_the_paired_throughput_ratio_uses_its_two_recorded_rates() -> None:
    why = explain(_tuned(2.17, None))  # 812.5 / 400.0 samples/s
    assert why is not None and why.throughput == pytest.approx(812.5 / 400.0)


def test_a_file_that_cannot_say_why_gets_no_explanation() -> None:
    tuned = make_tuned()
    measured = tuned.measured
    assert measured is not None
    hand_written = TunedConfig(train=BASELINE)
    no_baseline = tuned.model_copy(
        update={"measured": measured.model_copy(update={"baseline": None})}
    )
    never = measured.model_copy(update={"speedup_spread": None, "speedup_vs_baseline": None})
    rejected = Rejected(train=tuned.train, trial=3, speedup=_spread(0.6))
    kept = tuned.model_copy(
        update={"train": BASELINE, "measured": measured.model_copy(update={"rejected": rejected})}
    )
    for tuned_config in (
        hand_written,
        no_baseline,
        tuned.model_copy(update={"measured": never}),
        kept,
    ):
        assert explain(tuned_config) is None


def test_a_slower_tuned_config_is_not_called_faster() -> None:
    why = explain(_tuned(0.9, 0.8, **_plain(micro_batch_size=8)))
    assert why is not None
    assert why.source() == "The tuned config is not faster to the target than the baseline."


def test_the_global_batch_lever_cites_the_probes_noise_scale() -> None:
    tuned = _tuned(2.62, 0.76, **_plain(micro_batch_size=4))
    assert tuned.measured is not None
    measured = tuned.measured.model_copy(update={"gradient_noise_scale": 3.21})
    why = explain(tuned.model_copy(update={"measured": measured}))
    assert why is not None
    scale = "the probe's gradient noise scale (3.21 samples at init; it grows as the loss falls)"
    assert why.optimisation[0].effect.endswith(
        f"; both are above {scale}, where a batch's size moves the samples more than the steps"
    )
    for noise, note in ((128.0, "both are below"), (8.0, "lies between them")):
        update = {"gradient_noise_scale": noise}
        said = explain(tuned.model_copy(update={"measured": measured.model_copy(update=update)}))
        assert said is not None and note in said.optimisation[0].effect
    unmeasured = explain(tuned)
    assert unmeasured is not None and "noise scale of" not in unmeasured.optimisation[0].effect


def test_the_baseline_batch_is_placed_against_the_noise_scale() -> None:
    from autotune.explain import batch_against_noise

    assert batch_against_noise(16, 128.0).startswith("the baseline's batch of 16 is 8.0x below")
    above = batch_against_noise(16, 1.02)  # tiny_gpt's noise scale at init
    assert above.startswith("the baseline's batch of 16 is 15.7x above it at init")
    assert "a smaller batch should need fewer samples" in above
    assert "is near it" in batch_against_noise(16, 20.0)
