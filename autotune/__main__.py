"""``python -m autotune``: the same CLI as the ``autotune`` console script."""

from autotune.cli import main

if __name__ == "__main__":
    main()
