#!/usr/bin/env bash
# Issue 5's evidence for one example: the default `autotune search`, timed; then
# `benchmarks.reproduce` (does `autotune run -c tuned.yaml` give the recorded samples/s?)
# and `autotune check` (does the time-to-target speed-up still hold?).
#
#   bash scripts/search_evidence.sh tiny_gpt bf16_t     # writes benchmarks/results/searches/
#       tiny_gpt_bf16_{search,tuned,reproduce,check}_t.{txt,yaml}
#
# Run it on a quiet machine: nothing else, tests included, beside it.
set -euo pipefail
workload=$1
tag=$2                       # <host>_<letter>, e.g. bf16_t or avx2_t
host=${tag%_*}
letter=${tag##*_}
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/benchmarks/results/searches
py=$root/.venv/bin/python
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TMPDIR=$work TORCHINDUCTOR_CACHE_DIR=$work/inductor COLUMNS=100
task=$root/examples/$workload.py
tuned=$out/${workload}_${host}_tuned_${letter}.yaml
cd "$work"
start=$(date +%s)
"$root/.venv/bin/autotune" search "$task" --storage "sqlite:///$work/s.db" -o "$tuned" \
  2>&1 | tee "$out/${workload}_${host}_search_${letter}.txt"
echo "search wall clock: $(($(date +%s) - start)) s" | tee -a "$out/${workload}_${host}_search_${letter}.txt"
# A reproduction outside +-10% exits 1; the check still runs, and this script exits 1.
reproduced=0
(cd "$root" && "$py" -m benchmarks.reproduce "$task" "$tuned") \
  2>&1 | tee "$out/${workload}_${host}_reproduce_${letter}.txt" || reproduced=$?
"$root/.venv/bin/autotune" check "$tuned" --task "$task" \
  2>&1 | tee "$out/${workload}_${host}_check_${letter}.txt"
exit "$reproduced"
