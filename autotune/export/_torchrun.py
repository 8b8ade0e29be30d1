"""A shell command line that trains with the tuned config under ``torchrun``.

``autotune run`` joins torchrun's process group when ``WORLD_SIZE`` is set (see
:mod:`autotune.runtime._launch`), so the command is torchrun starting ``world_size``
copies of ``python -m autotune run``, each with ``cores / world_size`` OpenMP threads.
"""

from __future__ import annotations

import shlex

from autotune.config import TunedConfig
from autotune.errors import ConfigError
from autotune.export._base import ExportContext, Exported, Exporter

__all__ = ["TorchrunExporter"]


class TorchrunExporter(Exporter):
    """``OMP_NUM_THREADS=T torchrun --standalone --nproc-per-node W -m autotune run ...``."""

    name = "torchrun"
    description = "a torchrun command line running `autotune run` with the config"
    carries_environment = True  # `autotune run` restarts itself under the same allocator

    def export(self, tuned: TunedConfig, ctx: ExportContext) -> Exported:
        task = ctx.task or tuned.task
        if task is None:
            raise ConfigError(
                f"{ctx.config_path} names no task file, and torchrun needs one to run; pass "
                f"--task model.py."
            )
        world = tuned.train.world_size
        argv = ["torchrun", "--standalone", f"--nproc-per-node={world}"]
        argv += ["-m", "autotune", "run", task, "-c", ctx.config_path]
        steps = self.steps(tuned, ctx)
        notes = []
        if steps is None:
            notes.append(
                "no step count: `autotune run` trains its default 100 steps; pass --steps N "
                "to set it."
            )
        else:
            argv += ["--steps", str(steps)]
        command = f"OMP_NUM_THREADS={ctx.threads_per_rank} {shlex.join(argv)}\n"
        return Exported(command, notes)
