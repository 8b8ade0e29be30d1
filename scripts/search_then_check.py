"""Does a search record lower samples/s than `autotune check` re-measures right after it?

    python scripts/search_then_check.py examples/mlp_digits.py [--rounds 3]

Each round runs the default search with its trial files kept, then `autotune check`'s
pairs (:func:`autotune.search.recheck`) on the tuned.yaml, and prints the tuned config's
samples/s per run of its step in each phase: the systems phase's short measurements, the
convergence trials, the confirmation pairs and the check's pairs, each as the median step
time after 3 steps. Run it on a quiet machine, with GLIBC_TUNABLES as the CLI sets it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from autotune.config import TrainConfig, TunedConfig, load_tuned_config
from autotune.search import SearchOptions, recheck, run_search
from autotune.search._confirm import same_step

_SYSTEMS_STEPS = 12  # the systems phase's runs are this short; trials and pairs are longer


def _rate(run: Path, train: TrainConfig) -> tuple[str, float] | None:
    """(phase, samples/s) of one kept run of ``train``'s step; None for another step."""
    spec = json.loads((run / "spec.json").read_text())
    if not same_step(TrainConfig.model_validate(spec["train"]), train):
        return None
    lines = (run / "progress.jsonl").read_text().splitlines()
    times = sorted(json.loads(line)["step_time_s"] for line in lines[3:] if line.strip())
    if not times:
        return None
    phase = "systems" if spec["steps"] <= _SYSTEMS_STEPS else "pair" if spec["seed"] else "trial"
    return phase, train.global_batch / statistics.median(times)


def _phases(where: Path, train: TrainConfig) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for run in sorted(where.glob("run*")):
        rated = _rate(run, train)
        if rated is not None:
            found.setdefault(rated[0], []).append(rated[1])
    return found


def kept_search(task: Path, root: Path) -> TunedConfig:
    """The default search of ``task`` in ``root``, its runs' files kept in ``root/search``;
    its tuned config (also ``root/t.yaml``)."""
    options = SearchOptions(
        task_path=task,
        storage=f"sqlite:///{root}/s.db",
        output=root / "t.yaml",
        workdir=root / "search",
    )
    run_search(options)
    return load_tuned_config(root / "t.yaml")


def _round(task: Path, root: Path) -> None:
    tuned = kept_search(task, root)
    (root / "check").mkdir()
    recheck(tuned, task, root / "check")
    recorded = tuned.measured.throughput_samples_per_s if tuned.measured else float("nan")
    print(f"pick: global batch {tuned.train.global_batch}; recorded {recorded:,.0f} samples/s")
    for name, where in (("search", root / "search"), ("check", root / "check")):
        for phase, rates in _phases(where, tuned.train).items():
            shown = ", ".join(f"{rate / 1e3:.1f}k" for rate in rates)
            share = statistics.median(rates) / recorded
            print(f"  {name} {phase}: median {share:.0%} of it ({shown})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for number in range(args.rounds):
        print(f"round {number + 1}")
        with tempfile.TemporaryDirectory(prefix="search-then-check-") as root:
            _round(args.task.resolve(), Path(root))


if __name__ == "__main__":
    main()
