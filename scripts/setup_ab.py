"""How long a search's set-up (probe plus baseline) takes here and at another commit.

    python scripts/setup_ab.py BASE [--task examples/mlp_digits.py] [--runs 4]

Checks BASE out into a temporary git worktree, then alternates short searches
(``run_search`` with 2 convergence trials and a 120 s budget, a fresh study each) of this
checkout's code and of BASE's, ``--runs`` of each, every one in a fresh process with
``PYTHONPATH`` set to its tree (its trial workers inherit it). Prints each search's
``phases["probe"]`` and ``phases["baseline"]`` and, per tree, the range of their sum.
Interleaved: the host's speed level drifts over minutes and differs per process
(scripts/speed_levels.py), so one-after-the-other blocks would compare levels, not code.

On 2026-12-05 (2-core AVX512-BF16 host, mlp_digits, 4 runs each), the fork server started
beside the probe (204302a) took probe+baseline from 6.9-7.4 s at its parent to 5.4-5.9 s.
Run it on a quiet machine: nothing else, tests included, beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_SEARCH_TIMEOUT_S = 600  # a 120 s budget plus its confirmation ends long before this

# Run in the child, with the tree under test first on sys.path.
_CHILD = """
import json, sys
from pathlib import Path
import autotune
from autotune.search import SearchOptions, run_search
task, work, tree = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
if not Path(autotune.__file__).resolve().is_relative_to(tree.resolve()):
    sys.exit(f"autotune was imported from {autotune.__file__}, not from {tree}")
options = SearchOptions(task_path=task, trials=2, budget_s=120.0,
                        storage=f"sqlite:///{work}/s.db", output=work / "tuned.yaml")
print(json.dumps(run_search(options).phases))
"""


def main() -> int:
    args = _arguments()
    with tempfile.TemporaryDirectory(prefix="setup-ab-") as scratch:
        base_tree = Path(scratch) / "base"
        _git("worktree", "add", "--detach", "--quiet", str(base_tree), args.base)
        try:
            sums = _alternate(args, {"here": ROOT, args.base: base_tree}, Path(scratch))
        finally:
            _git("worktree", "remove", "--force", str(base_tree))
    for name, values in sums.items():
        print(f"{name}: probe+baseline {min(values):.1f}-{max(values):.1f} s over {len(values)}")
    return 0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="the commit to compare with (e.g. HEAD~1)")
    parser.add_argument("--task", type=Path, default=ROOT / "examples" / "mlp_digits.py")
    parser.add_argument("--runs", type=int, default=4, help="searches per tree")
    return parser.parse_args()


def _alternate(
    args: argparse.Namespace, trees: dict[str, Path], scratch: Path
) -> dict[str, list[float]]:
    sums: dict[str, list[float]] = {name: [] for name in trees}
    for run in range(args.runs):
        for name, tree in trees.items():
            phases = _one_search(tree, args.task.resolve(), scratch / f"{name}-{run}")
            total = phases["probe"] + phases["baseline"]
            sums[name].append(total)
            print(
                f"run {run} {name}: probe {phases['probe']:.1f} s, "
                f"baseline {phases['baseline']:.1f} s, sum {total:.1f} s",
                flush=True,
            )
    return sums


def _one_search(tree: Path, task: Path, work: Path) -> dict[str, float]:
    work.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(tree), TMPDIR=str(work))
    env["TORCHINDUCTOR_CACHE_DIR"] = str(work / "inductor")
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(task), str(work), str(tree)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=_SEARCH_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the search in {tree} failed:\n{done.stderr[-2000:]}")
    phases: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return phases


def _git(*args: str) -> None:
    subprocess.run(["git", "-C", str(ROOT), *args], check=True, timeout=120)


if __name__ == "__main__":
    sys.exit(main())
