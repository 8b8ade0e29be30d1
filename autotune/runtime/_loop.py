"""The training loop of one rank: applies every dimension of a TrainConfig for real."""

from __future__ import annotations

import contextlib
import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from autotune.config import TrainConfig
from autotune.errors import ConfigError
from autotune.runtime import _state
from autotune.runtime._checkpointing import apply_checkpointing
from autotune.runtime._data import BatchStream, to_device
from autotune.runtime._ddp import SCAN_BATCHES, check_reduced, wrap_ddp
from autotune.runtime._memory import StepMemoryMeter, held_bytes
from autotune.runtime._optim import build_optimizer, build_scheduler, clip_gradients
from autotune.runtime._precision import precision_plan
from autotune.runtime._same_data import check_same_data
from autotune.runtime._types import RunOptions, RunResult, RunSummary, StepRecord
from autotune.task import Task

__all__ = ["DistContext", "StepCallback", "run_rank"]

StepCallback = Callable[[StepRecord], None]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the data-parallel group (rank 0 of 1 when alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mean(self, value: torch.Tensor) -> float:
        """The mean of ``value`` over ranks, as a float (synchronizes the device)."""
        if self.world > 1:
            value = value.detach().clone()
            dist.all_reduce(value)
            value /= self.world
        return float(value.item())


def resolve_device(choice: str, local_rank: int) -> torch.device:
    """CUDA (this rank's GPU) when present and allowed, else CPU."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for, but no CUDA GPU is visible; use 'auto'.")
    if choice != "cpu" and torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def run_rank(
    task: Task,
    config: TrainConfig,
    options: RunOptions,
    ctx: DistContext | None = None,
    on_step: StepCallback | None = None,
) -> RunResult:
    """Train ``task`` with ``config`` for ``options.steps`` optimizer steps on this rank."""
    return _Trainer(task, config, options, ctx or DistContext(), on_step).run()


class _Trainer:
    def __init__(
        self,
        task: Task,
        config: TrainConfig,
        options: RunOptions,
        ctx: DistContext,
        on_step: StepCallback | None,
    ) -> None:
        self.task, self.config, self.options, self.ctx = task, config, options, ctx
        self.on_step = on_step if ctx.is_main else None
        self.device = resolve_device(options.device, ctx.local_rank)
        self.plan = precision_plan(config.precision, self.device)
        torch.manual_seed(options.seed)  # the same initial weights for every config
        model = task.build_model()
        self.blocks = apply_checkpointing(model, config.activation_checkpointing, task.blocks)
        self.model = model.to(device=self.device, dtype=self.plan.param_dtype)
        self.optimizer = build_optimizer(self.model, config.optimizer, task)
        self.scheduler = build_scheduler(self.optimizer, config.schedule, options.steps)
        self.scaler = self.plan.grad_scaler(self.device)
        dataset = task.build_dataset()
        if ctx.world > 1:  # each rank built its own: they must be one dataset
            check_same_data(task, dataset)
        self.stream = BatchStream(
            task, dataset, config.micro_batch_size, ctx.rank, ctx.world, options.seed
        )
        self.net = self._wrap(self.model)
        torch.manual_seed(options.seed + 7919 * (ctx.rank + 1))  # dropout stream per rank
        self.meter = StepMemoryMeter(self.device)
        self.records: list[StepRecord] = []
        self.step_times: list[float] = []  # timed steps only (after burn-in, not profiled)
        self.overflows = 0
        self.elapsed_before = 0.0
        self.resumed_from: int | None = None
        if options.resume and options.save_dir is not None:
            self._resume(options.save_dir)

    def _wrap(self, model: nn.Module) -> nn.Module:
        net: nn.Module = model
        self.ddp: DistributedDataParallel | None = None
        if self.ctx.world > 1:
            losses = [self._loss_of(b) for b in self.stream.peek_ahead(SCAN_BATCHES)]
            self.ddp = wrap_ddp(model, self.device, losses, self.task.find_unused_parameters)
            net = self.ddp
        if self.config.compile:
            net = torch.compile(net)  # type: ignore[assignment]
        return net

    @property
    def _float_dtype(self) -> torch.dtype:
        """What a batch's floats are cast to: the parameters' dtype, which the precision
        sets (the model is cast to it, a float64 one too), so float64 data (numpy's default)
        meets float32 weights as float32; a float32 tensor's cast is no copy."""
        return self.plan.param_dtype

    def _loss_of(self, batch: Any) -> Callable[[nn.Module], torch.Tensor]:
        """``model -> loss`` on ``batch``, a micro-batch read ahead (it is still trained)."""

        dtype = self._float_dtype

        def loss_of(model: nn.Module) -> torch.Tensor:
            with self.plan.autocast(self.device):
                return self.task.compute_loss(model, to_device(batch, self.device, dtype))

        return loss_of

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> RunResult:
        start = len(self.records)
        memory_step = self._memory_step(start)
        burn_in = self.options.burn_in()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        began = time.perf_counter() - self.elapsed_before
        stopped: str | None = None
        for step in range(start, self.options.steps):
            t0 = self._clock()
            loss = self.ctx.mean(self._step(measure=step == memory_step))
            step_time = self._clock() - t0
            if step != memory_step and step - start >= burn_in:
                self.step_times.append(step_time)
            self._record(step, loss, step_time, time.perf_counter() - began)
            if not math.isfinite(loss):
                stopped = f"non-finite loss ({loss}) at step {step + 1}"
                break
            if self._checkpoint_due(step):
                self._save(time.perf_counter() - began)
        if self.options.save_dir is not None and stopped is None:
            self._save(time.perf_counter() - began)
        return RunResult(summary=self._summary(stopped), steps=self.records)

    def _memory_step(self, start: int) -> int | None:
        if not self.options.measure_memory or start >= self.options.steps:
            return None
        # The second step: the optimizer state exists by then, so the peak is steady-state.
        return start + 1 if self.options.steps - start >= 2 else start

    def _clock(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _step(self, measure: bool) -> torch.Tensor:
        meter = self.meter.step(self._held()) if measure else contextlib.nullcontext()
        with meter:
            loss = self._accumulate(measure)
            self._optimizer_step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss

    def _accumulate(self, measure: bool) -> torch.Tensor:
        accum = self.config.grad_accum_steps
        total = torch.zeros((), device=self.device)
        for i in range(accum):
            batch = to_device(next(self.stream), self.device, self._float_dtype)
            mark = self.meter.forward() if measure and i == 0 else contextlib.nullcontext()
            with self._no_sync(last=i == accum - 1):
                with mark, self.plan.autocast(self.device):
                    loss = self.task.compute_loss(self.net, batch)
                scaled = loss.float() / accum
                if self.scaler is not None:
                    scaled = self.scaler.scale(scaled)
                scaled.backward()  # type: ignore[no-untyped-call]
            total += loss.detach().float()
        if self.ddp is not None:  # before the next collective, which would abort on it
            step = len(self.records) + 1
            check_reduced(self.ddp, step, self.task.where(), self.task.find_unused_parameters)
        return total / accum

    def _no_sync(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        """Skip DDP's all-reduce on all but the last micro-batch of an accumulation."""
        if last or self.ddp is None or self.net is not self.ddp:  # compiled: syncs each
            return contextlib.nullcontext()
        return self.ddp.no_sync()

    def _optimizer_step(self) -> None:
        clip = self.config.gradient_clip_val
        if self.scaler is None:
            if clip is not None:
                clip_gradients(self.model.parameters(), clip)
            self.optimizer.step()
        else:
            if clip is not None:
                self.scaler.unscale_(self.optimizer)
                clip_gradients(self.model.parameters(), clip)
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.overflows += int(self.scaler.get_scale() < scale)  # inf/NaN grads: skipped
        with warnings.catch_warnings():
            # A step the GradScaler skipped makes torch warn about the call order; harmless.
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
            self.scheduler.step()

    def _held(self) -> int:
        state = self.optimizer.state.values()
        tensors = [t for s in state for t in s.values() if isinstance(t, torch.Tensor)]
        return held_bytes([*self.model.parameters(), *self.model.buffers(), *tensors])

    def _record(self, step: int, loss: float, step_time: float, elapsed: float) -> None:
        batch = self.config.global_batch
        record = StepRecord(
            step=step + 1,
            loss=loss,
            elapsed_s=elapsed,
            samples=(step + 1) * batch,
            step_time_s=step_time,
            samples_per_s=batch / step_time if step_time > 0 else 0.0,
            lr=float(self.scheduler.get_last_lr()[0]),
        )
        self.records.append(record)
        if self.on_step is not None:
            self.on_step(record)

    # -- checkpoints -------------------------------------------------------------------

    def _checkpoint_due(self, step: int) -> bool:
        every = self.options.save_every
        last = step + 1 == self.options.steps
        return (
            self.options.save_dir is not None and every > 0 and (step + 1) % every == 0 and not last
        )

    def _save(self, elapsed: float) -> None:
        rng = _state.rng_state()
        rngs: list[Any] = [rng]
        if self.ctx.world > 1:
            rngs = [None] * self.ctx.world
            dist.all_gather_object(rngs, rng)
        if self.ctx.is_main and self.options.save_dir is not None:
            _state.save(self.options.save_dir, self._state_dict(elapsed, rngs))

    def _state_dict(self, elapsed: float, rngs: list[Any]) -> dict[str, Any]:
        return {
            "config": self.config.model_dump(mode="json"),
            "seed": self.options.seed,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rngs,
            "records": [r.model_dump() for r in self.records],
            "step_times": list(self.step_times),
            "overflows": self.overflows,
            "elapsed_s": elapsed,
            "consumed": self.stream.consumed,
        }

    def _resume(self, save_dir: Path) -> None:
        state = _state.load(save_dir, self.config, self.options.seed)
        if state is None:
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        _state.set_rng_state(state["rng"][self.ctx.rank])
        self.records = [StepRecord.model_validate(r) for r in state["records"]]
        self.step_times = list(state["step_times"])
        self.overflows = int(state["overflows"])
        self.elapsed_before = float(state["elapsed_s"])
        self.stream.skip(int(state["consumed"]))
        self.resumed_from = len(self.records)

    # -- summary -----------------------------------------------------------------------

    def _summary(self, stopped: str | None) -> RunSummary:
        losses = [r.loss for r in self.records]
        tail = losses[-max(1, len(losses) // 10) :] if losses else [math.nan]
        rates = sorted(self.config.global_batch / t for t in self.step_times if t > 0)
        if not rates:
            rates = [r.samples_per_s for r in self.records[-1:]] or [0.0]
        reading = self.meter.reading
        peak = reading.peak_bytes if reading else None
        if self.device.type == "cuda":  # the whole run's peak, not just the measured step
            peak = torch.cuda.max_memory_allocated(self.device)
        return RunSummary(
            steps_completed=len(self.records),
            steps_requested=self.options.steps,
            final_loss=losses[-1] if losses else math.nan,
            smoothed_final_loss=statistics.fmean(tail),
            loss_finite=all(math.isfinite(x) for x in losses),
            stopped_reason=stopped,
            samples_per_s=statistics.median(rates),
            samples_per_s_p10=_quantile(rates, 0.1),
            samples_per_s_p90=_quantile(rates, 0.9),
            timed_steps=len(self.step_times),
            peak_memory_bytes=peak,
            persistent_memory_bytes=reading.persistent_bytes if reading else None,
            activation_memory_bytes=reading.activation_bytes if reading else None,
            memory_source=reading.source if reading else None,
            grad_scaler_overflow_steps=self.overflows if self.scaler is not None else None,
            checkpointed_blocks=self.blocks,
            device=str(self.device),
            world_size=self.ctx.world,
            threads_per_rank=torch.get_num_threads(),
            precision=self.config.precision,
            global_batch_size=self.config.global_batch,
            train_time_s=self.records[-1].elapsed_s if self.records else 0.0,
            resumed_from_step=self.resumed_from,
        )


def _quantile(ordered: list[float], q: float) -> float:
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]
