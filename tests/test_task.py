"""The task contract: load_task, Task's own checks, its checked calls and baseline_config."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import IterableDataset, TensorDataset

from autotune import ConfigError, Task, TaskError, load_task
from tests.conftest import TINY_TASK

WriteTask = Callable[..., Path]

TINY_TASK_LINE = "task = Task(model=build_model, dataset=build_dataset, loss=loss_fn,"
TINY_LOSS = "    return nn.functional.cross_entropy(model(x).float(), y)"
TINY_DATA = "    return TensorDataset(x, y)"
TINY_MODEL = "    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))"


def variant(old: str, new: str, source: str = TINY_TASK) -> str:
    """TINY_TASK with one piece replaced (and a check that the piece is there)."""
    assert old in source, old
    return source.replace(old, new)


def functions_only() -> str:
    """TINY_TASK without its ``task = Task(...)``: the plain-functions form."""
    head, sep, _ = TINY_TASK.partition(TINY_TASK_LINE)
    assert sep
    return head


def line_of(path: Path, needle: str) -> int:
    """The 1-based line of the first line of ``path`` containing ``needle``."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def fails(
    error: type[Exception], pattern: str, fn: Callable[..., Any], *args: Any, **kwargs: Any
) -> str:
    """Call ``fn``; check it raises ``error`` matching ``pattern``, on one line."""
    with pytest.raises(error, match=pattern) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    assert "Traceback" not in message
    return message


def at(path: Path, line: int | None = None) -> str:
    """A regex for the start of a message naming ``path`` (and ``line``)."""
    return "^" + re.escape(f"{path}:{line}" if line is not None else str(path))


def a_batch(task: Task, size: int = 4) -> Any:
    data = task.build_dataset()
    return task.collate([data[i] for i in range(size)])


# -- loading good files ----------------------------------------------------------------


def test_task_form_loads(write_task: WriteTask) -> None:
    path = write_task(TINY_TASK)
    task = load_task(path)
    assert isinstance(task, Task)
    assert task.source == str(path)
    assert task.where() == str(path)
    assert task.display_name == "model"
    assert task.optimizer == "adamw"
    assert dict(task.baseline) == {"batch_size": 16, "lr": 1e-2}
    model = task.build_model()
    assert isinstance(model, nn.Module)
    assert task.build_model() is not model  # a fresh model on every call
    assert len(task.build_dataset()) == 256  # type: ignore[arg-type]
    loss = task.compute_loss(model, a_batch(task))
    assert loss.ndim == 0 and loss.requires_grad and torch.isfinite(loss)


def test_task_form_loads_from_str_path(write_task: WriteTask) -> None:
    path = write_task(TINY_TASK, "other_name.py")
    task = load_task(str(path))
    assert task.source == str(path)
    assert task.display_name == "other_name"


def test_function_form_loads(write_task: WriteTask) -> None:
    path = write_task(functions_only(), "functions.py")
    task = load_task(path)
    assert task.source == str(path)
    assert task.optimizer == "adamw"
    assert dict(task.baseline) == {"batch_size": 32, "lr": 1e-3}
    assert task.target_loss is None
    loss = task.compute_loss(task.build_model(), a_batch(task))
    assert loss.ndim == 0 and loss.requires_grad


def test_in_memory_task_names_itself() -> None:
    task = Task(model=nn.Identity, dataset=list, loss=lambda m, b: b, name="mine")
    assert task.where() == "the task"
    assert task.display_name == "mine"


# -- files that do not load ------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.py"
    fails(
        TaskError,
        re.escape(f"Task file '{path}' does not exist") + ".*pass the path to a Python file",
        load_task,
        path,
    )


def test_directory_is_not_a_task_file(tmp_path: Path) -> None:
    fails(TaskError, "is a directory; pass the path to the Python file in it", load_task, tmp_path)


def test_not_a_py_file(write_task: WriteTask) -> None:
    path = write_task(TINY_TASK, "model.txt")
    fails(
        TaskError,
        re.escape(f"Task file '{path}' is not a .py file") + "; pass a Python task file",
        load_task,
        path,
    )


def test_syntax_error_names_file_and_line(write_task: WriteTask) -> None:
    path = write_task(variant(TINY_LOSS, "    return (model(x)"))
    fails(
        TaskError,
        at(path, line_of(path, "return (model(x)")) + r": syntax error \(.*\); fix the syntax",
        load_task,
        path,
    )


def test_syntax_error_in_imported_helper_names_the_helper(write_task: WriteTask) -> None:
    helper = write_task("ok = 1\nbroken = (\n", "helper_with_bad_syntax.py")
    path = write_task("import helper_with_bad_syntax\n" + TINY_TASK)
    message = fails(TaskError, at(helper, 2) + ": syntax error", load_task, path)
    assert "fix the syntax of that file" in message


def test_raise_at_import_names_file_and_line(write_task: WriteTask) -> None:
    path = write_task(TINY_TASK + "\nraise RuntimeError('no data at /srv/x')\n")
    fails(
        TaskError,
        at(path, line_of(path, "raise RuntimeError"))
        + re.escape(": importing the task file raised RuntimeError: no data at /srv/x; ")
        + "fix the error at that line",
        load_task,
        path,
    )


def test_raise_at_import_points_at_innermost_line_in_the_file(write_task: WriteTask) -> None:
    source = TINY_TASK + ("\ndef load_vocab():\n    return {}['missing']\n\nVOCAB = load_vocab()\n")
    path = write_task(source)
    fails(
        TaskError,
        at(path, line_of(path, "return {}['missing']")) + ": importing the task file raised "
        "KeyError: 'missing'",
        load_task,
        path,
    )


@pytest.mark.parametrize(
    "call", ["sys.exit(0)", "sys.exit()", "argparse.ArgumentParser().parse_args(['-x'])"]
)
def test_exit_at_import_is_an_error_not_a_silent_exit(write_task: WriteTask, call: str) -> None:
    path = write_task("import argparse, sys\n" + TINY_TASK + f"\n{call}\n")
    fails(
        TaskError,
        at(path, line_of(path, call)) + ": importing the task file raised SystemExit",
        load_task,
        path,
    )


def test_multiline_exception_message_is_cut_to_its_first_line(write_task: WriteTask) -> None:
    path = write_task(TINY_TASK + "\nraise ValueError('first line\\nsecond line')\n")
    message = fails(TaskError, "ValueError: first line;", load_task, path)
    assert "second line" not in message


def test_failed_import_is_not_left_in_sys_modules(write_task: WriteTask) -> None:
    import sys

    before = set(sys.modules)
    path = write_task(TINY_TASK + "\nraise RuntimeError('boom')\n")
    fails(TaskError, "boom", load_task, path)
    assert not [name for name in set(sys.modules) - before if name.startswith("autotune_task_")]


def test_neither_task_nor_functions(write_task: WriteTask) -> None:
    path = write_task("import torch\nx = 1\n")
    fails(
        TaskError,
        at(path)
        + re.escape(
            " defines no `task` and no `build_model`, `build_dataset`, `loss_fn`; define "
            "`task = autotune.Task(model=..., dataset=..., loss=...)` or the three functions"
        ),
        load_task,
        path,
    )


def test_some_functions_missing_names_the_missing_ones(write_task: WriteTask) -> None:
    source = variant(
        "def loss_fn(model, batch):", "def compute_loss(model, batch):", functions_only()
    )
    path = write_task(source)
    message = fails(
        TaskError, at(path) + re.escape(" defines no `task` and no `loss_fn`;"), load_task, path
    )
    assert "`build_model`" not in message and "`build_dataset`" not in message


@pytest.mark.parametrize(
    ("value", "shown"),
    [("3", "int 3"), ("build_model", "function"), ("{'model': build_model}", "dict")],
)
def test_task_of_the_wrong_type(write_task: WriteTask, value: str, shown: str) -> None:
    path = write_task(functions_only() + f"\ntask = {value}\n")
    fails(
        TaskError,
        at(path) + re.escape(f": `task` is {shown}") + ".*, not an autotune.Task; define "
        r"`task = autotune\.Task\(",
        load_task,
        path,
    )


def test_function_form_with_a_non_function(write_task: WriteTask) -> None:
    path = write_task(functions_only() + "\nbuild_dataset = [1, 2, 3]\n")
    fails(
        TaskError,
        at(path) + ": Task.dataset must be a function .* but got list",
        load_task,
        path,
    )


# -- Task fields of the wrong type ------------------------------------------------------

BAD_FIELDS: list[tuple[dict[str, Any], str]] = [
    (
        {"model": 3},
        r"Task\.model must be a function \(\) -> torch\.nn\.Module, but got int 3; "
        r"pass the function itself, not its result",
    ),
    (
        {"model": nn.Linear(2, 2)},
        r"Task\.model must be a function .* but got Linear .*"
        r"pass the function itself, not its result",
    ),
    (
        {"dataset": TensorDataset(torch.zeros(2))},
        r"Task\.dataset must be a function .* but got "
        r"TensorDataset",
    ),
    ({"loss": None}, r"Task\.loss must be a function \(model, batch\) -> scalar tensor"),
    (
        {"optimizer": "lion"},
        r"Task\.optimizer must be one of sgd, adam, adamw, adagrad, rmsprop "
        r"or a function \(params, lr\) -> Optimizer, but got 'lion'",
    ),
    ({"optimizer": 0.1}, r"Task\.optimizer must be a name such as 'adamw' .* but got float 0\.1"),
    (
        {"baseline": [32, 1e-3]},
        r"Task\.baseline must be a dict such as "
        r"dict\(batch_size=32, lr=1e-3\), but got list",
    ),
    ({"baseline": "batch_size=32"}, r"Task\.baseline must be a dict"),
    (
        {"baseline": {"batch_size": 16, "lr": 1e-3, "steps": 10}},
        r"Task\.baseline steps must be a whole number of optimizer steps >= 30, but got "
        r"steps=10; give e\.g\. steps=200, or leave it out",
    ),
    (
        {"baseline": {"batch_size": 16, "lr": 1e-3, "steps": 80.0}},
        r"Task\.baseline steps must be a whole number .* but got steps=80\.0",
    ),
    (
        {"baseline": {"batch_size": 16, "lr": 1e-3, "steps": True}},
        r"Task\.baseline steps must be a whole number .* but got steps=True",
    ),
    (
        {"target_loss": float("nan")},
        r"Task\.target_loss must be a finite number or None, but "
        r"got nan; use None",
    ),
    (
        {"target_loss": float("inf")},
        r"Task\.target_loss must be a finite number or None, but "
        r"got inf",
    ),
    ({"target_loss": "0.5"}, r"Task\.target_loss must be a finite number or None, but got '0\.5'"),
    ({"blocks": 3}, r"Task\.blocks must be a list of module names or a function"),
    ({"blocks": ["layers.*", 1]}, r"Task\.blocks must be a list of module names"),
    ({"collate_fn": "stack"}, r"Task\.collate_fn must be a function list\[sample\] -> batch"),
]


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    BAD_FIELDS,
    ids=[f"{k}={type(v).__name__}" for kwargs, _ in BAD_FIELDS for k, v in kwargs.items()],
)
def test_bad_field_constructed_directly(kwargs: dict[str, Any], pattern: str) -> None:
    fields: dict[str, Any] = {"model": nn.Identity, "dataset": list, "loss": lambda m, b: b}
    fields.update(kwargs)
    fails(TaskError, "^" + pattern, Task, **fields)


@pytest.mark.parametrize(
    ("argument", "pattern"),
    [
        ("model=build_model()", r"Task\.model must be a function"),
        ("optimizer='lion'", r"Task\.optimizer must be one of"),
        ("baseline=[16, 1e-2]", r"Task\.baseline must be a dict"),
        (
            "target_loss=float('nan')",
            r"Task\.target_loss must be a finite number or None, but got nan",
        ),
    ],
)
def test_bad_field_in_a_file_names_file_and_line(
    write_task: WriteTask, argument: str, pattern: str
) -> None:
    call = f"task = Task(model=build_model, dataset=build_dataset, loss=loss_fn, {argument})\n"
    if argument.startswith("model="):
        call = f"task = Task(dataset=build_dataset, loss=loss_fn, {argument})\n"
    path = write_task(functions_only() + call)
    fails(TaskError, at(path, line_of(path, "task = Task(")) + ": " + pattern, load_task, path)


def test_good_optional_fields_are_accepted() -> None:
    task = Task(
        model=nn.Identity,
        dataset=list,
        loss=lambda m, b: b,
        optimizer=lambda params, lr: torch.optim.SGD(params, lr=lr),
        baseline={"batch_size": 4, "lr": 0.1},
        target_loss=0,
        blocks=["layers.*"],
        collate_fn=list,
    )
    assert task.target_loss == 0
    assert Task(model=nn.Identity, dataset=list, loss=len, blocks=lambda m: [m]).blocks


# -- the checked calls into user code ---------------------------------------------------


def test_build_model_returning_a_non_module(write_task: WriteTask) -> None:
    path = write_task(variant(TINY_MODEL, "    return {'weights': torch.zeros(2)}"))
    task = load_task(path)
    fails(
        TaskError,
        at(path) + r": the model function returned dict .*, not a torch\.nn\.Module; "
        r"return the module instance",
        task.build_model,
    )


def test_empty_dataset(write_task: WriteTask) -> None:
    path = write_task(variant(TINY_DATA, "    return TensorDataset(x[:0], y[:0])"))
    task = load_task(path)
    fails(
        TaskError,
        at(path) + re.escape(": the dataset is empty (length 0); return a dataset with at least"),
        task.build_dataset,
    )


def test_dataset_that_is_not_a_dataset(write_task: WriteTask) -> None:
    path = write_task(variant(TINY_DATA, "    return 256"))
    task = load_task(path)
    fails(
        TaskError,
        at(path) + r": the dataset function returned int 256, which is neither a map-style "
        r"Dataset .* nor an IterableDataset",
        task.build_dataset,
    )


def test_a_generator_for_a_dataset_is_told_to_become_an_iterable_dataset(
    write_task: WriteTask,
) -> None:
    generator = "    return ((x[i], y[i]) for i in range(len(x)))"
    task = load_task(write_task(variant(TINY_DATA, generator)))
    fails(
        TaskError,
        r"returned generator .* nor an IterableDataset; yield its samples from the __iter__ of "
        r"a torch\.utils\.data\.IterableDataset, which every epoch iterates afresh\.$",
        task.build_dataset,
    )


def test_a_dataloader_for_a_dataset_is_told_to_return_its_dataset(write_task: WriteTask) -> None:
    """A common slip: build_dataset returning the DataLoader of the user's own loop."""
    loader = (
        "    from torch.utils.data import DataLoader\n    return DataLoader(TensorDataset(x, y))"
    )
    task = load_task(write_task(variant(TINY_DATA, loader)))
    fails(
        TaskError,
        r": the dataset function returned a DataLoader; return its dataset \(the loader's "
        r"\.dataset, and its collate_fn as Task\(collate_fn=\.\.\.\)\): autotune makes the batches",
        task.build_dataset,
    )


def test_dataset_whose_len_raises_names_the_line(write_task: WriteTask) -> None:
    source = TINY_TASK + (
        "\nclass Broken(torch.utils.data.Dataset):\n"
        "    def __getitem__(self, i):\n        return i\n"
        "    def __len__(self):\n        raise OSError('index file missing')\n"
        "\ntask = Task(model=build_model, dataset=Broken, loss=loss_fn)\n"
    )
    path = write_task(source)
    task = load_task(path)
    fails(
        TaskError,
        at(path, line_of(path, "raise OSError"))
        + ": taking the dataset's length raised OSError: index file missing",
        task.build_dataset,
    )


def test_iterable_dataset_is_accepted_without_len() -> None:
    class Stream(IterableDataset[int]):
        def __iter__(self) -> Any:
            return iter(range(3))

    task = Task(model=nn.Identity, dataset=Stream, loss=lambda m, b: b)
    assert isinstance(task.build_dataset(), Stream)


def test_collate_stacks_good_samples(write_task: WriteTask) -> None:
    task = load_task(write_task(TINY_TASK))
    x, y = a_batch(task, size=5)
    assert x.shape == (5, 8) and y.shape == (5,)


def test_collate_of_samples_of_different_shapes(write_task: WriteTask) -> None:
    ragged = "    return [(torch.randn(8 + i % 2), i % 2) for i in range(64)]"
    path = write_task(variant(TINY_DATA, ragged))
    task = load_task(path)
    data = task.build_dataset()
    fails(
        TaskError,
        at(path) + r": a batch of 2 samples cannot be collated \(RuntimeError: .*\); make every "
        r"sample the same shape and type, or pass Task\(collate_fn=\.\.\.\)",
        task.collate,
        [data[0], data[1]],
    )


def test_custom_collate_fn_is_used_and_its_errors_are_reported() -> None:
    def collate(samples: list[Any]) -> Any:
        if len(samples) > 2:
            raise ValueError("too many")
        return samples

    task = Task(model=nn.Identity, dataset=list, loss=lambda m, b: b, collate_fn=collate)
    assert task.collate([1, 2]) == [1, 2]
    fails(
        TaskError,
        r"^the task: a batch of 3 samples cannot be collated \(ValueError: too many\)",
        task.collate,
        [1, 2, 3],
    )


@pytest.mark.parametrize(
    ("loss", "pattern"),
    [
        (
            "    return nn.functional.cross_entropy(model(x).float(), y).item()",
            r"the loss function returned float .*, not a torch\.Tensor; return the loss tensor "
            r"itself, not loss\.item\(\)",
        ),
        (
            "    return nn.functional.cross_entropy(model(x).float(), y, reduction='none')",
            r"the loss function returned a tensor of shape \(4,\), not a scalar; reduce it, "
            r"e\.g\. `loss\.mean\(\)`",
        ),
        (
            "    return nn.functional.cross_entropy(model(x).float(), y).detach()",
            r"the loss does not require grad, so it cannot train the model; compute it from the "
            r"model's output and do not detach it",
        ),
        (
            "    loss = nn.functional.cross_entropy(model(x).float(), y)\n"
            "    return loss, {'acc': (model(x).argmax(1) == y).float().mean()}",
            r"the loss function returned tuple .*, not a torch\.Tensor; return the loss tensor "
            r"alone; compute metrics such as accuracy outside the loss function",
        ),
        (
            "    from types import SimpleNamespace\n"
            "    return SimpleNamespace(loss=nn.functional.cross_entropy(model(x).float(), y))",
            r"the loss function returned SimpleNamespace .*, not a torch\.Tensor; return its "
            r"loss tensor, e\.g\. `return model\(\*\*batch\)\.loss`",
        ),
        (
            "    model.requires_grad_(False)\n"
            "    return nn.functional.cross_entropy(model(x).float(), y)",
            r"the model has no trainable parameter \(requires_grad is False on every one\), so "
            r"nothing can train; unfreeze what should train in build_model",
        ),
    ],
    ids=["float", "not-scalar", "no-grad", "tuple", "model-output", "all-frozen"],
)
def test_bad_loss(write_task: WriteTask, loss: str, pattern: str) -> None:
    path = write_task(variant(TINY_LOSS, loss))
    task = load_task(path)
    fails(
        TaskError, at(path) + ": " + pattern, task.compute_loss, task.build_model(), a_batch(task)
    )


@pytest.mark.parametrize(
    ("old", "new", "call", "doing"),
    [
        (
            TINY_MODEL,
            "    raise ValueError('width must be even')",
            "build_model",
            "building the model",
        ),
        (
            TINY_DATA,
            "    raise ValueError('width must be even')",
            "build_dataset",
            "building the dataset",
        ),
        (
            TINY_LOSS,
            "    raise ValueError('width must be even')",
            "compute_loss",
            "computing the loss",
        ),
    ],
)
def test_user_function_raising_names_its_line(
    write_task: WriteTask, old: str, new: str, call: str, doing: str
) -> None:
    path = write_task(variant(old, new))
    task = load_task(path)
    args: tuple[Any, ...] = ()
    if call == "compute_loss":
        batch = (torch.zeros(4, 8), torch.zeros(4, dtype=torch.long))
        args = (task.build_model(), batch)
    fails(
        TaskError,
        at(path, line_of(path, "raise ValueError"))
        + re.escape(f": {doing} raised ValueError: width must be even; fix the error at that line"),
        getattr(task, call),
        *args,
    )


def test_error_deep_in_user_code_points_at_the_innermost_task_line(write_task: WriteTask) -> None:
    # The loss calls the model, whose shapes do not match: the error is raised inside torch,
    # and the innermost frame in the task file is the model call in loss_fn.
    path = write_task(variant(TINY_LOSS, "    return model(x[:, :3]).sum()"))
    task = load_task(path)
    fails(
        TaskError,
        at(path, line_of(path, "return model(x[:, :3])")) + ": computing the loss raised "
        "RuntimeError",
        task.compute_loss,
        task.build_model(),
        a_batch(task),
    )


def test_out_of_memory_is_not_wrapped() -> None:
    def build() -> nn.Module:
        raise torch.OutOfMemoryError("CUDA out of memory")

    task = Task(model=build, dataset=list, loss=lambda m, b: b)
    with pytest.raises(torch.OutOfMemoryError):
        task.build_model()


# -- baseline_config ---------------------------------------------------------------------


def _task(**kwargs: Any) -> Task:
    return Task(model=nn.Identity, dataset=list, loss=lambda m, b: b, **kwargs)


def test_baseline_maps_batch_size_and_lr(write_task: WriteTask) -> None:
    config = load_task(write_task(TINY_TASK)).baseline_config()
    assert config.micro_batch_size == 16
    assert config.global_batch_size == 16
    assert config.optimizer.lr == 1e-2
    assert config.optimizer.name == "adamw"
    assert config.precision == "32-true"
    assert config.grad_accum_steps == 1 and config.world_size == 1


def test_the_baselines_steps_are_its_length_not_its_config() -> None:
    task = _task(baseline={"batch_size": 16, "lr": 1e-3, "steps": 80})
    assert task.baseline_steps() == 80
    assert task.baseline_config().micro_batch_size == 16  # no "steps" field reached it
    assert _task().baseline_steps() is None


def test_baseline_default() -> None:
    config = _task().baseline_config()
    assert (config.micro_batch_size, config.optimizer.lr) == (32, 1e-3)


def test_baseline_takes_the_optimizer_name_from_the_task() -> None:
    config = _task(
        optimizer="sgd",
        baseline={"batch_size": 8, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4},
    ).baseline_config()
    assert config.optimizer.name == "sgd"
    assert (config.optimizer.lr, config.optimizer.momentum) == (0.1, 0.9)
    assert config.optimizer.weight_decay == 1e-4


def test_baseline_optimizer_name_is_case_insensitive_like_the_task() -> None:
    assert _task(optimizer="AdamW").baseline_config().optimizer.name == "adamw"


def test_baseline_with_a_callable_optimizer_is_custom() -> None:
    task = _task(optimizer=lambda params, lr: torch.optim.SGD(params, lr=lr))
    assert task.baseline_config().optimizer.name == "custom"


def test_baseline_may_name_the_optimizer_itself() -> None:
    assert (
        _task(baseline={"batch_size": 4, "lr": 0.1, "optimizer": "sgd"})
        .baseline_config()
        .optimizer.name
        == "sgd"
    )
    config = _task(
        baseline={"batch_size": 4, "optimizer": {"name": "adam", "lr": 0.2}}
    ).baseline_config()
    assert (config.optimizer.name, config.optimizer.lr) == ("adam", 0.2)


def test_baseline_passes_other_train_config_fields_through() -> None:
    config = _task(
        baseline={
            "batch_size": 8,
            "lr": 1e-3,
            "precision": "bf16-mixed",
            "grad_accum_steps": 2,
            "activation_checkpointing": "full",
            "schedule": {"name": "cosine", "warmup_steps": 5},
            "gradient_clip_val": 1.0,
        }
    ).baseline_config()
    assert config.precision == "bf16-mixed"
    assert config.global_batch_size == 16
    assert config.activation_checkpointing == "full"
    assert (config.schedule.name, config.schedule.warmup_steps) == ("cosine", 5)
    assert config.gradient_clip_val == 1.0


def test_baseline_unknown_key_names_it(write_task: WriteTask) -> None:
    path = write_task(
        variant(
            "baseline=dict(batch_size=16, lr=1e-2)",
            "baseline=dict(batch_size=16, lr=1e-2, epochs=3)",
        )
    )
    task = load_task(path)
    fails(
        ConfigError,
        at(path) + r": Task\.baseline: unknown key 'epochs'; the keys are "
        r"activation_checkpointing, "
        r"batch_size, .*, steps, warmup_steps, weight_decay, world_size\.$",
        task.baseline_config,
    )


def test_a_misspelt_baseline_key_is_told_the_closest() -> None:
    """Was: "micro_batch_size: Field required; batchsize: unknown key", the first half
    about a name the user never wrote."""
    fails(
        ConfigError,
        r"^the task: Task\.baseline: unknown key 'batchsize'; did you mean 'batch_size'\?$",
        _task(baseline={"batchsize": 32, "lr": 1e-3}).baseline_config,
    )


def test_the_baselines_schedule_may_be_a_name_with_its_warmup_beside_it() -> None:
    config = _task(
        baseline={"batch_size": 8, "lr": 1e-3, "schedule": "cosine", "warmup_steps": 5}
    ).baseline_config()
    assert (config.schedule.name, config.schedule.warmup_steps) == ("cosine", 5)
    config = _task(baseline={"batch_size": 8, "lr": 1e-3, "min_lr_ratio": 0.1}).baseline_config()
    assert (config.schedule.name, config.schedule.min_lr_ratio) == ("constant", 0.1)
    fails(
        ConfigError,
        r"Task\.baseline: schedule must be a name such as 'cosine' or a dict",
        _task(baseline={"batch_size": 8, "lr": 1e-3, "schedule": 3}).baseline_config,
    )


@pytest.mark.parametrize(
    ("baseline", "pattern"),
    [
        ({"batch_size": 16}, r"optimizer\.lr: Field required"),
        (
            {"batch_size": 0, "lr": 1e-3},
            r"micro_batch_size: Input should be greater than or "
            r"equal to 1 \(got 0\)",
        ),
        ({"batch_size": 16, "lr": 1e-3, "precision": "fp8"}, r"precision: Input should be"),
        (
            {"batch_size": 16, "lr": 1e-3, "optimizer": 3},
            r"optimizer must be a name such as "
            r"'adamw' or a dict",
        ),
    ],
)
def test_bad_baseline_is_a_config_error(baseline: dict[str, Any], pattern: str) -> None:
    fails(
        ConfigError,
        r"^the task: Task\.baseline: " + pattern,
        _task(baseline=baseline).baseline_config,
    )


def test_a_dataset_is_built_once_per_process_and_again_for_an_edited_file(
    write_task: WriteTask,
) -> None:
    path = write_task(TINY_TASK)
    first, again = load_task(path), load_task(path)  # a trial re-imports the file

    data = first.build_dataset()

    assert again.build_dataset() is data and first.build_dataset() is data
    path.write_text(TINY_TASK.replace("manual_seed(0)", "manual_seed(1)"))
    assert load_task(path).build_dataset() is not data


def test_in_memory_tasks_share_a_dataset_only_through_the_same_function() -> None:
    def build() -> TensorDataset:
        return TensorDataset(torch.randn(8, 2))

    one = Task(model=lambda: nn.Linear(2, 1), dataset=build, loss=lambda m, b: m(b[0]).sum())
    same = Task(model=lambda: nn.Linear(2, 1), dataset=build, loss=lambda m, b: m(b[0]).sum())
    other = Task(
        model=lambda: nn.Linear(2, 1),
        dataset=lambda: TensorDataset(torch.randn(8, 2)),
        loss=lambda m, b: m(b[0]).sum(),
    )

    assert one.build_dataset() is same.build_dataset()
    assert other.build_dataset() is not one.build_dataset()


class _LazyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.LazyLinear(16), nn.LazyBatchNorm1d(), nn.Dropout(0.5))
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_lazy_modules_are_sized_by_one_quiet_forward() -> None:
    seen: list[tuple[bool, bool]] = []

    def loss(model: nn.Module, batch: Any) -> torch.Tensor:
        seen.append((model.training, torch.is_grad_enabled()))
        x, y = batch
        return nn.functional.cross_entropy(model(x), y)

    data = TensorDataset(torch.randn(10, 5), torch.arange(10) % 3)
    task = Task(model=_LazyNet, dataset=lambda: data, loss=loss)
    model = task.build_model()
    assert not any(nn.parameter.is_lazy(t) for t in (*model.parameters(), *model.buffers()))
    assert model.body[0].weight.shape == (16, 5) and model.training
    assert seen == [(False, False)]  # eval mode, no gradients: one forward, sizes only
    norm = model.body[1]
    assert torch.equal(norm.running_mean, torch.zeros(16)) and int(norm.num_batches_tracked) == 0
    assert all(p.grad is None for p in model.parameters())
    task.build_model()
    assert len(seen) == 2  # every fresh model is sized
    Task(model=lambda: nn.Linear(5, 3), dataset=lambda: data, loss=loss).build_model()
    assert len(seen) == 2  # an eager model gets no forward
