"""The CLI's error contract: bad input exits 2 with one line naming the file, no traceback."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from autotune import __version__
from autotune.cli import app
from tests.conftest import TINY_TASK

WriteTask = Callable[..., Path]

runner = CliRunner()

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
# The run's progress bar, as rich renders it on a non-terminal when it stops.
_PROGRESS = re.compile(r"^train\s.*samples/s")


def variant(old: str, new: str) -> str:
    assert old in TINY_TASK, old
    return TINY_TASK.replace(old, new)


def stderr_of(result: Result) -> str:
    """What the command wrote to stderr (all output where the runner does not split it)."""
    try:
        text = result.stderr
    except ValueError:  # an older click whose runner mixes stderr into output
        text = result.output
    return _ANSI.sub("", text).replace("\r", "\n")


def error_line(result: Result) -> str:
    """The one error line the command printed; checks there is exactly one and no traceback."""
    assert "Traceback" not in result.output
    assert "Traceback" not in stderr_of(result)
    lines = [line for line in stderr_of(result).splitlines() if line.strip()]
    lines = [line for line in lines if not _PROGRESS.match(line)]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    return lines[0]


def run(*args: str) -> Result:
    return runner.invoke(app, list(args))


def good_config(tmp_path: Path) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text("train:\n  micro_batch_size: 8\n  optimizer: {lr: 0.01}\n")
    return path


# -- sanity: the good task runs, so the failures below are about what they change ----------


def test_good_task_runs(write_task: WriteTask, tmp_path: Path) -> None:
    path = write_task(TINY_TASK)
    result = run("run", str(path), "--steps", "1", "-c", str(good_config(tmp_path)))
    assert result.exit_code == 0, result.output
    assert "error:" not in result.output


# -- bad task files ------------------------------------------------------------------------

TINY_LOSS = "    return nn.functional.cross_entropy(model(x).float(), y)"
TINY_DATA = "    return TensorDataset(x, y)"

# Where the error is found: at load time (before training starts) or on the first step.
BAD_TASKS: list[tuple[str, str | None, str]] = [
    ("syntax-error", variant(TINY_LOSS, "    return (model(x)"), r"model\.py:\d+: syntax error"),
    (
        "import-raises",
        TINY_TASK + "\nraise RuntimeError('no data here')\n",
        r"model\.py:\d+: importing the task file raised RuntimeError: no data here",
    ),
    (
        "exit-at-import",
        TINY_TASK + "\nimport sys\nsys.exit(0)\n",
        r"model\.py:\d+: importing the task file raised SystemExit: 0",
    ),
    ("no-task", "import torch\nx = 1\n", r"model\.py defines no `task`"),
    ("wrong-type", TINY_TASK + "\ntask = 'mlp'\n", r"model\.py: `task` is str 'mlp'"),
    (
        "empty-dataset",
        variant(TINY_DATA, "    return TensorDataset(x[:0], y[:0])"),
        r"model\.py: the dataset is empty",
    ),
    (
        "non-scalar-loss",
        variant(TINY_LOSS, TINY_LOSS.rstrip(")") + ", reduction='none')"),
        r"model\.py: the loss function returned a tensor of shape \(16,\), not a scalar",
    ),
    (
        "float-loss",
        variant(TINY_LOSS, TINY_LOSS + ".item()"),
        r"model\.py: the loss function returned float",
    ),
    (
        "uncollatable-batch",
        variant(TINY_DATA, "    return [(torch.randn(8 + i % 2), i % 2) for i in range(64)]"),
        r"model\.py: a batch of 16 samples cannot be collated",
    ),
    (
        "loss-raises",
        variant(TINY_LOSS, "    raise ValueError('labels out of range')"),
        r"model\.py:\d+: computing the loss raised ValueError: labels out of range",
    ),
]


@pytest.mark.parametrize(
    ("source", "pattern"), [case[1:] for case in BAD_TASKS], ids=[case[0] for case in BAD_TASKS]
)
def test_bad_task_file_is_one_line(write_task: WriteTask, source: str, pattern: str) -> None:
    path = write_task(source)
    result = run("run", str(path), "--steps", "1")
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert str(path) in line
    assert re.search(pattern, line), line
    assert result.stdout == ""  # no summary table for a run that failed


def test_missing_task_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.py"
    result = run("run", str(path), "--steps", "1")
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert f"Task file '{path}' does not exist" in line


def test_task_file_that_is_not_python(write_task: WriteTask) -> None:
    path = write_task(TINY_TASK, "model.txt")
    result = run("run", str(path), "--steps", "1")
    assert result.exit_code == 2, result.output
    assert "is not a .py file" in error_line(result)


def test_bad_baseline_is_one_line(write_task: WriteTask) -> None:
    path = write_task(variant("lr=1e-2)", "lr=1e-2, epochs=3)"))
    result = run("run", str(path), "--steps", "1")
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert str(path) in line and "unknown key 'epochs'" in line


def test_training_time_error_is_the_only_line_on_stderr(write_task: WriteTask) -> None:
    path = write_task(variant(TINY_DATA, "    return TensorDataset(x[:0], y[:0])"))
    result = run("run", str(path), "--steps", "1")
    assert result.exit_code == 2
    lines = [line for line in stderr_of(result).splitlines() if line.strip()]
    assert len(lines) == 1, lines


# -- bad config files ----------------------------------------------------------------------

BAD_CONFIGS: list[tuple[str, str, str]] = [
    (
        "malformed",
        "train:\n  micro_batch_size: 8\n  optimizer: {lr: 1e-3\n",
        r":\d+: malformed YAML",
    ),
    (
        "unknown-key",
        "train: {micro_batch_size: 8, optimizer: {lr: 0.01}, batch: 8}\n",
        r"batch: unknown key; remove it or check its spelling",
    ),
    (
        "out-of-range",
        "train: {micro_batch_size: 0, optimizer: {lr: 0.01}}\n",
        r"micro_batch_size: Input should be greater than or equal to 1 \(got 0\)",
    ),
    (
        "global-batch",
        "train: {micro_batch_size: 8, grad_accum_steps: 2, global_batch_size: 8, "
        "optimizer: {lr: 0.01}}\n",
        r"= 8 x 2 x 1 = 16, but got 8",
    ),
    ("no-train", "micro_batch_size: 8\n", r"no `train:` section"),
    ("a-list", "- train\n", r"expected a YAML mapping"),
]


@pytest.mark.parametrize(
    ("text", "pattern"), [case[1:] for case in BAD_CONFIGS], ids=[case[0] for case in BAD_CONFIGS]
)
def test_bad_config_file_is_one_line(
    write_task: WriteTask, tmp_path: Path, text: str, pattern: str
) -> None:
    config = tmp_path / "tuned.yaml"
    config.write_text(text)
    result = run("run", str(write_task(TINY_TASK)), "-c", str(config), "--steps", "1")
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert str(config) in line
    assert re.search(pattern, line), line


def test_missing_config_file(write_task: WriteTask, tmp_path: Path) -> None:
    config = tmp_path / "nope.yaml"
    result = run("run", str(write_task(TINY_TASK)), "-c", str(config), "--steps", "1")
    assert result.exit_code == 2, result.output
    assert f"Config file '{config}' does not exist" in error_line(result)


# -- other commands and CLI values -----------------------------------------------------------


def test_schema_prints_json() -> None:
    result = run("schema")
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert "TrainConfig" in schema["$defs"]
    assert schema["$defs"]["TrainConfig"]["additionalProperties"] is False


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"autotune {__version__}"


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--steps", "0"], "--steps"),
        (["--steps", "many"], "--steps"),
        (["--device", "tpu"], "--device"),
        (["--save-every", "-1"], "--save-every"),
        (["--resume"], "--resume"),
        (["--no-such-option"], "--no-such-option"),
    ],
)
def test_wrong_cli_value_exits_2(write_task: WriteTask, args: list[str], option: str) -> None:
    result = run("run", str(write_task(TINY_TASK)), *args)
    assert result.exit_code == 2, result.output
    assert option in stderr_of(result)
    assert "Traceback" not in result.output


def test_no_arguments_shows_help() -> None:
    result = run()
    assert result.exit_code in (0, 2)
    assert "run" in result.output and "schema" in result.output


def test_every_command_has_a_one_line_summary_in_the_help() -> None:
    # `autotune --help` lists each command by its docstring's first paragraph, line breaks
    # kept: a summary that wraps in the source breaks the list mid-sentence.
    for command in app.registered_commands:
        doc = (command.callback.__doc__ or "") if command.callback else ""
        summary = doc.strip().split("\n\n")[0]
        assert summary and "\n" not in summary, (command.callback, summary)
    listing = _ANSI.sub("", runner.invoke(app, ["--help"], env={"COLUMNS": "120"}).output)
    assert "Re-measure whether a tuned config's speed-up still holds on this machine." in listing
