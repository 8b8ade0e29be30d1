"""What does a search's own process cost its trials, and how long do its trials run?

    python scripts/search_cpu.py examples/cnn_digits.py     # the default search
    python scripts/search_cpu.py --chaos-task               # tests/test_chaos.py's setup

Runs ``autotune search`` in a temp dir and samples the search process's own CPU time
(utime + stime in /proc/PID/stat, Linux only; its trial workers are other processes)
once a second, printing each second's share of one core. Then prints every convergence
trial's wall time from the study. On the 2-core AVX512-BF16 host (2026-12-05): the
cnn_digits search's process used 0-10% of a core while its trials ran (90-110% in its
own probe and baseline); the chaos setup's trials ran 0.08-0.15 s each, which is why
tests/test_chaos.py slows their steps before it signals one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.chaos import SMALL_SPACE, TINY_TASK  # noqa: E402

_TICKS = os.sysconf("SC_CLK_TCK")
_RUN_TIMEOUT_S = 900.0  # a default search takes 5 minutes at most; a hung one must end


def main() -> int:
    args = _arguments()
    with tempfile.TemporaryDirectory(prefix="search-cpu-") as scratch:
        work = Path(scratch)
        command = _command(args, work)
        env = {**os.environ, "TMPDIR": scratch, "TORCHINDUCTOR_CACHE_DIR": scratch}
        proc = subprocess.Popen(
            command, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            _sample(proc)
            proc.wait(timeout=_RUN_TIMEOUT_S)
        finally:
            proc.kill()
        _trial_times(work)
    return 0


def _command(args: argparse.Namespace, work: Path) -> list[str]:
    storage = f"sqlite:///{work / 's.db'}"
    base = [sys.executable, "-m", "autotune", "search"]
    tail = ["--storage", storage, "--study-name", "s", "-o", str(work / "tuned.yaml")]
    if not args.chaos_task:
        return [*base, str(args.task.resolve()), *tail]
    (work / "model.py").write_text(TINY_TASK)
    (work / "space.yaml").write_text(SMALL_SPACE)
    chaos = ["--space", str(work / "space.yaml"), "--trials", "5", "--target-loss", "0.5"]
    return [*base, str(work / "model.py"), *chaos, *tail]


def _sample(proc: subprocess.Popen[bytes]) -> None:
    stat = Path(f"/proc/{proc.pid}/stat")
    start = time.monotonic()
    last_t, last_cpu = start, _cpu_s(stat)
    while proc.poll() is None:
        time.sleep(1.0)
        now, cpu = time.monotonic(), _cpu_s(stat)
        if cpu is None or last_cpu is None:
            break
        print(
            f"{now - start:6.1f} s  search process {100 * (cpu - last_cpu) / (now - last_t):4.0f}%"
        )
        last_t, last_cpu = now, cpu


def _cpu_s(stat: Path) -> float | None:
    """The process's utime + stime in seconds; None once it is gone."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _trial_times(work: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = f"sqlite:///{work / 's.db'}"
    for trial in optuna.load_study(study_name="s", storage=storage).trials:
        if trial.datetime_start is None or trial.datetime_complete is None:
            continue
        wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
        status = trial.user_attrs.get("status", trial.state.name)
        print(f"trial {trial.number}: {wall:.3f} s, {status}")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", type=Path, nargs="?", default=ROOT / "examples" / "cnn_digits.py")
    parser.add_argument(
        "--chaos-task", action="store_true", help="tests/test_chaos.py's tiny task and space"
    )
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
