"""The CLI's training commands restart themselves with huge-page malloc, where it exists."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from autotune import _hugepages
from autotune._hugepages import OPT_OUT, TUNABLE, restart_environment
from tests.conftest import ROOT, TINY_TASK

GLIBC = (2, 36)


def test_a_plain_environment_gains_the_tunable() -> None:
    env = restart_environment({"PATH": "/bin"}, GLIBC, "madvise")
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": f"{TUNABLE}=1"}


def test_the_users_other_tunables_are_kept() -> None:
    env = restart_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, GLIBC, "always")
    assert env is not None
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{TUNABLE}=1"


@pytest.mark.parametrize(
    ("environ", "glibc", "mode"),
    [
        ({"GLIBC_TUNABLES": f"{TUNABLE}=0"}, GLIBC, "madvise"),  # the user's own choice
        ({"GLIBC_TUNABLES": f"{TUNABLE}=1"}, GLIBC, "madvise"),  # already restarted
        ({OPT_OUT: "0"}, GLIBC, "madvise"),
        ({}, None, "madvise"),  # musl, macOS: no such tunable
        ({}, (2, 34), "madvise"),  # before glibc added it
        ({}, GLIBC, "never"),  # the kernel would ignore the advice
        ({}, GLIBC, None),  # no THP in this kernel
    ],
)
def test_no_restart_where_it_would_change_nothing_or_is_not_wanted(
    environ: dict[str, str], glibc: tuple[int, int] | None, mode: str | None
) -> None:
    assert restart_environment(environ, glibc, mode) is None


def test_the_thp_mode_is_the_bracketed_word(tmp_path: Path) -> None:
    path = tmp_path / "enabled"
    path.write_text("always [madvise] never\n")
    assert _hugepages.thp_mode(path) == "madvise"
    assert _hugepages.thp_mode(tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("argv", "restarts"),
    [
        (["run", "model.py"], True),
        (["search", "model.py", "--budget", "1m"], True),
        (["probe", "model.py"], True),
        (["check", "tuned.yaml"], True),
        (["schema"], False),  # prints, measures nothing
        (["export", "tuned.yaml", "--to", "torchrun"], False),
        (["--version"], False),
        ([], False),
    ],
)
def test_only_commands_that_measure_or_train_restart(
    argv: list[str], restarts: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(os, "execve", lambda *args: calls.append(args))
    monkeypatch.setattr(_hugepages, "glibc_version", lambda: GLIBC)
    monkeypatch.setattr(_hugepages, "thp_mode", lambda: "madvise")
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv(OPT_OUT, raising=False)
    _hugepages.restart_with_hugepages(argv)
    assert len(calls) == int(restarts)
    if restarts:
        program, args, env = calls[0]
        assert program == sys.executable and args[0] == sys.executable
        assert args[1:] == sys.orig_argv[1:]  # the same command line, as it was typed
        assert env["GLIBC_TUNABLES"] == f"{TUNABLE}=1"


def _host_restarts() -> bool:
    plain = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", OPT_OUT)}
    found = restart_environment(plain, _hugepages.glibc_version(), _hugepages.thp_mode())
    return found is not None


# The task records the GLIBC_TUNABLES its process started with, where the test says.
_RECORDING_TASK = (
    "import os, pathlib\n"
    "pathlib.Path(os.environ['SEEN']).write_text(os.environ.get('GLIBC_TUNABLES', '-'))\n"
    + TINY_TASK
)


@pytest.mark.skipif(not _host_restarts(), reason="this host has no huge-page malloc")
@pytest.mark.parametrize(("opt_out", "seen"), [(None, f"{TUNABLE}=1"), ("0", "-")])
def test_autotune_run_trains_under_huge_page_malloc_unless_told_not_to(
    write_task: Callable[[str], Path], tmp_path: Path, opt_out: str | None, seen: str
) -> None:
    task = write_task(_RECORDING_TASK)
    record = tmp_path / "seen.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", OPT_OUT)}
    env.update(SEEN=str(record), PYTHONPATH=str(ROOT))
    if opt_out is not None:
        env[OPT_OUT] = opt_out
    command = [sys.executable, "-m", "autotune", "run", str(task), "--steps", "2"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert record.read_text() == seen


def _fresh_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (no GLIBC_TUNABLES, no opt-out); its stdout."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", OPT_OUT)}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


# The launcher's restart, caught: it reports whether torch was already imported by then.
_CATCH_THE_RESTART = """
import os, sys
from autotune import _hugepages
_hugepages.glibc_version = lambda: (2, 36)
_hugepages.thp_mode = lambda: "madvise"
def caught(*_args):
    print("torch imported before the restart:", "torch" in sys.modules)
    raise SystemExit(0)
os.execve = caught
sys.argv = ["autotune", "probe", "model.py"]
from autotune.__main__ import main
main()
"""


def test_the_launcher_restarts_before_it_imports_torch() -> None:
    """A restart after torch's import would pay that import twice (1.1 s here)."""
    assert _fresh_python(_CATCH_THE_RESTART) == "torch imported before the restart: False"


def test_the_package_imports_its_public_names_when_first_used() -> None:
    code = (
        "import sys, autotune\n"
        "print('torch' in sys.modules)\n"
        "from autotune import Task, TunedConfig\n"
        "print('torch' in sys.modules, Task.__module__, TunedConfig.__module__)\n"
    )
    assert _fresh_python(code).splitlines() == ["False", "True autotune.task autotune.config"]


def test_every_public_name_resolves_and_an_unknown_one_says_so() -> None:
    import autotune

    for name in autotune.__all__:
        assert getattr(autotune, name) is not None, name
    assert set(autotune.__all__) <= set(dir(autotune))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        autotune.nope  # noqa: B018 -- the attribute access is the test
