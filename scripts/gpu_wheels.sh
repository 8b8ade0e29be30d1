#!/usr/bin/env bash
# Run HERE (with network), before scripts/gpu_check.sh on a lent GPU machine: downloads the
# wheels autotune needs that the GPU machine's Python 3.12 image lacks (it has torch,
# transformers, lightning, typer, rich, pyyaml, numpy; nothing can be fetched there) into
# .whl/, which git ignores (.git/info/exclude): pass carry [".whl"] to the device run.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform any -d .whl \
    optuna sqlalchemy alembic mako colorlog greenlet pydantic pydantic-core \
    annotated-types typing-inspection plotly narwhals
du -sh .whl
