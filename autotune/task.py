"""The user's contract: :class:`Task` and :func:`load_task`.

A task file (``model.py``) is plain Python that exposes ``task = autotune.Task(...)``,
or the three top-level functions ``build_model``, ``build_dataset`` and ``loss_fn``.
Everything that can go wrong with it is reported as one :class:`~autotune.errors.TaskError`
sentence that names the file (and the line, where there is one) and the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import itertools
import math
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate

from autotune.errors import TaskError

__all__ = [
    "OPTIMIZER_NAMES",
    "OptimizerFactory",
    "Task",
    "checked_task_path",
    "first_samples",
    "load_task",
]

OPTIMIZER_NAMES = ("sgd", "adam", "adamw", "adagrad", "rmsprop")
"""Optimizers a Task or a config may name; anything else is a callable."""

MIN_BASELINE_STEPS = 30
"""The shortest baseline a target may come from: its smoothed curve needs support past the
crossing (``stability.TARGET_SUPPORT_STEPS``) and a start to improve on."""

OptimizerFactory = Callable[[Iterable[nn.Parameter], float], torch.optim.Optimizer]
BlocksSpec = Sequence[str] | Callable[[nn.Module], Sequence[nn.Module]]

_FUNCTION_FORM = ("build_model", "build_dataset", "loss_fn")
# Datasets built in this process (or before the fork that made it): key -> (the function
# that built it, kept alive so that an id() key is not reused; the dataset).
_DATASETS: dict[tuple[Any, ...], tuple[Callable[[], Any], Dataset[Any]]] = {}
_T = TypeVar("_T")
# Samples in the forward that sizes lazy modules: shapes need one, and 2 keeps a batch that
# code squeezing a batch dimension of 1 away (or BatchNorm, in train mode) still accepts.
_LAZY_SAMPLES = 2


def _default_baseline() -> dict[str, Any]:
    return {"batch_size": 32, "lr": 1e-3}


def first_samples(dataset: Dataset[Any], count: int) -> list[Any]:
    """The first ``count`` samples of ``dataset`` (fewer where it has fewer): indices
    ``0..count-1`` of a map-style one, the first ones an IterableDataset yields."""
    if isinstance(dataset, IterableDataset):
        return list(itertools.islice(iter(dataset), count))
    return [dataset[i] for i in range(min(count, len(dataset)))]  # type: ignore[arg-type]


@dataclass(frozen=True, eq=False)
class Task:
    """What to train: a model factory, a dataset factory and a loss.

    Args:
        model: ``() -> nn.Module``; returns a fresh fp32 model on CPU on every call.
        dataset: ``() -> Dataset``; map-style (with ``__len__``) or an ``IterableDataset``.
        loss: ``(model, batch) -> scalar Tensor``; the batch is already on the device.
        optimizer: one of :data:`OPTIMIZER_NAMES`, or ``(params, lr) -> Optimizer``.
        baseline: the user's current setup, the one to beat: ``batch_size`` and ``lr``
            plus, optionally, any :class:`~autotune.config.TrainConfig` field and
            ``steps``, how long the user trains it. With ``steps``, the target is the
            loss the baseline reaches after them on every machine; without, after as many
            steps as fit in a share of the search's budget on this machine.
        target_loss: the loss to reach; ``None`` means the loss the baseline reaches.
        blocks: modules to checkpoint: qualified names (glob patterns matched one dotted
            segment at a time, so ``"blocks.*"`` is the blocks, not their insides) or
            ``model -> [modules]``; ``None`` finds them.
        collate_fn: how samples become a batch; ``None`` is torch's ``default_collate``.
        find_unused_parameters: whether DDP must look, every step, for parameters that got
            no gradient. ``None``: autotune looks at each rank's first micro-batches and
            turns it on only if one did. ``True`` for a model whose data decides which
            parameters it uses (mixture-of-experts routing, a branch for some inputs),
            where the first batches may use them all and a later one not. ``False``:
            never, for a model that uses every parameter on every batch.
        name: a display name; defaults to the file name.
        source: the task file; set by :func:`load_task`, used in error messages.
    """

    model: Callable[[], nn.Module]
    dataset: Callable[[], Dataset[Any]]
    loss: Callable[[nn.Module, Any], torch.Tensor]
    optimizer: str | OptimizerFactory = "adamw"
    baseline: Mapping[str, Any] = field(default_factory=_default_baseline)
    target_loss: float | None = None
    blocks: BlocksSpec | None = None
    collate_fn: Callable[[list[Any]], Any] | None = None
    find_unused_parameters: bool | None = None
    name: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        for attr, what in (
            ("model", "a function () -> torch.nn.Module"),
            ("dataset", "a function () -> torch.utils.data.Dataset"),
            ("loss", "a function (model, batch) -> scalar tensor"),
        ):
            value = getattr(self, attr)
            # A module is callable, but model=Net() is the result, not the factory.
            if not callable(value) or (attr == "model" and isinstance(value, nn.Module)):
                raise TaskError(
                    f"Task.{attr} must be {what}, but got {_describe(value)}; "
                    f"pass the function itself, not its result."
                )
        self._check_optimizer()
        if not isinstance(self.baseline, Mapping):
            raise TaskError(
                f"Task.baseline must be a dict such as dict(batch_size=32, lr=1e-3), "
                f"but got {_describe(self.baseline)}."
            )
        self._check_baseline_steps()
        if self.target_loss is not None and not (
            isinstance(self.target_loss, (int, float)) and math.isfinite(self.target_loss)
        ):
            raise TaskError(
                f"Task.target_loss must be a finite number or None, but got "
                f"{self.target_loss!r}; use None to take the loss the baseline reaches."
            )
        if self.blocks is not None and not (callable(self.blocks) or _is_str_seq(self.blocks)):
            raise TaskError(
                f"Task.blocks must be a list of module names or a function model -> modules, "
                f"but got {_describe(self.blocks)}; e.g. blocks=['transformer.h.*']."
            )
        if not isinstance(self.find_unused_parameters, (bool, type(None))):
            raise TaskError(
                f"Task.find_unused_parameters must be True, False or None, but got "
                f"{_describe(self.find_unused_parameters)}; None lets autotune look."
            )
        if self.collate_fn is not None and not callable(self.collate_fn):
            raise TaskError(
                f"Task.collate_fn must be a function list[sample] -> batch, but got "
                f"{_describe(self.collate_fn)}."
            )

    def _check_baseline_steps(self) -> None:
        steps = self.baseline.get("steps")
        if steps is None:
            return
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < MIN_BASELINE_STEPS:
            raise TaskError(
                f"Task.baseline steps must be a whole number of optimizer steps >= "
                f"{MIN_BASELINE_STEPS}, but got steps={steps!r}; give e.g. steps=200, or "
                f"leave it out to train the baseline for a share of the search's budget."
            )

    def _check_optimizer(self) -> None:
        if isinstance(self.optimizer, str):
            if self.optimizer.lower() not in OPTIMIZER_NAMES:
                raise TaskError(
                    f"Task.optimizer must be one of {', '.join(OPTIMIZER_NAMES)} or a function "
                    f"(params, lr) -> Optimizer, but got {self.optimizer!r}."
                )
        elif not callable(self.optimizer):
            raise TaskError(
                f"Task.optimizer must be a name such as 'adamw' or a function "
                f"(params, lr) -> Optimizer, but got {_describe(self.optimizer)}."
            )

    # -- where: error prefixes ---------------------------------------------------------

    @property
    def display_name(self) -> str:
        """The name shown to users: ``name``, else the task file's stem, else ``task``."""
        if self.name:
            return self.name
        return Path(self.source).stem if self.source else "task"

    def where(self) -> str:
        """The task file for error messages, or ``the task`` for an in-memory Task."""
        return self.source or "the task"

    # -- checked calls into user code --------------------------------------------------

    def build_model(self) -> nn.Module:
        """Call ``model()``, check that it returned an ``nn.Module``, and materialize its
        lazy modules (``nn.LazyLinear``, ``nn.LazyConv2d``, ...).

        A lazy module has no parameter shapes until its first call, and an optimizer, DDP, a
        FLOP count or a memory estimate built before then fails on the uninitialized
        parameters ("Attempted to use an uninitialized parameter"). So such a model gets one
        forward pass of the dataset's first samples here, in eval mode and without
        gradients (no BatchNorm statistics move, no dropout draws), as torch's docs ask.
        """
        model = self._call(self.model, "building the model")
        if not isinstance(model, nn.Module):
            raise TaskError(
                f"{self.where()}: the model function returned {_describe(model)}, not a "
                f"torch.nn.Module; return the module instance, e.g. `return MyNet()`."
            )
        if any(nn.parameter.is_lazy(t) for t in (*model.parameters(), *model.buffers())):
            self._materialize(model)
        return model

    def _materialize(self, model: nn.Module) -> None:
        samples = first_samples(self.build_dataset(), _LAZY_SAMPLES)
        training = model.training
        model.eval()
        with torch.no_grad():
            self._call(
                self.loss,
                "computing the loss (to size the lazy modules)",
                model,
                self.collate(samples),
            )
        model.train(training)

    def build_dataset(self) -> Dataset[Any]:
        """Call ``dataset()`` and check that it is a non-empty dataset, once per process.

        The dataset is built once and then shared by every later call in this process, and
        by the processes forked after it: the trial fork server builds it before its first
        fork, so that a dataset that takes seconds to build (tokenizing a corpus) costs
        them once per search, not once per trial. A map-style dataset is read, never
        changed, and an IterableDataset starts afresh at each ``iter()``, so sharing one
        is the same as building another; for a task file, the share is keyed by the
        file's bytes, so an edited file builds its own.
        """
        key = self._dataset_key()
        built = _DATASETS.get(key)
        if built is None:
            built = _DATASETS[key] = (self.dataset, self._build_dataset())
        return built[1]

    def _dataset_key(self) -> tuple[Any, ...]:
        """What identifies the dataset ``self.dataset()`` builds: its task file's path,
        bytes and function name, or, for an in-memory Task, the function itself."""
        if self.source is not None:
            try:
                file = Path(self.source).resolve()
                digest = hashlib.sha256(file.read_bytes()).hexdigest()
            except OSError:
                pass
            else:
                return ("file", str(file), digest, getattr(self.dataset, "__qualname__", ""))
        return ("function", id(self.dataset))

    def _build_dataset(self) -> Dataset[Any]:
        data = self._call(self.dataset, "building the dataset")
        if isinstance(data, IterableDataset):
            return data
        if isinstance(data, DataLoader):
            raise TaskError(
                f"{self.where()}: the dataset function returned a DataLoader; return its "
                f"dataset (the loader's .dataset, and its collate_fn as Task(collate_fn=...)): "
                f"autotune makes the batches itself, at each config's batch size."
            )
        if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
            stream = hasattr(data, "__next__")  # a generator: one pass, then empty
            fix = (
                "yield its samples from the __iter__ of a torch.utils.data.IterableDataset, "
                "which every epoch iterates afresh"
                if stream
                else "return e.g. torch.utils.data.TensorDataset(x, y)"
            )
            raise TaskError(
                f"{self.where()}: the dataset function returned {_describe(data)}, which is "
                f"neither a map-style Dataset (__getitem__ and __len__) nor an IterableDataset; "
                f"{fix}."
            )
        if self._call(len, "taking the dataset's length", data) == 0:
            raise TaskError(
                f"{self.where()}: the dataset is empty (length 0); return a dataset with at "
                f"least one batch of samples."
            )
        return data

    def collate(self, samples: list[Any]) -> Any:
        """Turn samples into a batch, with a clear error when they cannot be stacked."""
        collate = self.collate_fn or default_collate
        try:
            return collate(samples)
        except (TaskError, torch.OutOfMemoryError, MemoryError):
            raise
        except Exception as exc:
            raise TaskError(
                f"{self.where()}: a batch of {len(samples)} samples cannot be collated "
                f"({type(exc).__name__}: {_first_line(exc)}); make every sample the same "
                f"shape and type, or pass Task(collate_fn=...)."
            ) from exc

    def compute_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Call ``loss(model, batch)`` and check that it is a scalar tensor with a graph."""
        loss = self._call(self.loss, "computing the loss", model, batch)
        if not isinstance(loss, torch.Tensor):
            raise TaskError(
                f"{self.where()}: the loss function returned {_describe(loss)}, not a "
                f"torch.Tensor; {_loss_fix(loss)}"
            )
        if loss.ndim != 0:
            raise TaskError(
                f"{self.where()}: the loss function returned a tensor of shape "
                f"{tuple(loss.shape)}, not a scalar; reduce it, e.g. `loss.mean()`."
            )
        if not loss.requires_grad and not any(p.requires_grad for p in model.parameters()):
            raise TaskError(
                f"{self.where()}: the model has no trainable parameter (requires_grad is "
                f"False on every one), so nothing can train; unfreeze what should train in "
                f"build_model, e.g. model.requires_grad_(True)."
            )
        if not loss.requires_grad:
            raise TaskError(
                f"{self.where()}: the loss does not require grad, so it cannot train the "
                f"model; compute it from the model's output and do not detach it."
            )
        return loss

    def _call(self, fn: Callable[..., _T], doing: str, *args: Any) -> _T:
        try:
            return fn(*args)
        except (TaskError, torch.OutOfMemoryError, MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise TaskError(
                f"{_user_location(exc, self.source)}: {doing} raised {type(exc).__name__}: "
                f"{_first_line(exc)}; fix the error at that line."
            ) from exc

    # -- baseline ----------------------------------------------------------------------

    def baseline_config(self) -> Any:
        """The Task's ``baseline`` as a :class:`~autotune.config.TrainConfig`."""
        from autotune.config import train_config_from_baseline

        return train_config_from_baseline(self)

    def baseline_steps(self) -> int | None:
        """``baseline['steps']``: the steps the user trains the baseline for, or ``None``."""
        steps = self.baseline.get("steps")
        return None if steps is None else int(steps)


def load_task(path: str | Path) -> Task:
    """Import a task file and return its :class:`Task` (``source`` set to ``path``).

    Raises:
        TaskError: the file is missing, does not import, or exposes neither ``task``
            nor ``build_model``/``build_dataset``/``loss_fn``.
    """
    file = checked_task_path(path)
    module = _import_file(file, str(path))
    return _task_from_module(module, str(path))


def checked_task_path(path: str | Path) -> Path:
    """``path`` as a task file's :class:`Path`.

    Raises:
        TaskError: it is a directory, missing, or not a .py file; each with the fix.
    """
    file = Path(path)
    if file.is_dir():
        raise TaskError(
            f"Task file '{path}' is a directory; pass the path to the Python file in it that "
            f"defines `task = autotune.Task(...)`, e.g. {Path(path) / 'model.py'}."
        )
    if not file.is_file():
        raise TaskError(
            f"Task file '{path}' does not exist; pass the path to a Python file that "
            f"defines `task = autotune.Task(...)`, e.g. examples/mlp_digits.py."
        )
    if file.suffix != ".py":
        raise TaskError(f"Task file '{path}' is not a .py file; pass a Python task file.")
    return file


def _import_file(file: Path, shown: str) -> Any:
    resolved = file.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
    name = f"autotune_task_{resolved.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise TaskError(f"Task file '{shown}' cannot be imported; pass a Python source file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # functions defined there stay importable (pickle, spawn)
    folder = str(resolved.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # the task may import helpers that sit beside it
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        # The bad line may be in a module the task file imports: name that file.
        bad = exc.filename
        in_task = bad is None or Path(bad).resolve() == resolved
        raise TaskError(
            f"{shown if in_task else bad}:{exc.lineno}: syntax error ({exc.msg}); fix the "
            f"syntax of {'the task file' if in_task else 'that file'}."
        ) from None
    except TaskError as exc:
        sys.modules.pop(name, None)
        raise TaskError(f"{_user_location(exc, str(resolved), shown)}: {exc}") from None
    except (Exception, SystemExit) as exc:  # sys.exit() or argparse at module level too
        sys.modules.pop(name, None)
        raise TaskError(
            f"{_user_location(exc, str(resolved), shown)}: importing the task file raised "
            f"{type(exc).__name__}: {_first_line(exc)}; fix the error at that line."
        ) from None
    return module


def _task_from_module(module: Any, shown: str) -> Task:
    task = getattr(module, "task", None)
    if task is not None:
        if not isinstance(task, Task):
            raise TaskError(
                f"{shown}: `task` is {_describe(task)}, not an autotune.Task; define "
                f"`task = autotune.Task(model=..., dataset=..., loss=...)`."
            )
        return dataclasses.replace(task, source=shown)
    missing = [name for name in _FUNCTION_FORM if not hasattr(module, name)]
    if missing:
        raise TaskError(
            f"{shown} defines no `task` and no {', '.join(f'`{m}`' for m in missing)}; define "
            f"`task = autotune.Task(model=..., dataset=..., loss=...)` or the three functions "
            f"build_model, build_dataset and loss_fn."
        )
    try:
        return Task(
            model=module.build_model,
            dataset=module.build_dataset,
            loss=module.loss_fn,
            source=shown,
        )
    except TaskError as exc:
        raise TaskError(f"{shown}: {exc}") from None


def _user_location(exc: BaseException, source: str | None, shown: str | None = None) -> str:
    """``file:line`` of the innermost frame in the user's task file (else in user code)."""
    frames = traceback.extract_tb(exc.__traceback__)
    wanted = str(Path(source).resolve()) if source else None
    for frame in reversed(frames):
        if wanted and str(Path(frame.filename).resolve()) == wanted:
            return f"{shown or source}:{frame.lineno}"
    package = str(Path(__file__).resolve().parent)
    for frame in reversed(frames):
        if not str(Path(frame.filename).resolve()).startswith(package):
            return f"{frame.filename}:{frame.lineno}"
    return shown or source or "the task"


def _loss_fix(value: Any) -> str:
    """The fix for a loss function that returned ``value``, not a tensor."""
    if isinstance(getattr(value, "loss", None), torch.Tensor):  # a Hugging Face ModelOutput
        return "return its loss tensor, e.g. `return model(**batch).loss`."
    if isinstance(value, tuple | list | dict):
        return (
            "return the loss tensor alone; compute metrics such as accuracy outside the "
            "loss function (autotune trains on what it returns)."
        )
    return "return the loss tensor itself, not loss.item()."


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else "(no message)"


def _is_str_seq(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and all(isinstance(item, str) for item in value)
    )
