"""Rich tables of a :class:`~autotune.config.TunedConfig` for ``autotune show``.

Three tables: the recommendation next to the baseline it beats, the evidence (speed-ups
with their spread, memory, MFU, the target), and where it came from. Every text that
comes from a file (task path, device name, study URL) is escaped for rich markup.
"""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from autotune._host import CpuShare
from autotune._search_view import rejected_line
from autotune._tables import key_value_table, speedup_text
from autotune._units import format_bytes, format_percent, format_seconds, format_seeds
from autotune.config import (
    EDITED,
    Measured,
    Spread,
    TrainConfig,
    TunedConfig,
    checkpointing_label,
)
from autotune.explain import Explanation, Lever, explain, fewer_or_more
from autotune.search import CHECK_TOLERANCE, redact

__all__ = [
    "REPRODUCTION_TOLERANCE",
    "allocator_difference",
    "reproduction",
    "tuned_tables",
    "why_table",
]

_NONE = "[dim]-[/]"
# Issue 5's bound on `autotune run -c tuned.yaml` against the recorded samples/s: the one
# `autotune check` holds its rows to (autotune.search.CHECK_TOLERANCE).
REPRODUCTION_TOLERANCE = CHECK_TOLERANCE
_CHECK_HINT = (
    "`autotune check` re-runs it beside the baseline and says whether its speed-up still "
    "holds here, and whether the baseline's samples/s moved too."
)


def tuned_tables(tuned: TunedConfig, source: str) -> list[Table]:
    """The recommendation, the evidence (when measured), why it is faster (when the file
    can say) and the provenance, in that order."""
    tables = [_recommendation(tuned, source)]
    if tuned.edited():
        tables[0].caption = f"[bold red]{EDITED}[/]: the evidence below is not of this config"
    if tuned.measured is not None:
        tables.append(_evidence(tuned.measured))
    why = explain(tuned)
    if why is not None:
        tables.append(why_table(why))
    tables.append(_provenance(tuned))
    return tables


def _recommendation(tuned: TunedConfig, source: str) -> Table:
    measured = tuned.measured
    baseline = measured.baseline.train if measured and measured.baseline else None
    table = Table(title=f"Tuned config: {escape(source)}", title_justify="left")
    table.add_column("setting", style="bold")
    table.add_column("baseline")
    table.add_column("tuned")
    tuned_rows = _dimensions(tuned.train)
    base_rows = _dimensions(baseline) if baseline is not None else {}
    for key, value in tuned_rows.items():
        before = base_rows.get(key)
        changed = before is not None and before != value
        table.add_row(
            key,
            escape(before) if before is not None else _NONE,
            f"[bold green]{escape(value)}[/]" if changed else escape(value),
        )
    if baseline is None:
        table.caption = "no baseline recorded in this file"
    return table


def _dimensions(train: TrainConfig) -> dict[str, str]:
    opt, sched = train.optimizer, train.schedule
    optimizer = f"{opt.name} lr {opt.lr:.3g}"
    if opt.weight_decay:
        optimizer += f", weight decay {opt.weight_decay:g}"
    if opt.momentum:
        optimizer += f", momentum {opt.momentum:g}"
    schedule = f"{sched.name}, warmup {sched.warmup_steps} steps"
    if sched.name != "constant":
        schedule += f", min lr x{sched.min_lr_ratio:g}"
    if sched.total_steps is not None:
        schedule += f", over {sched.total_steps} steps"
    return {
        "precision": train.precision,
        "micro-batch": str(train.micro_batch_size),
        "grad accumulation": str(train.grad_accum_steps),
        "global batch": str(train.global_batch),
        "world size": str(train.world_size),
        "activation checkpointing": checkpointing_label(train.activation_checkpointing),
        "compile": "yes" if train.compile else "no",
        "optimizer": optimizer,
        "schedule": schedule,
        "gradient clip": f"{train.gradient_clip_val:g}" if train.gradient_clip_val else "none",
    }


def _evidence(measured: Measured) -> Table:
    table = key_value_table("Evidence (measured)")
    device = measured.device
    table.add_row("device", escape(f"{device.count} x {device.kind} {device.name}"))
    base = measured.baseline
    table.add_row(
        "throughput",
        _rate(measured.throughput_samples_per_s, measured.throughput_spread)
        + (f" (baseline {base.throughput_samples_per_s:,.1f})" if base else ""),
    )
    table.add_row("throughput speed-up", _ratio(measured.throughput_speedup, None))
    table.add_row(
        "time to target",
        _seconds(measured.time_to_target_s, measured.time_to_target_spread)
        + (f" (baseline {_seconds(base.time_to_target_s, None)})" if base else ""),
    )
    table.add_row("time-to-target speed-up", speedup_text(measured, "n={}") or _NONE)
    if measured.confirmation_seeds:
        table.add_row("pairs trained on", format_seeds(measured.confirmation_seeds))
    table.add_row("target loss", f"{measured.target_loss:.4f}" if measured.target_loss else _NONE)
    table.add_row("peak memory", format_bytes(measured.peak_memory_bytes))
    table.add_row("MFU", format_percent(measured.mfu) if measured.mfu is not None else _NONE)
    if measured.unused_parameters or measured.find_unused_parameters:
        declared = "the task declares Task(find_unused_parameters=True)"
        which = ", ".join(measured.unused_parameters) or declared
        table.add_row(
            "no gradient",
            escape(which)
            + ": DDP must look for them each step (find_unused_parameters; the exports set it)",
        )
    if measured.rejected is not None:
        table.add_row("[bold yellow]rejected pick[/]", rejected_line(measured.rejected))
    for warning in measured.warnings:
        table.add_row("[bold yellow]warning[/]", escape(warning))
    return table


def why_table(why: Explanation) -> Table:
    """The speed-up split into samples/s and samples to the target, with the settings
    behind each factor (:mod:`autotune.explain`)."""
    table = key_value_table("Why it is faster (both factors measured)")
    table.add_row("in short", escape(why.headline()))
    table.add_row("where from", escape(why.source()))
    table.add_row(f"samples/s {why.throughput:.2f}x", _levers(why.systems))
    table.add_row(
        f"samples to target {fewer_or_more(why.samples)}",
        escape(why.step_line()) + "\n" + _levers(why.optimisation),
    )
    table.caption = "which setting within a factor did most is not measured"
    return table


def _levers(levers: tuple[Lever, ...]) -> str:
    if not levers:
        return "[dim]none of its settings changed[/]"
    return "\n".join(escape(lever.line()) for lever in levers)


def reproduction(
    samples_per_s: float, measured: Measured, contention: CpuShare | None = None
) -> tuple[bool, str]:
    """Whether ``samples_per_s``, from a run of the tuned config, is within
    REPRODUCTION_TOLERANCE of what ``measured`` records, and a sentence that says so (with
    the likely cause and the fix when it is not). ``contention``: what other processes used
    of this machine's cores while the run ran, where known: the cause, when it is busy."""
    recorded, spread = measured.throughput_samples_per_s, measured.throughput_spread
    ratio = samples_per_s / recorded
    device = measured.device
    text = (
        f"{ratio:.0%} of the {_rate(recorded, spread)} tuned.yaml records on "
        f"{device.count} x {device.kind} {escape(device.name)}"
    )
    if abs(ratio - 1.0) <= REPRODUCTION_TOLERANCE:
        return True, f"{text}: reproduced within {REPRODUCTION_TOLERANCE:.0%}"
    if spread is not None and spread.low <= samples_per_s <= spread.high:
        return False, (
            f"{text}: outside {REPRODUCTION_TOLERANCE:.0%}, inside the range the search's own "
            f"runs spanned (this machine's speed drifts between runs). {_CHECK_HINT}"
        )
    if contention is not None and contention.busy:
        return False, f"{text}: not reproduced, and {contention.sentence()}. {_CHECK_HINT}"
    return False, (
        f"{text}: not reproduced. Is this machine busy, or another one (a VM may give one "
        f"CPU name to hosts with and without fast bf16)? {_CHECK_HINT} Run `autotune search` "
        "here if the speed-up is gone."
    )


def allocator_difference(tuned: TunedConfig, current: str | None) -> str | None:
    """A sentence when this run's ``GLIBC_TUNABLES`` (``current``) is not the one the search
    measured under, which moves samples/s by a few percent on a CPU; None when they agree
    or the config records no search."""
    if tuned.provenance is None:
        return None
    recorded = tuned.provenance.glibc_tunables
    if recorded == current:
        return None
    return (
        f"the search measured with GLIBC_TUNABLES={recorded or '(unset)'} and this run has "
        f"{current or '(unset)'}: the allocator differs (huge-page malloc moves a CPU's "
        f"samples/s by a few percent), so compare under the same one."
    )


def _rate(value: float, spread: Spread | None) -> str:
    text = f"{value:,.1f} samples/s"
    if spread is not None:
        text += f" (range {spread.low:,.1f}-{spread.high:,.1f}, n={spread.n})"
    return text


def _seconds(value: float | None, spread: Spread | None) -> str:
    if value is None:
        return "not reached"
    text = format_seconds(value)
    if spread is not None:
        low, high = (format_seconds(v, unit="") for v in (spread.low, spread.high))
        text += f" (range {low}-{high}, n={spread.n})"
    return text


def _ratio(spread: Spread | None, median: float | None) -> str:
    if spread is not None:
        return f"{spread.median:.2f}x (range {spread.low:.2f}-{spread.high:.2f}, n={spread.n})"
    if median is not None:
        return f"{median:.2f}x"
    return _NONE


def _provenance(tuned: TunedConfig) -> Table:
    table = key_value_table("Provenance")
    table.add_row("task", escape(tuned.task) if tuned.task else _NONE)
    prov = tuned.provenance
    if prov is None:
        table.add_row("source", "not recorded (a hand-written config)")
        return table
    rows = {
        "autotune": prov.autotune_version,
        "torch": prov.torch_version,
        "hardware": prov.hardware,
        "GLIBC_TUNABLES": prov.glibc_tunables,
        "study": redact(prov.study) if prov.study else None,
        "study name": prov.study_name,
        "trial": str(prov.trial) if prov.trial is not None else None,
        "search seed": str(prov.seed) if prov.seed is not None else None,
    }
    for key, value in rows.items():
        table.add_row(key, escape(value) if value is not None else _NONE)
    return table
