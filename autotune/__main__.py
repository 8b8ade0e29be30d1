"""The ``autotune`` command: ``python -m autotune`` and the console script alike.

The launcher restarts a training command under huge-page malloc (:mod:`autotune._hugepages`)
before it imports the CLI, which imports torch: the restarted process imports it once.
"""

from __future__ import annotations

import sys

from autotune._hugepages import restart_with_hugepages


def main() -> None:
    """Console-script entry point."""
    restart_with_hugepages(sys.argv[1:])  # before anything is imported or measured
    from autotune.cli import app  # after the restart, on purpose

    app()


if __name__ == "__main__":
    main()
