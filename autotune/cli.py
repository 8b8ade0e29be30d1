"""The ``autotune`` command line: parse, call the library, print, exit with a code.

Exit codes: 0 success; 1 training failed (diverged, a rank died); 2 bad input (task file,
config, CLI value) - reported as one line, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from autotune import __version__
from autotune._io import write_text_atomic
from autotune.config import TrainConfig, TunedConfig, load_tuned_config
from autotune.errors import AutotuneError
from autotune.runtime import RunOptions, RunResult, RunSummary, StepRecord, train
from autotune.task import Task, load_task

app = typer.Typer(
    name="autotune",
    help="Find the fastest stable way to train your PyTorch model on this hardware, and apply it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Turn an :class:`AutotuneError` into one line on stderr and its exit code."""
    try:
        yield
    except AutotuneError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


@contextlib.contextmanager
def _scratch_dirs() -> Iterator[None]:
    """Point TMPDIR and the inductor cache of what we start at a temp dir we remove after."""
    scratch = tempfile.mkdtemp(prefix="autotune-")
    saved = {k: os.environ.get(k) for k in ("TMPDIR", "TORCHINDUCTOR_CACHE_DIR")}
    os.environ["TMPDIR"] = scratch
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(scratch, "inductor"))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(scratch, ignore_errors=True)


def _version(value: bool) -> None:
    if value:
        out.print(f"autotune {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Find the fastest stable way to train your PyTorch model on this hardware, and apply it."""


@app.command()
def run(
    task_file: Annotated[Path, typer.Argument(help="The task file (model.py) to train.")],
    config: Annotated[
        Path | None,
        typer.Option("-c", "--config", help="A tuned.yaml, or a file with only its train: part."),
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps to train.")] = 100,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write {summary, steps} as JSON here.")
    ] = None,
    save_dir: Annotated[
        Path | None, typer.Option(help="Write a training checkpoint (last.pt) here.")
    ] = None,
    save_every: Annotated[
        int, typer.Option(min=0, help="Checkpoint every K steps (and at the end); 0: end only.")
    ] = 0,
    resume: Annotated[
        bool, typer.Option(help="Continue from the checkpoint in --save-dir, if there is one.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed for the initial weights and data order.")] = 0,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
) -> None:
    """Train TASK_FILE with a tuned config (default: the Task's baseline setup)."""
    if device not in ("auto", "cpu", "cuda"):
        raise typer.BadParameter(
            f"must be auto, cpu or cuda, but got {device!r}.", param_hint="--device"
        )
    if resume and save_dir is None:
        raise typer.BadParameter(
            "--resume needs --save-dir to find the checkpoint.", param_hint="--resume"
        )
    with _user_errors(), _scratch_dirs():
        task = load_task(task_file)
        train_config = load_tuned_config(config).train if config else task.baseline_config()
        options = RunOptions(
            steps=steps,
            seed=seed,
            device=device,  # type: ignore[arg-type]
            save_dir=save_dir,
            save_every=save_every,
            resume=resume,
        )
        result = _train_with_progress(task, train_config, options)
    if not _is_main_rank():  # under torchrun, rank 0 alone reports
        return
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(result.model_dump(), indent=1) + "\n")
    out.print(_summary_table(result.summary, train_config))
    if result.summary.stopped_reason:
        err.print(f"[bold red]training stopped:[/] {result.summary.stopped_reason}")
        raise typer.Exit(1)


def _train_with_progress(task: Task, config: TrainConfig, options: RunOptions) -> RunResult:
    if not _is_main_rank():
        return train(task, config, options)
    columns = (
        TextColumn("[bold]train[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[rate]} samples/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=False) as progress:
        bar = progress.add_task("train", total=options.steps, loss="-", rate="-")

        def show(record: StepRecord) -> None:
            progress.update(
                bar,
                completed=record.step,
                loss=f"{record.loss:.4f}",
                rate=f"{record.samples_per_s:,.0f}",
            )

        try:
            return train(task, config, options, show)
        except AutotuneError:
            progress.remove_task(bar)  # the error line is then the only output
            raise


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _summary_table(summary: RunSummary, config: TrainConfig) -> Table:
    table = Table(title="autotune run", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows = {
        "steps": f"{summary.steps_completed} / {summary.steps_requested}"
        + (f" (resumed at {summary.resumed_from_step})" if summary.resumed_from_step else ""),
        "final loss": f"{summary.final_loss:.4f} (last 10% mean {summary.smoothed_final_loss:.4f})",
        "loss finite": "yes" if summary.loss_finite else "[red]no[/]",
        "throughput": f"{summary.samples_per_s:,.1f} samples/s median of {summary.timed_steps} "
        f"steps (p10 {summary.samples_per_s_p10:,.1f}, p90 {summary.samples_per_s_p90:,.1f})",
        "peak memory": _bytes(summary.peak_memory_bytes)
        + (f" ({summary.memory_source})" if summary.memory_source else ""),
        "activation memory": _bytes(summary.activation_memory_bytes),
        "precision": summary.precision
        + (
            f", {summary.grad_scaler_overflow_steps} overflow steps skipped"
            if summary.grad_scaler_overflow_steps is not None
            else ""
        ),
        "batch": f"{config.micro_batch_size} micro x {config.grad_accum_steps} accum x "
        f"{config.world_size} ranks = {summary.global_batch_size}",
        "checkpointing": f"{len(summary.checkpointed_blocks)} blocks"
        if summary.checkpointed_blocks
        else "none",
        "device": f"{summary.device}, {summary.world_size} rank(s) x "
        f"{summary.threads_per_rank} thread(s)",
        "train time": f"{summary.train_time_s:.1f} s",
    }
    for key, value in rows.items():
        table.add_row(key, value)
    return table


def _bytes(value: int | None) -> str:
    if value is None:
        return "n/a"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:,.1f} {unit}"
    return f"{value} B"


@app.command()
def schema() -> None:
    """Print the JSON schema of tuned.yaml (TunedConfig)."""
    print(json.dumps(TunedConfig.model_json_schema(), indent=2))


def main() -> None:
    """Console-script entry point."""
    app()
