"""How far had each baseline's loss bent by its end? (the search's "first drop" warning)

    python scripts/late_gain.py sqlite:///autotune.db [more storage URLs]
    autotune run examples/hf_gpt2.py --steps 50 --json run.json
    python scripts/late_gain.py --json run.json

For every study in each storage, the baseline the search stored: its steps, its target
and :func:`autotune.stability.late_gain` (the smoothed improvement over the second half
of the curve as a fraction of the first half's). With ``--json``, the same for the loss
curve of an ``autotune run --json`` file. The search warns at 0.5 or more
(``autotune.search._UNBENT_GAIN``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import optuna

from autotune.search._study import Studies
from autotune.search._types import BaselineRun
from autotune.stability import late_gain


def _stored(storage: str) -> None:
    for summary in optuna.get_all_study_summaries(storage):
        name = summary.study_name
        if "/" in name:  # the systems and claims sub-studies
            continue
        studies = Studies(
            storage, name, optuna.samplers.RandomSampler(), optuna.pruners.NopPruner()
        )
        base = studies.stored("baseline", BaselineRun)
        if base is not None:
            losses = base.run.losses
            print(
                f"{storage} {name}: {len(losses)} steps, target {base.target_loss:.4f}, "
                f"late gain {late_gain(losses):.2f}"
            )


def _run_file(path: Path) -> None:
    losses = [step["loss"] for step in json.loads(path.read_text())["steps"]]
    print(f"{path}: {len(losses)} steps, late gain {late_gain(losses):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("storages", nargs="*", help="Optuna storage URLs of searches.")
    parser.add_argument(
        "--json", type=Path, action="append", default=[], help="autotune run --json"
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for storage in args.storages:
        _stored(storage)
    for path in args.json:
        _run_file(path)


if __name__ == "__main__":
    main()
