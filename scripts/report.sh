#!/usr/bin/env bash
# The benchmark report: plots of the last results of the benchmark scripts, as SVG files in
# docs/benchmarks/ that docs/BENCHMARKS.md shows.
#   - ratio to local disk per db_bench workload      (scripts/bench-dbbench.sh    -> dbbench-ratio.svg)
#   - cache-size sweep                                (scripts/bench-cache.sh      -> cache-sweep.svg)
#   - checkpoint and restore time against state size  (scripts/bench-checkpoint.sh -> checkpoint-restore.svg)
#     for statefs, the embedded RocksDB backend and a full copy
#   - heap state operations against Flink's figures   (scripts/bench-state-ops.sh  -> state-ops.svg)
#
#   scripts/report.sh          # plots from the last results (docs/benchmarks/data/*.csv)
#   scripts/report.sh --run    # runs the four scripts first (about an hour), then plots
#
# Each script writes its results file only when it completes, so an interrupted --run keeps the
# previous results. Installs matplotlib (PyPI) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export RESULTS_DIR="${RESULTS_DIR:-docs/benchmarks/data}"
if [ "${1:-}" = "--run" ]; then
  scripts=(bench-dbbench.sh bench-cache.sh bench-checkpoint.sh bench-state-ops.sh)
  i=0
  start=$(date +%s)
  for s in "${scripts[@]}"; do
    i=$((i + 1))
    echo "report: [$i/${#scripts[@]}] scripts/$s (after $(( $(date +%s) - start )) s)" >&2
    "scripts/$s"
  done
  echo "report: benchmarks done in $(( $(date +%s) - start )) s" >&2
elif [ -n "${1:-}" ]; then
  echo "usage: scripts/report.sh [--run]" >&2
  exit 2
fi
if ! python3 -c 'import matplotlib' 2>/dev/null; then
  echo "report: installing matplotlib" >&2
  python3 -m pip install --quiet matplotlib 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages matplotlib
fi
python3 scripts/plot_benchmarks.py "$RESULTS_DIR" docs/benchmarks
