#!/usr/bin/env bash
# The async State API vs the sync one: a keyed count over Zipf-skewed records on ForSt whose store
# answers after LATENCY_MS more (default 20; the fault layer's injected latency), with the mount's
# cache at 100%, 10% and 0% of the state, beside the RocksDB backend on local disk in the same run
# (backend/benches/async_state.rs). Twice: over a file:// store, then over the S3 test server
# (moto on loopback, which adds its own 5-8 ms per request). Root (ForSt mounts).
#
#   KEYS=10000000 RECORDS=200000 SYNC_RECORDS=300 LATENCY_MS=20 scripts/bench-async.sh
#   STORES=file scripts/bench-async.sh     # only the file:// store
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/moto.sh
cargo bench -q -p statefs-backend --bench async_state --no-run
for store in ${STORES:-file s3}; do
    if [ "$store" = file ]; then
        cargo bench -q -p statefs-backend --bench async_state
        continue
    fi
    with_moto cargo bench -q -p statefs-backend --bench async_state
done
