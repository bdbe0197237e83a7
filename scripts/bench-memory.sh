#!/usr/bin/env bash
# Memory of the RocksDB backend under a write-heavy workload (1 KB values, random keys, a read
# every 16 writes): peak RSS with a shared memory budget against RocksDB's defaults. One process
# per configuration, since peak RSS is per process.
#
#   WRITE_MB=1024 BUDGETS="64 256 0" scripts/bench-memory.sh     (0 = RocksDB defaults)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo bench -p statefs-backend --bench memory --no-run
echo "| configuration | MB written | RSS before open (MB) | peak RSS (MB) | RSS at end (MB) | peak block cache (MB) | peak memtables (MB) | MB/s |"
echo "|---|---|---|---|---|---|---|---|"
for b in ${BUDGETS:-64 256 0}; do
    BUDGET_MB=$b WRITE_MB=${WRITE_MB:-1024} cargo bench -q -p statefs-backend --bench memory 2>/dev/null | grep '^|'
done
