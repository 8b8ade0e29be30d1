"""The ``autotune`` command line: parse, call the library, print, exit with a code.

Exit codes: 0 success; 1 training failed (diverged, a rank died); 2 bad input (task file,
config, CLI value) - reported as one line, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import torch
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from autotune import __version__, profiler
from autotune import space as spaces
from autotune._cli_support import OneLineErrors, stop_on_signals
from autotune._host import CpuShare, CpuWatch
from autotune._io import write_text_atomic
from autotune._probe_view import probe_tables
from autotune._recheck_view import recheck_table
from autotune._search_view import SearchView, result_table, top_table
from autotune._tables import key_value_table
from autotune._tuned_view import allocator_difference, reproduction, tuned_tables
from autotune._units import format_bytes, parse_bytes, parse_duration
from autotune.config import (
    EDITED,
    OTHER_TASK,
    TrainConfig,
    TunedConfig,
    load_tuned_config,
    train_config_from_baseline,
)
from autotune.errors import AutotuneError, ConfigError
from autotune.export import EXPORTERS, ExportContext, StepLogger, write_study_summaries
from autotune.export import export as export_config
from autotune.export import require_tensorboard as _require_tensorboard
from autotune.runtime import (
    RunOptions,
    RunResult,
    RunSummary,
    StepCallback,
    StepRecord,
    threads_per_rank,
    train,
)
from autotune.search import (
    CONFIRM_MAX_PAIRS,
    CONFIRM_PAIRS,
    PATIENCE,
    RUNOFF_ROUNDS,
    SearchOptions,
    recheck,
    redact,
    resolve_study,
    run_search,
)
from autotune.task import Task, load_task

_T = TypeVar("_T")

app = typer.Typer(
    cls=OneLineErrors,  # a wrong CLI value is one line, exit 2
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
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
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


_RUN_STEPS = 100  # a quick run: past the warm-up, long enough to read a loss trend


def _default_steps(task: Task, tuned: TunedConfig | None) -> int:
    """The Task's baseline steps when ``run`` trains its baseline, else _RUN_STEPS."""
    return (task.baseline_steps() if tuned is None else None) or _RUN_STEPS


@app.command()
def run(
    task_file: Annotated[Path, typer.Argument(help="The task file (model.py) to train.")],
    config: Annotated[
        Path | None,
        typer.Option("-c", "--config", help="A tuned.yaml, or a file with only its train: part."),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Optimizer steps to train (default: the Task's baseline steps when training "
            "its baseline, else 100).",
        ),
    ] = None,
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
    tensorboard: Annotated[
        Path | None,
        typer.Option(help="Log loss, LR, samples/s and peak memory to this TensorBoard dir."),
    ] = None,
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
        tuned = load_tuned_config(config) if config else None
        train_config = tuned.train if tuned else task.baseline_config()
        options = RunOptions(
            steps=steps or _default_steps(task, tuned),
            seed=seed,
            device=device,  # type: ignore[arg-type]
            save_dir=save_dir,
            save_every=save_every,
            resume=resume,
        )
        logger = StepLogger(tensorboard) if tensorboard and _is_main_rank() else None
        train_config = _spanning(train_config, options.steps)
        _warn_of_overrun(task, train_config)
        watch = CpuWatch()
        try:
            result = _train_with_progress(task, train_config, options, logger)
            if logger is not None:
                logger.log_summary(result.summary)
        finally:
            if logger is not None:
                logger.close()
    if not _is_main_rank():  # under torchrun, rank 0 alone reports
        return
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(result.model_dump(), indent=1) + "\n")
    out.print(_summary_table(result.summary, train_config))
    contention = _contention(watch)
    if tuned is not None and tuned.edited():
        err.print(f"[bold]vs tuned.yaml:[/] {EDITED}: samples/s not compared.")
    elif tuned is not None and tuned.other_task(task_file):
        err.print(f"[bold]vs tuned.yaml:[/] {OTHER_TASK}: samples/s not compared.")
    elif tuned is not None and tuned.measured is not None:
        same, line = reproduction(result.summary.samples_per_s, tuned.measured, contention)
        (out if same else err).print(f"[bold]vs tuned.yaml:[/] {line}")
        differs = allocator_difference(tuned, os.environ.get("GLIBC_TUNABLES"))
        if differs is not None:
            err.print(f"[bold]note:[/] {escape(differs)}")
    if result.summary.stopped_reason:
        err.print(f"[bold red]training stopped:[/] {result.summary.stopped_reason}")
        raise typer.Exit(1)


def _spanning(config: TrainConfig, steps: int) -> TrainConfig:
    """``config`` with its decaying schedule stretched over a run of ``steps`` longer than
    the span it records (the search's horizon), with a note; as is otherwise. Past its
    span a schedule holds its final LR: a tuned cosine to 0 over 595 steps trained a
    1,000-step run at lr 0 for its last 405 steps."""
    schedule = config.schedule
    span = schedule.total_steps
    if span is None or steps <= span or schedule.name == "constant":
        return config
    if _is_main_rank():
        ratio = schedule.min_lr_ratio
        final = "0" if ratio == 0 else f"{ratio:g}x the peak"
        err.print(
            f"[bold]note:[/] the {schedule.name} schedule spans {span} steps (the tuned "
            f"horizon), the run {steps}: it is stretched over the run's {steps} (past its "
            f"span its lr would stay at {final}). Pass --steps {span} to train the tuned "
            "horizon.",
            highlight=False,
        )
    stretched = schedule.model_copy(update={"total_steps": steps})
    return config.model_copy(update={"schedule": stretched})


def _warn_of_overrun(task: Task, config: TrainConfig) -> None:
    """A note, before training, when one step of ``config`` takes more than an epoch of the
    task's dataset (a config tuned on another dataset; a search prunes these). At world
    size 1 only: there this process trains on the dataset it builds here (built once per
    process); spawned ranks build their own, and a slow dataset would be built once more."""
    if config.world_size > 1:
        return
    dataset = task.build_dataset()
    size = len(dataset) if hasattr(dataset, "__len__") else None
    overrun = spaces.epoch_overrun(config, size)
    if overrun is not None and spaces.short_dataset(config, size) is None and _is_main_rank():
        err.print(
            f"[bold]note:[/] {escape(overrun)}; lower grad_accum_steps or micro_batch_size.",
            highlight=False,
        )


def _contention(watch: CpuWatch) -> CpuShare | None:
    """What others used of this process's cores since ``watch`` began, told (as a note) when
    it is enough to slow the timings; None under torchrun, whose peer ranks it would count."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return None
    share = watch.share()
    if share is not None and share.busy:
        err.print(
            f"[bold]note:[/] {share.sentence()}, so the samples/s above are lower and noisier "
            "than this machine's own; measure on an idle machine.",
            highlight=False,
        )
    return share


def _train_with_progress(
    task: Task, config: TrainConfig, options: RunOptions, also: StepCallback | None = None
) -> RunResult:
    """Train with a progress bar on rank 0; ``also`` sees every step record too."""
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
            if also is not None:
                also(record)

        try:
            return train(task, config, options, show)
        except AutotuneError:
            progress.remove_task(bar)  # the error line is then the only output
            raise


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _summary_table(summary: RunSummary, config: TrainConfig) -> Table:
    table = key_value_table("autotune run")
    rows = {
        "steps": f"{summary.steps_completed} / {summary.steps_requested}"
        + (f" (resumed at {summary.resumed_from_step})" if summary.resumed_from_step else ""),
        "final loss": f"{summary.final_loss:.4f} (last 10% mean {summary.smoothed_final_loss:.4f})",
        "loss finite": "yes" if summary.loss_finite else "[red]no[/]",
        "throughput": f"{summary.samples_per_s:,.1f} samples/s median of {summary.timed_steps} "
        f"steps (p10 {summary.samples_per_s_p10:,.1f}, p90 {summary.samples_per_s_p90:,.1f})",
        "peak memory": format_bytes(summary.peak_memory_bytes)
        + (f" ({summary.memory_source})" if summary.memory_source else ""),
        "activation memory": format_bytes(summary.activation_memory_bytes),
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


@app.command()
def probe(
    task_file: Annotated[Path, typer.Argument(help="The task file (model.py) to probe.")],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the ProbeReport as JSON here.")
    ] = None,
    memory_limit: Annotated[
        str | None,
        typer.Option(
            help="Memory budget for max batch sizes, e.g. 4GB or 512MiB (default: "
            "90% of the device's memory)."
        ),
    ] = None,
) -> None:
    """Measure this hardware and TASK_FILE's model; predict memory and speed per variant."""
    limit = _parse_option(parse_bytes, memory_limit, "--memory-limit")
    with _user_errors(), _scratch_dirs():
        task = load_task(task_file)
        with Progress(*_PROBE_COLUMNS, console=err, transient=True) as progress:
            bar = progress.add_task("probe", total=None, what="starting")

            def show(update: profiler.ProbeProgress) -> None:
                progress.update(bar, completed=update.done, total=update.total, what=update.message)

            report = profiler.probe(task, memory_limit_bytes=limit, on_progress=show)
        baseline_batch = train_config_from_baseline(task).global_batch
    if json_out is not None:
        write_text_atomic(json_out, report.model_dump_json(indent=1) + "\n")
    for table in probe_tables(report, baseline_batch):
        out.print(table)


@app.command()
def search(
    task_file: Annotated[Path, typer.Argument(help="The task file (model.py) to tune.")],
    space: Annotated[
        str, typer.Option(help="Search space: default, transformer, cnn, or a YAML file.")
    ] = "default",
    budget: Annotated[str, typer.Option(help="Wall-clock budget: 300, 90s, 5m or 1h.")] = "5m",
    trials: Annotated[
        int | None, typer.Option(min=1, help="Most convergence trials (default: budget-bound).")
    ] = None,
    storage: Annotated[
        str, typer.Option(help="Optuna storage URL (SQLite file or any RDB).")
    ] = "sqlite:///autotune.db",
    study_name: Annotated[
        str | None,
        typer.Option(
            help="Study name (default: the task file's stem, or stem-2, ... once that study "
            "holds a search of another version of the task or options)."
        ),
    ] = None,
    target_loss: Annotated[
        float | None, typer.Option(help="Loss to reach (default: what the baseline reaches).")
    ] = None,
    memory_limit: Annotated[
        str | None, typer.Option(help="Memory budget, e.g. 4GB (default: 90% of the device's).")
    ] = None,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Where to write the result.")
    ] = Path("tuned.yaml"),
    seed: Annotated[int, typer.Option(help="Seed of every run: same init and data order.")] = 0,
    patience: Annotated[
        int,
        typer.Option(
            min=0,
            help="Stop once this many trials in a row gain under 5% on the best "
            "(0: spend the whole budget; --trials always runs them all).",
        ),
    ] = PATIENCE,
    confirm_pairs: Annotated[
        int,
        typer.Option(
            min=CONFIRM_PAIRS,
            help=f"Most winner/baseline pairs in the confirmation: {CONFIRM_PAIRS} always run, "
            "more while the speed-up's spread is wide and the budget has room.",
        ),
    ] = CONFIRM_MAX_PAIRS,
    runoff: Annotated[
        int,
        typer.Option(
            min=0,
            help="Re-run the trials within 30% of the best this many times each, interleaved, "
            "and pick the best median (0: the fastest single run wins).",
        ),
    ] = RUNOFF_ROUNDS,
    tensorboard: Annotated[
        Path | None,
        typer.Option(help="After the search, write one TensorBoard point per trial here."),
    ] = None,
) -> None:
    """Find the fastest stable config for TASK_FILE and write it to tuned.yaml."""
    options = SearchOptions(
        task_path=task_file,
        space=space,
        budget_s=_parse_option(parse_duration, budget, "--budget") or 300.0,
        trials=trials,
        storage=storage,
        study_name=study_name,
        target_loss=target_loss,
        memory_limit_bytes=_parse_option(parse_bytes, memory_limit, "--memory-limit"),
        output=output,
        seed=seed,
        patience=patience or None,
        confirm_max_pairs=confirm_pairs,
        runoff_rounds=runoff,
    )
    with _user_errors():
        resolved = resolve_study(options)  # the study's name, for the interrupted summary
    name = str(resolved.options.study_name)
    with _user_errors(), _scratch_dirs(), stop_on_signals(err, storage, name):
        if tensorboard is not None:
            _require_tensorboard()  # before the search: a missing package costs no budget
        err.print(f"study storage: {redact(storage)}", highlight=False, soft_wrap=True)
        if resolved.note is not None:
            err.print(escape(resolved.note), highlight=False, soft_wrap=True)
        with SearchView(err) as view:
            outcome = run_search(resolved.options, view.note, view.progress)
        if tensorboard is not None:
            write_study_summaries(outcome.studies.convergence, None, tensorboard)
            write_study_summaries(outcome.studies.systems, None, tensorboard / "systems")
    out.print(result_table(outcome, str(output)))
    out.print(top_table(outcome.top))


_PROBE_COLUMNS = (
    TextColumn("[bold]probe[/]"),
    BarColumn(),
    MofNCompleteColumn(),
    TextColumn("{task.fields[what]}"),
)


def _parse_option(parse: Callable[[str], _T], text: str | None, name: str) -> _T | None:
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=name) from None


@app.command()
def report(
    storage: Annotated[
        str, typer.Option(help="Optuna storage URL the search used (SQLite file or any RDB).")
    ] = "sqlite:///autotune.db",
    study: Annotated[
        str | None,
        typer.Option(help="Study name (default: the one tuned.yaml names, else the only one)."),
    ] = None,
    tuned: Annotated[
        Path | None,
        typer.Option(help="tuned.yaml for baseline vs tuned (default: ./tuned.yaml if present)."),
    ] = None,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Where to write the HTML report.")
    ] = Path("report.html"),
) -> None:
    """Write one self-contained HTML report (works offline) of a search's study."""
    from autotune.report import write_report  # plotly loads only for this command

    with _user_errors():
        data = write_report(storage, output, study, tuned)
    out.print(
        f"wrote {output}: study {escape(data.study_name)}, {len(data.convergence)} convergence "
        f"and {len(data.systems)} systems trials",
        highlight=False,
        soft_wrap=True,
    )
    dashboard = f"optuna-dashboard {shlex.quote(data.storage)}"  # a path may hold spaces
    out.print(f"explore it live: {escape(dashboard)}", highlight=False, soft_wrap=True)


@app.command()
def show(
    config: Annotated[Path, typer.Argument(help="The tuned.yaml to show.")] = Path("tuned.yaml"),
) -> None:
    """Show a tuned config beside its baseline, with the speed-ups it measured.

    Every setting, baseline vs tuned; the measured speed-ups with their spread; peak
    memory, MFU, the target loss and where it came from.
    """
    with _user_errors():
        tuned = load_tuned_config(config)
    for table in tuned_tables(tuned, str(config)):
        out.print(table)


@app.command()
def check(
    config: Annotated[Path, typer.Argument(help="The tuned.yaml to check.")] = Path("tuned.yaml"),
    task: Annotated[
        Path | None, typer.Option(help="The task file (default: the one tuned.yaml names).")
    ] = None,
    pairs: Annotated[
        int, typer.Option(min=CONFIRM_PAIRS, help="Tuned/baseline pairs that always run.")
    ] = CONFIRM_PAIRS,
    most: Annotated[
        int,
        typer.Option(min=CONFIRM_PAIRS, help="Most pairs, run while the numbers are unsettled."),
    ] = CONFIRM_MAX_PAIRS,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed of the first pair; pair k trains on seed+k (default: the seeds of "
            "the search's confirmation, so the check repeats its pairs)."
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the verdict and numbers here.")
    ] = None,
) -> None:
    """Re-measure whether a tuned config's speed-up still holds on this machine.

    It and its baseline run in interleaved pairs to its target loss. Exit 0 when its
    time-to-target speed-up still holds, 1 when not, 2 when the file has nothing to check.
    """
    with _user_errors(), _scratch_dirs():
        tuned = load_tuned_config(config)
        task_file = _task_of(tuned, task)
        err.print(f"checking {escape(str(config))} on {escape(str(task_file))}", highlight=False)
        watch = CpuWatch()
        with tempfile.TemporaryDirectory(prefix="autotune-check-") as workdir:
            found = recheck(
                tuned,
                task_file,
                Path(workdir),
                pairs=pairs,
                most=max(most, pairs),
                seed=seed,
                after_pair=lambda done: err.print(done.last_pair(), highlight=False),
            )
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(found.summary(), indent=1) + "\n")
    out.print(recheck_table(found, str(config)))
    _contention(watch)
    if not found.holds():
        raise typer.Exit(1)


def _task_of(tuned: TunedConfig, override: Path | None) -> Path:
    """The task file to run: ``override``, else the one the tuned config names, loaded
    once here so that a wrong one is one line, not a failed run per pair."""
    if override is None and tuned.task is None:
        raise ConfigError("the tuned config names no task file; pass it with --task model.py.")
    path = override or Path(str(tuned.task))
    load_task(path)
    return path


@app.command()
def export(
    config: Annotated[Path, typer.Argument(help="The tuned.yaml to export.")],
    to: Annotated[str, typer.Option("--to", help=f"Format: {', '.join(EXPORTERS)}.")],
    task: Annotated[
        str | None, typer.Option(help="Task file for torchrun (default: the config's task).")
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(min=1, help="Optimizer steps (default: the schedule's total_steps)."),
    ] = None,
    device: Annotated[
        str, typer.Option(help="cpu, cuda or auto (the measured device, else CUDA if present).")
    ] = "auto",
) -> None:
    """Print the tuned CONFIG in another tool's format on stdout.

    Each setting the format cannot express is a `note:` line on stderr.
    """
    with _user_errors():
        tuned = load_tuned_config(config)
        kind = _export_device(tuned, device)
        ctx = ExportContext(
            config_path=str(config),
            task=task,
            steps=steps,
            device=kind,
            threads_per_rank=threads_per_rank(tuned.train.world_size),
        )
        result = export_config(tuned, to, ctx)
    print(result.text, end="")
    for note in result.notes:
        err.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)


def _export_device(tuned: TunedConfig, choice: str) -> Literal["cpu", "cuda"]:
    if choice in ("cpu", "cuda"):
        return choice  # type: ignore[return-value]
    if choice != "auto":
        raise ConfigError(f"--device must be auto, cpu or cuda, but got {choice!r}; pick one.")
    if tuned.measured is not None:
        return tuned.measured.device.kind
    return "cuda" if torch.cuda.is_available() else "cpu"


@app.command()
def schema() -> None:
    """Print the JSON schema of tuned.yaml (TunedConfig)."""
    print(json.dumps(TunedConfig.model_json_schema(), indent=2))
