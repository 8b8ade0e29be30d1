#!/usr/bin/env bash
# The GPU checks in one device call (under its 10-minute limit), from the repo root:
#   1. install autotune into the machine's Python (wheels from .whl/: scripts/gpu_wheels.sh);
#   2. the tests marked `gpu` (16-mixed with GradScaler, CUDA memory stats, real OOMs);
#   3. `autotune probe` and `autotune search` on a 116M-parameter GPT-2
#      (benchmarks/workloads/gpt2_116m.py, the transformer space, SEARCH_BUDGET seconds);
#   4. the BENCHMARKS.md section (benchmarks/gpu_section.py).
# Everything lands in $OUT (the device tool's folder) or ./gpu-out; then here:
#   cp <out>/gpu2_116m.md benchmarks/results/gpu/ && python -m benchmarks.suite --markdown-only
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-out}
budget=${SEARCH_BUDGET:-240}  # with the probe, tests and install, under 10 minutes
mkdir -p "$out"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export TMPDIR=$scratch TORCHINDUCTOR_CACHE_DIR=$scratch/inductor
py=python3
if [ -d .whl ]; then
    $py -m pip install --quiet --no-index --find-links .whl --no-deps .whl/*.whl
fi
$py -m pip install --quiet --no-deps --no-build-isolation -e .
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.csv"
# A failing GPU test is reported, not fatal: the search below is the other half of the call.
$py -m pytest -q -m gpu tests > "$out/pytest_gpu.txt" 2>&1 || echo "GPU TESTS FAILED"
tail -5 "$out/pytest_gpu.txt"
task=benchmarks/workloads/gpt2_116m.py
$py -m autotune probe "$task" --json "$out/probe.json" > "$out/probe.txt" 2>&1
started=$(date +%s)
$py -m autotune search "$task" --space search_spaces/transformer.yaml --budget "$budget" \
    --storage "sqlite:///$scratch/search.db" -o "$out/tuned.yaml" 2>&1 | tee "$out/search.txt" | tail -25
echo $(( $(date +%s) - started )) > "$out/search_s.txt"
$py -m benchmarks.gpu_section "$out" --into "$out"
