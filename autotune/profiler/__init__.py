"""The profiler: what the model costs on this hardware, measured, fitted and predicted.

:func:`probe` is the whole of ``autotune probe``: it measures the hardware (cached), counts
the model's parameters and FLOPs (:func:`model_facts`), trains every precision x
checkpointing variant for a few steps at a few batch sizes through the one runtime,
fits ``peak = fixed_bytes + bytes_per_sample * batch`` and ``step time = fixed_s +
per_sample_s * batch``, rules out precisions that are missing or too slow, estimates
the gradient noise scale (:func:`measure_noise_scale`) and returns a
:class:`ProbeReport`. The search prunes with the report's predictions::

    report = probe(load_task("model.py"), memory_limit_bytes=4 * 2**30)
    for variant in report.viable_variants():
        variant.predict_peak_bytes(64), variant.max_batch(4 * 2**30)
        variant.predict_samples_per_s(64)

Pure pieces (:func:`fit_line`, :func:`simple_noise_scale`, :func:`hardware_verdict`,
:func:`speed_verdict`) take values and return values, for tests and reuse.
"""

from autotune.profiler._facts import FLOPS_BATCH, PROBE_SEED, model_facts
from autotune.profiler._fit import fit_line, simple_noise_scale
from autotune.profiler._noise import (
    NOISE_BIG_BATCH,
    NOISE_FLOP_BUDGET,
    NOISE_MAX_BIG_BATCHES,
    NOISE_MIN_BIG_BATCHES,
    NOISE_SMALL_BATCH,
    measure_noise_scale,
    noise_batch_count,
)
from autotune.profiler._probe import (
    DEFAULT_BATCHES,
    DEVICE_MEMORY_SHARE,
    Neighbor,
    ProbeProgress,
    ProgressCallback,
    memory_budget,
    probe,
)
from autotune.profiler._runs import (
    RUN_STEPS,
    RUN_WARMUP_STEPS,
    ProbeError,
    fit_variant,
    frozen_heap,
    measure_batch,
    probe_config,
    run_options,
)
from autotune.profiler._schema import (
    BatchProbe,
    Checkpointing,
    LinearFit,
    MemoryBudget,
    ModelFacts,
    NoiseScale,
    ProbeReport,
    StepTimeModel,
    VariantReport,
)
from autotune.profiler._viability import (
    MIN_PEAK_RATIO,
    MIN_SPEED_RATIO,
    REFERENCE_PRECISION,
    Verdict,
    hardware_verdict,
    speed_ratio,
    speed_ratios,
    speed_verdict,
)

__all__ = [
    "DEFAULT_BATCHES",
    "DEVICE_MEMORY_SHARE",
    "FLOPS_BATCH",
    "MIN_PEAK_RATIO",
    "MIN_SPEED_RATIO",
    "NOISE_BIG_BATCH",
    "NOISE_FLOP_BUDGET",
    "NOISE_MAX_BIG_BATCHES",
    "NOISE_MIN_BIG_BATCHES",
    "NOISE_SMALL_BATCH",
    "PROBE_SEED",
    "REFERENCE_PRECISION",
    "RUN_STEPS",
    "RUN_WARMUP_STEPS",
    "BatchProbe",
    "Checkpointing",
    "LinearFit",
    "MemoryBudget",
    "ModelFacts",
    "Neighbor",
    "NoiseScale",
    "ProbeError",
    "ProbeProgress",
    "ProbeReport",
    "ProgressCallback",
    "StepTimeModel",
    "VariantReport",
    "Verdict",
    "fit_line",
    "fit_variant",
    "frozen_heap",
    "hardware_verdict",
    "measure_batch",
    "measure_noise_scale",
    "memory_budget",
    "model_facts",
    "noise_batch_count",
    "probe",
    "probe_config",
    "run_options",
    "simple_noise_scale",
    "speed_ratio",
    "speed_ratios",
    "speed_verdict",
]
