"""profiler: FLOPs, memory and speed fits, precision viability, noise scale, the report."""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import textwrap
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from autotune.config import DeviceInfo
from autotune.errors import ConfigError, TaskError
from autotune.hardware import HardwareInfo, describe_device, probe_hardware
from autotune.profiler import (
    MIN_SPEED_RATIO,
    NOISE_BIG_BATCH,
    NOISE_FLOP_BUDGET,
    NOISE_MAX_BIG_BATCHES,
    NOISE_MIN_BIG_BATCHES,
    BatchProbe,
    ProbeProgress,
    ProbeReport,
    StepTimeModel,
    VariantReport,
    fit_line,
    fit_variant,
    frozen_heap,
    hardware_verdict,
    measure_batch,
    measure_noise_scale,
    memory_budget,
    model_facts,
    noise_batch_count,
    probe,
    probe_config,
    run_options,
    simple_noise_scale,
    speed_ratio,
    speed_ratios,
    speed_verdict,
)
from autotune.task import Task, load_task
from tests.conftest import EXAMPLES, TINY_TASK

# A two-block causal transformer over random tokens: blocks to checkpoint, attention to
# count, and activations large enough that memory grows visibly per sample.
SMALL_GPT = """
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset
from autotune import Task

VOCAB, D, T = 64, 32, 16

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(D)
        self.qkv = nn.Linear(D, 3 * D, bias=False)
        self.mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln(x)).view(b, t, 3, 2, c // 2).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + attended.transpose(1, 2).reshape(b, t, c)
        return x + self.mlp(x)

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, D)
        self.blocks = nn.ModuleList(Block() for _ in range(2))
        self.head = nn.Linear(D, VOCAB, bias=False)

    def forward(self, idx):
        x = self.emb(idx)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

def build_dataset():
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, VOCAB, (512, T + 1), generator=g)
    return TensorDataset(data[:, :-1], data[:, 1:])

def loss_fn(model, batch):
    x, y = batch
    return F.cross_entropy(model(x).float().view(-1, VOCAB), y.reshape(-1))

task = Task(model=Net, dataset=build_dataset, loss=loss_fn, baseline=dict(batch_size=8, lr=1e-3))
"""
SMALL_GPT_LINEAR_PARAMS = 2 * (32 * 96 + 32 * 128 + 128 * 32) + 32 * 64  # qkv, mlp; head


def _task(tmp: Path, source: str, name: str) -> Task:
    path = tmp / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return load_task(path)


@pytest.fixture(scope="module")
def small_gpt(tmp_path_factory: pytest.TempPathFactory) -> Task:
    return _task(tmp_path_factory.mktemp("tasks"), SMALL_GPT, "small_gpt")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Task:
    return _task(tmp_path_factory.mktemp("tasks"), TINY_TASK, "tiny")


def make_hardware(
    peaks: dict[str, float] | None = None, memory_bytes: int | None = 8 * 2**30, **fields: Any
) -> HardwareInfo:
    """A hand-built CPU HardwareInfo: rules are tested without measuring anything."""
    device = describe_device("cpu").model_copy(update={"memory_bytes": memory_bytes})
    values: dict[str, Any] = {
        "device": device,
        "cpu_cores": 2,
        "cpu_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "peak_flops": peaks or {"fp32": 1.9e11, "bf16": 4.0e11, "fp16": 3.0e9},
        "bf16_supported": True,
        "fp16_supported": True,
        "memory_bandwidth_bytes_per_s": 4e10,
        "measured_at": datetime.now(timezone.utc),
        "measure_seconds": 0.0,
    }
    values.update(fields)
    return HardwareInfo(**values)


def make_variant(fixed: int = 1_000_000, per_sample: float = 12_345.6) -> VariantReport:
    return VariantReport(
        precision="32-true",
        activation_checkpointing="none",
        viable=True,
        reason="hand-built",
        fixed_bytes=fixed,
        bytes_per_sample=per_sample,
        step_time=StepTimeModel(fixed_s=0.01, per_sample_s=0.002, max_relative_error=0.0),
    )


# --- FLOPs and model facts -------------------------------------------------------------------


def test_parameters_the_loss_never_reaches_are_named(tiny: Task, write_task: Any) -> None:
    from tests.runtime.test_ddp import UNUSED_HEAD_TASK

    assert model_facts(tiny).unused_params == []
    assert model_facts(tiny).find_unused_parameters is False
    unused_head = model_facts(load_task(write_task(UNUSED_HEAD_TASK)))
    assert unused_head.unused_params == ["aux.weight", "aux.bias"]
    assert unused_head.find_unused_parameters is True


# TINY_TASK with a layer only for bright inputs, and the dataset's first two samples (the
# counted batch's) the only bright ones: a branch that the FLOP count alone never misses.
RARE_BRANCH_TASK = TINY_TASK.replace(
    "def build_model():\n    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))",
    """class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(8, 32)
        self.bright = nn.Linear(32, 32)
        self.head = nn.Linear(32, 2)

    def forward(self, x):
        h = self.body(x)
        if (x[:, 0] > 4).any():
            h = self.bright(h)
        return self.head(h)

def build_model():
    return Net()""",
).replace("    y = (x[:, 0]", "    x[:2, 0] = 5.0\n    y = (x[:, 0]")


def test_parameters_only_some_batches_reach_are_named(write_task: Any) -> None:
    task = load_task(write_task(RARE_BRANCH_TASK))

    facts = model_facts(task)

    assert facts.unused_params == ["bright.weight", "bright.bias"]
    assert facts.find_unused_parameters is True


def test_a_task_s_declaration_decides_whether_ddp_looks(write_task: Any) -> None:
    def declaring(source: str, value: bool) -> Task:
        text = source.replace("baseline=dict(", f"find_unused_parameters={value}, baseline=dict(")
        return load_task(write_task(text))

    assert model_facts(declaring(TINY_TASK, True)).find_unused_parameters is True
    declined = model_facts(declaring(RARE_BRANCH_TASK, False))
    assert declined.find_unused_parameters is False
    assert declined.unused_params == ["bright.weight", "bright.bias"]


def test_linear_mlp_flops_are_forward_2n_plus_backward_4n(tiny: Task) -> None:
    """Linear(8, 32) -> ReLU -> Linear(32, 2): 2N forward, 4N backward per sample, except
    the first layer's input gradient (2 * 8 * 32): the data needs no gradient, so autograd
    never computes it."""
    facts = model_facts(tiny)
    first, second = 8 * 32, 32 * 2
    assert facts.matmul_params == first + second
    assert facts.tokens_per_sample == 1.0
    assert facts.flops_per_sample == 6 * (first + second) - 2 * first
    assert facts.rule_flops_per_sample == 6 * (first + second)
    assert facts.total_params == facts.trainable_params == first + 32 + second + 2
    assert facts.blocks == []


def test_embedding_fed_linears_are_exactly_6nt() -> None:
    """After an embedding every Linear's input needs a gradient: exactly 6 N T FLOPs."""
    model = lambda: torch.nn.Sequential(  # noqa: E731
        torch.nn.Embedding(10, 16),
        torch.nn.Linear(16, 24),
        torch.nn.Tanh(),
        torch.nn.Linear(24, 10),
    )
    tokens = torch.randint(0, 10, (6, 5), generator=torch.Generator().manual_seed(0))
    task = Task(
        model=model,
        dataset=lambda: torch.utils.data.TensorDataset(tokens, tokens),
        loss=lambda m, b: torch.nn.functional.cross_entropy(m(b[0]).flatten(0, 1), b[1].flatten()),
    )
    facts = model_facts(task)
    assert facts.matmul_params == 16 * 24 + 24 * 10
    assert facts.tokens_per_sample == 5
    assert facts.flops_per_sample == facts.rule_flops_per_sample == 6 * facts.matmul_params * 5
    assert facts.flops_vs_rule == 1.0


def test_a_lazy_model_is_counted_as_its_eager_twin(tiny: Task) -> None:
    """nn.LazyLinear has no shapes until its first call; the probe sizes it first (was:
    "Attempted to use an uninitialized parameter" from the probe's parameter count)."""
    lazy = dataclasses.replace(
        tiny,
        model=lambda: torch.nn.Sequential(
            torch.nn.LazyLinear(32), torch.nn.ReLU(), torch.nn.LazyLinear(2)
        ),
    )
    facts, eager = model_facts(lazy), model_facts(tiny)
    assert facts.total_params == eager.total_params == 8 * 32 + 32 + 32 * 2 + 2
    assert facts.flops_per_sample == eager.flops_per_sample


def test_float64_data_and_models_are_probed_in_fp32(tiny: Task) -> None:
    """As the runtime trains them (was: "mat1 and mat2 must have the same dtype" from the
    user's loss, for float64 data under a float32 model)."""
    data = tiny.build_dataset()
    x, y = data.tensors  # type: ignore[attr-defined]
    doubles = torch.utils.data.TensorDataset(x.double(), y)  # float64 features, long labels
    for model in (tiny.model, lambda: tiny.model().double()):
        task = dataclasses.replace(tiny, model=model, dataset=lambda: doubles)
        assert model_facts(task).flops_per_sample == model_facts(tiny).flops_per_sample
        assert measure_noise_scale(task, small_batch=8, big_batch=32, big_batches=2).b_simple


def test_attention_is_counted_and_blocks_found(small_gpt: Task) -> None:
    facts = model_facts(small_gpt)
    assert facts.blocks == ["blocks.0", "blocks.1"]
    assert facts.matmul_params == SMALL_GPT_LINEAR_PARAMS
    assert facts.tokens_per_sample == 16
    # Attention adds FLOPs beyond 6NT (the math SDPA backend is counted); still near the rule.
    assert 1.0 < facts.flops_vs_rule < 1.3  # type: ignore[operator]


def test_model_facts_leave_the_global_rng_alone(tiny: Task) -> None:
    before = torch.get_rng_state()
    model_facts(tiny)
    assert torch.equal(torch.get_rng_state(), before)


# --- fits and predictions ----------------------------------------------------------------------


def test_fit_line_recovers_an_exact_line() -> None:
    fit = fit_line([4, 8, 16], [100 + 7 * b for b in (4, 8, 16)])
    assert fit.intercept == pytest.approx(100) and fit.slope == pytest.approx(7)
    assert fit.max_relative_error == pytest.approx(0, abs=1e-12)


def test_fit_line_keeps_coefficients_non_negative() -> None:
    through_origin = fit_line([1, 2, 3], [1.0, 2.5, 3.5])  # OLS intercept would be < 0
    assert through_origin.intercept == 0 and through_origin.slope > 0
    flat = fit_line([1, 2, 3], [3.0, 2.0, 2.5])  # OLS slope would be < 0
    assert flat.slope == 0 and flat.intercept == pytest.approx(2.5)


def test_fit_line_needs_two_distinct_points() -> None:
    with pytest.raises(ValueError, match=r"at least two distinct x values"):
        fit_line([4, 4], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"finite and >= 0"):
        fit_line([4, 8], [1.0, math.nan])


@pytest.mark.parametrize("budget", [0, 999_999, 1_000_000, 1_012_345, 1_012_346, 10**9, 10**12])
def test_max_batch_inverts_predict_peak_bytes(budget: int) -> None:
    variant = make_variant()
    batch = variant.max_batch(budget)
    assert variant.predict_peak_bytes(batch + 1) > budget
    if batch >= 1:
        assert variant.predict_peak_bytes(batch) <= budget


def test_predictions_follow_the_fitted_models() -> None:
    variant = make_variant(fixed=1_000, per_sample=10.5)
    assert variant.predict_peak_bytes(10) == 1_105
    assert variant.predict_samples_per_s(10) == pytest.approx(10 / (0.01 + 0.02))
    with pytest.raises(ValueError, match=r"batch must be >= 1"):
        variant.predict_peak_bytes(0)


def test_non_viable_variant_has_no_models() -> None:
    slow = VariantReport(
        precision="16-mixed", activation_checkpointing="none", viable=False, reason="too slow"
    )
    with pytest.raises(ValueError, match=r"16-mixed/none is not viable \(too slow\)"):
        slow.predict_peak_bytes(8)
    with pytest.raises(ValidationError, match=r"a non-viable variant carries no memory"):
        VariantReport(
            precision="16-mixed",
            activation_checkpointing="none",
            viable=False,
            reason="too slow",
            fixed_bytes=1,
            bytes_per_sample=1.0,
        )


def _fitted(
    task: Task,
    precision: Any,
    mode: Any,
    batches: tuple[int, ...],
    hardware: HardwareInfo | None = None,
) -> VariantReport:
    """A variant fitted from real runs at ``batches`` (what probe() does for each one)."""
    hardware = hardware or make_hardware()
    options = run_options(hardware, seed=0)
    flops = model_facts(task).flops_per_sample
    probes = [
        measure_batch(task, probe_config(task, precision, mode, b), options, hardware, flops)
        for b in batches
    ]
    return fit_variant(precision, mode, probes, reason="test", budget_bytes=None, speed_vs_fp32=1.0)


@pytest.mark.parametrize("mode", ["none", "full"])
def test_memory_fit_predicts_an_unprobed_batch_within_10_percent(
    small_gpt: Task, mode: Any
) -> None:
    variant = _fitted(small_gpt, "32-true", mode, (4, 8, 16))
    hardware = make_hardware()
    config = probe_config(small_gpt, "32-true", mode, 48)
    fresh = measure_batch(small_gpt, config, run_options(hardware, seed=0), hardware, 0.0)
    predicted = variant.predict_peak_bytes(48)
    assert abs(predicted - fresh.peak_memory_bytes) <= 0.10 * fresh.peak_memory_bytes
    assert variant.bytes_per_sample is not None and variant.bytes_per_sample > 0
    assert variant.memory_fit_error is not None and variant.memory_fit_error < 0.05


def test_probe_config_keeps_the_baseline_optimizer(small_gpt: Task) -> None:
    config = probe_config(small_gpt, "bf16-mixed", "full", 4)
    assert (config.micro_batch_size, config.global_batch, config.grad_accum_steps) == (4, 4, 1)
    assert config.precision == "bf16-mixed" and config.activation_checkpointing == "full"
    assert config.optimizer.name == "adamw" and config.optimizer.lr == 1e-3


def test_a_baseline_warmup_longer_than_a_probing_run_does_not_stop_the_probe(tiny: Task) -> None:
    """A Task's baseline on a cosine after 20 warmup steps (scripts/dogfood/
    conv_autoencoder.py) stopped `autotune search` at the probe's first 4-step run: "warmup
    must be less than the steps it spans". The probe's runs keep the baseline's peak LR on
    a constant schedule; a step's time and memory do not depend on the schedule."""
    schedule = {"name": "cosine", "warmup_steps": 20}
    task = dataclasses.replace(tiny, baseline={**tiny.baseline, "schedule": schedule})
    config = probe_config(task, "32-true", "none", 4)
    assert config.schedule.name == "constant" and config.schedule.warmup_steps == 0
    assert config.optimizer.lr == task.baseline_config().optimizer.lr
    hardware = make_hardware()
    probe = measure_batch(task, config, run_options(hardware, seed=0), hardware, 0.0)
    assert probe.peak_memory_bytes > 0


# --- precision viability -----------------------------------------------------------------------


def test_fp16_on_cpu_is_ruled_out_by_its_peak_and_bf16_is_not() -> None:
    hardware = make_hardware({"fp32": 1.9e11, "bf16": 4.0e11, "fp16": 2.6e9})
    fp16 = hardware_verdict("16-mixed", hardware)
    assert not fp16.viable
    assert "fp16 matmul peak 2.6 GFLOP/s is 0.014x 190 GFLOP/s of 32-true" in fp16.reason
    assert hardware_verdict("bf16-mixed", hardware).viable
    assert hardware_verdict("bf16-true", hardware).viable
    assert hardware_verdict("32-true", hardware).viable


def test_missing_dtype_is_not_viable() -> None:
    hardware = make_hardware({"fp32": 1e11}, bf16_supported=False, fp16_supported=False)
    for precision in ("bf16-mixed", "bf16-true", "16-mixed"):
        verdict = hardware_verdict(precision, hardware)  # type: ignore[arg-type]
        assert not verdict.viable and "has no" in verdict.reason


def test_speed_verdict_applies_the_floor() -> None:
    assert speed_verdict("bf16-mixed", {4: 1.7, 8: 1.6}).viable
    assert speed_verdict("bf16-mixed", {4: MIN_SPEED_RATIO, 8: 0.2}).viable
    slow = speed_verdict("bf16-true", {4: 0.3, 8: 0.25})
    assert not slow.viable and "0.28x" in slow.reason and "best 0.30x at batch 4" in slow.reason
    assert "below the 0.5x floor at every batch" in slow.reason
    with pytest.raises(ValueError, match=r"one batch size or more"):
        speed_verdict("bf16-true", {})


def test_a_precision_slow_at_most_batches_but_fast_at_one_stays_in() -> None:
    # mlp_digits' bf16-mixed in a probe that ruled it out by the median (0.49x), though
    # it won the search at micro 256 (1.18x fp32): its cast cost weighs most at small batches
    verdict = speed_verdict("bf16-mixed", {8: 0.98, 16: 0.48, 32: 0.49})
    assert verdict.viable and "0.49x" in verdict.reason
    assert "best 0.98x at batch 8" in verdict.reason


def test_speed_ratios_are_per_common_batch() -> None:
    ratios = speed_ratios({4: 10.0, 8: 40.0, 32: 1.0}, {4: 10.0, 8: 20.0, 16: 30.0})
    assert ratios == {4: 1.0, 8: 2.0}


def test_speed_ratio_is_the_median_over_common_batches() -> None:
    ratio = speed_ratio({4: 10.0, 8: 40.0, 16: 90.0, 32: 1.0}, {4: 10.0, 8: 20.0, 16: 30.0})
    assert ratio == 2.0  # ratios 1, 2, 3 at the shared batches 4, 8, 16
    with pytest.raises(ValueError, match=r"need a batch size measured in both"):
        speed_ratio({4: 1.0}, {8: 1.0})


@pytest.fixture(scope="module")
def real_cpu(tmp_path_factory: pytest.TempPathFactory) -> HardwareInfo:
    """This CPU, measured once with the default budget (a shorter one is at the mercy of
    other processes on a shared CPU) into a private cache."""
    return probe_hardware("cpu", cache_dir=tmp_path_factory.mktemp("hardware-cache"))


def test_real_cpu_keeps_bf16_exactly_where_onednn_has_native_bf16(real_cpu: HardwareInfo) -> None:
    """The verdict comes from the measured peaks; oneDNN's own ISA check is the independent
    oracle. bf16 is kept on a CPU with AVX512-BF16 (2-3x fp32, 3.8x with AMX) and ruled out
    on an AVX2 host (0.012x), which a VM may name just like the first ("AMD EPYC"). fp16 is
    ruled out on the AMD hosts (0.01-0.1x fp32) and kept on an Intel Xeon with AVX512-FP16,
    where oneDNN has native fp16 and its matmul peak measured 1.0x fp32's."""
    hardware = real_cpu
    for precision, dtype in (("bf16-mixed", "bf16"), ("16-mixed", "fp16")):
        native = getattr(torch.ops.mkldnn, f"_is_mkldnn_{dtype}_supported")()
        supported = hardware.bf16_supported if dtype == "bf16" else hardware.fp16_supported
        verdict = hardware_verdict(precision, hardware)
        assert verdict.viable == (supported and native), verdict.reason
        assert f"{dtype}={'yes' if native else 'no'}" in hardware.instruction_set


@pytest.mark.slow
def test_real_probe_of_tiny_gpt_keeps_bf16_and_runs_fp16_only_where_native(
    real_cpu: HardwareInfo,
) -> None:
    """The whole probe on the real example and the real, freshly measured hardware."""
    hardware = real_cpu
    if not hardware_verdict("bf16-mixed", hardware).viable:
        pytest.skip("this CPU has no fast bf16 matmul (no AVX512-BF16): bf16 is ruled out")
    report = probe(load_task(EXAMPLES / "tiny_gpt.py"), hardware=hardware)
    fp16 = report.variant("16-mixed", "none")
    if hardware_verdict("16-mixed", hardware).viable:  # native fp16 (AVX512-FP16): measured
        assert fp16.probes != []
    else:
        assert not fp16.viable and fp16.probes == []  # never run: ruled out by its peak
    bf16 = report.variant("bf16-mixed", "none")
    assert bf16.viable, bf16.reason
    assert report.model.flops_vs_rule is not None
    assert abs(report.model.flops_vs_rule - 1) <= 0.10
    assert {v.activation_checkpointing for v in report.viable_variants()} == {"none", "full"}


# --- noise scale ---------------------------------------------------------------------------------


def test_noise_scale_recovers_known_gradient_and_noise() -> None:
    """E|G_B|^2 = |G|^2 + tr(Sigma)/B with |G|^2 = 2, tr(Sigma) = 64: B_simple = 32."""
    g2, trace = 2.0, 64.0
    estimate = simple_noise_scale(4, 32, g2 + trace / 4, g2 + trace / 32, big_batches=3)
    assert estimate.true_grad_sq == pytest.approx(g2)
    assert estimate.trace_sigma == pytest.approx(trace)
    assert estimate.b_simple == pytest.approx(32)
    assert (estimate.small_batch, estimate.big_batch, estimate.big_batches) == (4, 32, 3)
    assert "beyond about 32 samples" in estimate.reason


def test_noise_scale_degenerate_gradient_estimate_gives_none() -> None:
    estimate = simple_noise_scale(4, 32, grad_sq_small=10.0, grad_sq_big=1.0)  # 32 - 40 < 0
    assert estimate.b_simple is None
    assert estimate.true_grad_sq < 0 and "degenerate: the |G|^2 estimate" in estimate.reason


def test_noise_scale_without_measurable_noise_gives_none() -> None:
    estimate = simple_noise_scale(4, 32, grad_sq_small=1.0, grad_sq_big=1.5)
    assert estimate.b_simple is None and "tr(Sigma) estimate" in estimate.reason


def test_noise_scale_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"1 <= small_batch < big_batch"):
        simple_noise_scale(8, 8, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"grad_sq_big must be a finite squared norm"):
        simple_noise_scale(4, 8, 1.0, -1.0)


def test_noise_batch_count_spends_a_flop_budget() -> None:
    assert noise_batch_count(0.0) == NOISE_MAX_BIG_BATCHES  # cheap model: the most batches
    assert noise_batch_count(1e12) == NOISE_MIN_BIG_BATCHES  # costly model: the fewest
    assert noise_batch_count(NOISE_FLOP_BUDGET / (8 * NOISE_BIG_BATCH)) == 8
    with pytest.raises(ValueError, match=r"flops_per_sample must be finite"):
        noise_batch_count(math.inf)


def test_measured_noise_scale_is_reproducible(tiny: Task) -> None:
    before = torch.get_rng_state()
    first = measure_noise_scale(tiny, small_batch=4, big_batch=16, big_batches=2)
    second = measure_noise_scale(tiny, small_batch=4, big_batch=16, big_batches=2)
    assert first == second
    assert torch.equal(torch.get_rng_state(), before)
    assert first.grad_sq_small > first.grad_sq_big > 0  # smaller batches are noisier
    with pytest.raises(ValueError, match=r"big_batch must be a multiple of small_batch"):
        measure_noise_scale(tiny, small_batch=4, big_batch=18)


# --- the whole probe and its document ----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_report(tiny: Task) -> tuple[ProbeReport, list[ProbeProgress]]:
    seen: list[ProbeProgress] = []
    report = probe(tiny, hardware=make_hardware(), batches=(4, 8), on_progress=seen.append)
    return report, seen


def test_probe_reports_every_variant(tiny_report: tuple[ProbeReport, list[ProbeProgress]]) -> None:
    report, _ = tiny_report
    names = [v.name for v in report.variants]
    assert names == ["32-true/none", "bf16-mixed/none", "16-mixed/none", "bf16-true/none"]
    reference = report.variant("32-true", "none")
    assert reference.viable and reference.speed_vs_fp32 == 1.0
    assert [p.batch_size for p in reference.probes] == [4, 8]
    assert reference.max_batch_size is not None
    assert reference.max_batch_size == reference.max_batch(report.memory_budget.budget_bytes or 0)
    assert not report.variant("16-mixed", "none").viable
    assert report.probe_seconds >= sum(report.stage_seconds.values()) * 0.99
    with pytest.raises(KeyError, match=r"no variant 32-true/full"):
        report.variant("32-true", "full")


def test_the_probes_runs_collect_only_what_was_built_since_it_froze_the_heap(
    tiny: Task, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen_at_collection: list[int] = []
    collect = gc.collect

    def counting_collect(*args: Any) -> int:
        frozen_at_collection.append(gc.get_freeze_count())
        return collect(*args)

    monkeypatch.setattr(gc, "collect", counting_collect)
    probe(tiny, hardware=make_hardware(), batches=(4, 8))
    runs = frozen_at_collection[1:]  # the first is frozen_heap's own, before it freezes
    assert runs and all(count > 0 for count in runs), frozen_at_collection
    assert gc.get_freeze_count() == 0  # thawed: the caller's heap is as it was


def test_a_frozen_heap_frees_new_cycles_and_leaves_older_ones_to_the_thaw() -> None:
    class Node:
        partner: object = None

    def cycle() -> weakref.ref[Node]:
        first, second = Node(), Node()
        first.partner, second.partner = second, first
        return weakref.ref(first)

    keep = Node()
    keep.partner = Node()
    keep.partner.partner = keep  # type: ignore[attr-defined]
    older = weakref.ref(keep)  # a cycle built before entry, alive at it
    with frozen_heap():
        del keep  # dropped inside: frozen, so left to the thaw
        gone = cycle()
        gc.collect()
        assert gone() is None
        assert older() is not None
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert older() is None  # thawed: collected as before


# The tiny task, whose loss has no fp16 kernel: as oneDNN's LSTM on a CPU with fast fp16
# matmul (an Intel Xeon with AVX512-FP16), where the hardware's peaks keep fp16 in.
NO_FP16_KERNEL = TINY_TASK.replace(
    "def loss_fn(model, batch):\n",
    "def loss_fn(model, batch):\n"
    "    if torch.get_autocast_dtype('cpu') == torch.float16 and torch.is_autocast_enabled('cpu'):"
    "\n"
    "        raise RuntimeError('could not create a primitive descriptor for fp16')\n",
)


def test_a_precision_the_model_cannot_run_in_is_ruled_out_not_fatal(tmp_path: Path) -> None:
    task = _task(tmp_path, NO_FP16_KERNEL, "no_fp16")
    fast_fp16 = make_hardware({"fp32": 1.9e11, "bf16": 4.0e11, "fp16": 1.9e11})
    seen: list[ProbeProgress] = []
    report = probe(task, hardware=fast_fp16, batches=(4, 8), on_progress=seen.append)
    fp16 = report.variant("16-mixed", "none")
    assert not fp16.viable and fp16.probes == []
    assert fp16.reason.startswith("the model does not run in 16-mixed here, where 32-true does")
    assert "could not create a primitive descriptor for fp16" in fp16.reason
    assert report.variant("32-true", "none").viable
    assert seen[-1].done == seen[-1].total  # its skipped runs left the count


def test_a_reduced_precision_out_of_memory_is_raised_not_ruled_out(tmp_path: Path) -> None:
    """Out of memory says the batch is too large, not that the precision cannot run: on a
    CPU torch reports it as a plain RuntimeError, which the probe must not take for a
    missing kernel."""
    oom = NO_FP16_KERNEL.replace(
        "'could not create a primitive descriptor for fp16'",
        '"DefaultCPUAllocator: can\'t allocate memory: you tried to allocate 1 bytes"',
    )
    task = _task(tmp_path, oom, "oom_fp16")
    fast_fp16 = make_hardware({"fp32": 1.9e11, "bf16": 4.0e11, "fp16": 1.9e11})
    with pytest.raises(TaskError, match="can't allocate memory"):
        probe(task, hardware=fast_fp16, batches=(4, 8))


class _Neighbor:
    """Records when the probe starts it and waits for it, in one log with its progress."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def prepare(self) -> None:
        self.log.append("neighbor starts")

    def await_ready(self) -> None:
        self.log.append("neighbor waited for")


def test_a_neighbor_runs_beside_the_untimed_stages_only(tiny: Task) -> None:
    log: list[str] = []
    report = probe(
        tiny,
        hardware=make_hardware(),
        batches=(4, 8),
        on_progress=lambda p: log.append(p.message),
        neighbor=_Neighbor(log),
    )
    starts, waited = log.index("neighbor starts"), log.index("neighbor waited for")
    counting = next(k for k, m in enumerate(log) if "FLOPs" in m)
    timed = next(k for k, m in enumerate(log) if "/ batch " in m)
    assert starts < counting < waited < timed  # after the hardware, before any timed run
    assert "neighbor" in report.stage_seconds


def test_probe_progress_counts_to_the_end(
    tiny_report: tuple[ProbeReport, list[ProbeProgress]],
) -> None:
    _, seen = tiny_report
    assert [p.done for p in seen] == list(range(len(seen)))
    assert seen[-1].done == seen[-1].total and seen[-1].message == "done"


def test_probe_report_round_trips_through_json(
    tiny_report: tuple[ProbeReport, list[ProbeProgress]],
) -> None:
    report, _ = tiny_report
    text = report.model_dump_json()
    assert ProbeReport.model_validate_json(text) == report
    data = json.loads(text)
    assert data["schema_version"] == 1
    with pytest.raises(ValidationError, match=r"Extra inputs are not permitted"):
        ProbeReport.model_validate({**data, "surprise": 1})
    with pytest.raises(ValidationError):
        ProbeReport.model_validate({**data, "schema_version": 2})


def test_every_report_field_is_described() -> None:
    def undescribed(schema: dict[str, Any]) -> list[str]:
        return [
            name
            for name, field in schema.get("properties", {}).items()
            if "description" not in field
        ]

    schema = ProbeReport.model_json_schema()
    missing = undescribed(schema)
    for name, sub in schema.get("$defs", {}).items():
        if name != "DeviceInfo":  # config.py's, not the profiler's
            missing += [f"{name}.{field}" for field in undescribed(sub)]
    assert missing == []


def test_memory_budget_prefers_the_given_limit() -> None:
    hardware = make_hardware(memory_bytes=10_000)
    assert memory_budget(hardware).budget_bytes == 9_000
    assert memory_budget(hardware).source == "device_memory"
    limited = memory_budget(hardware, 5_000)
    assert (limited.budget_bytes, limited.source) == (5_000, "memory_limit")
    unknown = memory_budget(make_hardware(memory_bytes=None))
    assert (unknown.budget_bytes, unknown.source) == (None, "unknown")


class FakeRuns:
    """Stands in for measure_batch: memory linear in batch, speed set per precision."""

    def __init__(self, speed: dict[str, float]) -> None:
        self.speed = speed
        self.calls: list[tuple[str, str, int]] = []

    def __call__(self, task: Task, config: Any, *_: Any) -> BatchProbe:
        batch, precision = config.micro_batch_size, config.precision
        self.calls.append((precision, config.activation_checkpointing, batch))
        rate = self.speed[precision] * batch / (1 + batch / 8)
        return BatchProbe(
            batch_size=batch,
            peak_memory_bytes=10_000 + 500 * batch,
            activation_memory_bytes=400 * batch,
            memory_source="fake",
            samples_per_s=rate,
            step_time_s=batch / rate,
            timed_steps=2,
            mfu=None,
            wall_s=0.0,
        )


def test_a_slow_precision_is_reported_with_its_evidence_and_skips_checkpointing(
    small_gpt: Task, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeRuns({"32-true": 100.0, "bf16-mixed": 180.0, "bf16-true": 30.0})
    monkeypatch.setattr("autotune.profiler._probe.measure_batch", fake)
    seen: list[ProbeProgress] = []
    report = probe(small_gpt, hardware=make_hardware(), on_progress=seen.append)
    slow = report.variant("bf16-true", "none")
    assert not slow.viable and "0.30x" in slow.reason and len(slow.probes) == 3
    assert slow.fixed_bytes is None and slow.max_batch_size is None
    skipped = report.variant("bf16-true", "full")
    assert not skipped.viable and skipped.probes == [] and skipped.reason == slow.reason
    assert ("bf16-true", "full", 8) not in fake.calls
    assert not any(call[0] == "16-mixed" for call in fake.calls)  # ruled out by its peak
    # 32-true and each candidate run back to back at every batch size.
    assert fake.calls[:3] == [
        ("32-true", "none", 8),
        ("bf16-mixed", "none", 8),
        ("bf16-true", "none", 8),
    ]
    fast = report.variant("bf16-mixed", "full")
    assert fast.viable and fast.speed_vs_fp32 == pytest.approx(1.8)
    assert fast.fixed_bytes == 10_000 and fast.bytes_per_sample == pytest.approx(500)
    assert fast.max_batch_size == (report.memory_budget.budget_bytes - 10_000) // 500  # type: ignore[operator]
    assert seen[-1].done == seen[-1].total == 3 + len(fake.calls)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batches": (8,)}, r"at least two distinct sizes >= 1"),
        ({"batches": (0, 4)}, r"at least two distinct sizes >= 1"),
        ({"memory_limit_bytes": 0}, r"memory limit must be a positive number of bytes"),
        ({"steps": 2}, r"at least 3 steps"),
    ],
)
def test_probe_rejects_bad_arguments(tiny: Task, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        probe(tiny, hardware=make_hardware(), **kwargs)


# --- GPU -----------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_gpu_run_at_the_predicted_largest_batch_fits(small_gpt: Task) -> None:
    hardware = make_hardware(
        device=DeviceInfo(kind="cuda", name="gpu", count=1, memory_bytes=2**34),
        peak_flops={"fp32": 1e13, "tf32": 5e13, "bf16": 1e14, "fp16": 1e14},
    )
    variant = _fitted(small_gpt, "32-true", "none", (4, 8, 16), hardware)
    budget = variant.predict_peak_bytes(16) * 4
    largest = variant.max_batch(budget)
    config = probe_config(small_gpt, "32-true", "none", largest)
    fresh = measure_batch(small_gpt, config, run_options(hardware, seed=0), hardware, 0.0)
    assert fresh.peak_memory_bytes <= budget * 1.05
    assert abs(fresh.peak_memory_bytes - variant.predict_peak_bytes(largest)) <= 0.1 * budget


def test_the_probes_model_table_places_the_baseline_batch_against_the_noise_scale(
    tiny_report: tuple[ProbeReport, list[ProbeProgress]],
) -> None:
    from rich.console import Console

    from autotune._probe_view import probe_tables

    report, _ = tiny_report
    noise = report.noise_scale.model_copy(update={"b_simple": 128.0})  # mlp_digits' at init
    shown = report.model_copy(update={"noise_scale": noise})

    def text(baseline_batch: int | None) -> str:
        console = Console(width=300, record=True)
        for table in probe_tables(shown, baseline_batch):
            console.print(table)
        return console.export_text()

    assert "the baseline's batch of 16 is 8.0x below it: a larger batch should need" in text(16)
    assert "baseline batch" not in text(None)


@pytest.mark.parametrize(
    ("flops", "shown"),
    [(768.0, "768 FLOP"), (1.23456e5, "123 kFLOP"), (2.5e6, "2.5 MFLOP"), (3.1e9, "3.1 GFLOP")],
)
def test_flops_per_sample_are_shown_in_a_unit_that_keeps_their_digits(
    flops: float, shown: str
) -> None:
    """A bag-of-words model's 768 FLOPs per sample showed as "0.0 MFLOP"."""
    from autotune._probe_view import _flop_count

    assert _flop_count(flops) == shown
