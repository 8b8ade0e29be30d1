"""Rich tables of a :class:`~autotune.profiler.ProbeReport` for the terminal."""

from __future__ import annotations

from rich.table import Table

from autotune._tables import key_value_table
from autotune._units import format_bytes, format_percent
from autotune.explain import batch_against_noise
from autotune.profiler import ProbeReport, VariantReport

__all__ = ["probe_tables"]


def probe_tables(report: ProbeReport, baseline_batch: int | None = None) -> list[Table]:
    """Hardware, model, variant and verdict tables, in reading order; the model table
    places the Task's ``baseline_batch`` (when given) against the gradient noise scale."""
    model = _model(report, baseline_batch)
    return [_hardware(report), model, _variants(report), _verdicts(report)]


def _flop_count(value: float) -> str:
    """FLOPs per sample in the unit that keeps 3 significant digits (a bag-of-words model
    counts hundreds, a GPT billions): "0.0 MFLOP" said nothing."""
    for scale, unit in ((1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP"), (1e3, "kFLOP")):
        if value >= scale:
            return f"{value / scale:,.3g} {unit}"
    return f"{value:,.0f} FLOP"


def _flops(value: float) -> str:
    return f"{value / 1e12:,.2f} TFLOP/s" if value >= 1e12 else f"{value / 1e9:,.1f} GFLOP/s"


def _hardware(report: ProbeReport) -> Table:
    hw = report.hardware
    table = key_value_table("Hardware (measured)")
    table.add_row("device", f"{hw.device.count} x {hw.device.kind} {hw.device.name}")
    table.add_row("memory", format_bytes(hw.device.memory_bytes))
    table.add_row("cpu", f"{hw.cpu_cores} cores, torch uses {hw.cpu_threads} threads")
    for key, value in hw.peak_flops.items():
        table.add_row(f"peak {key} matmul", _flops(value))
    table.add_row("memory bandwidth", f"{hw.memory_bandwidth_bytes_per_s / 1e9:,.1f} GB/s")
    table.add_row("torch", hw.torch_version)
    return table


def _model(report: ProbeReport, baseline_batch: int | None) -> Table:
    model, noise = report.model, report.noise_scale
    table = key_value_table(f"Model: {report.task}")
    table.add_row("parameters", f"{model.trainable_params:,} trainable of {model.total_params:,}")
    table.add_row("FLOPs / sample", f"{_flop_count(model.flops_per_sample)} (fwd+bwd)")
    if model.flops_vs_rule is not None:
        table.add_row(
            "6NT rule",
            f"{_flop_count(model.rule_flops_per_sample)}; counted / rule = "
            f"{model.flops_vs_rule:.3f}",
        )
    blocks = ", ".join(model.blocks[:4]) + (" ..." if len(model.blocks) > 4 else "")
    table.add_row("checkpoint blocks", f"{len(model.blocks)}: {blocks}" if blocks else "none found")
    noise_text = f"{noise.b_simple:,.3g} samples" if noise.b_simple is not None else "n/a"
    table.add_row("gradient noise scale", f"{noise_text} ({noise.reason})")
    if noise.b_simple is not None and baseline_batch is not None:
        table.add_row("baseline batch", batch_against_noise(baseline_batch, noise.b_simple))
    budget = report.memory_budget
    table.add_row("memory budget", f"{format_bytes(budget.budget_bytes)} ({budget.source})")
    table.add_row("probe time", f"{report.probe_seconds:.1f} s")
    return table


def _variants(report: ProbeReport) -> Table:
    table = Table(title="Variants: peak = fixed + per-sample x batch", title_justify="left")
    columns = ["precision", "ckpt", "viable", "fixed", "per sample", "max batch"]
    columns += [f"samples/s b={b}" for b in report.probe_batches]
    for name in [*columns, "MFU"]:
        table.add_column(name, overflow="fold")
    for variant in report.variants:
        table.add_row(*_variant_row(variant, report.probe_batches))
    return table


def _variant_row(variant: VariantReport, batches: list[int]) -> list[str]:
    rates = {p.batch_size: f"{p.samples_per_s:,.0f}" for p in variant.probes}
    return [
        variant.precision,
        variant.activation_checkpointing,
        "yes" if variant.viable else "[red]no[/]",
        format_bytes(variant.fixed_bytes),
        format_bytes(variant.bytes_per_sample),
        "-" if variant.max_batch_size is None else f"{variant.max_batch_size:,}",
        *[rates.get(b, "-") for b in batches],
        "-" if variant.mfu is None else format_percent(variant.mfu),
    ]


def _verdicts(report: ProbeReport) -> Table:
    table = Table(title="Why each variant is (not) viable", title_justify="left")
    table.add_column("variant", no_wrap=True)
    table.add_column("reason")
    for variant in report.variants:
        table.add_row(variant.name, variant.reason)
    return table
