#!/usr/bin/env bash
# The async State API vs the sync one: a keyed count over Zipf-skewed records on ForSt whose store
# answers after LATENCY_MS (default 20; a file:// store behind the fault layer), with the mount's
# cache at 100%, 10% and 0% of the state, beside the RocksDB backend on local disk in the same run
# (backend/benches/async_state.rs). Root (ForSt mounts).
#
#   KEYS=2000000 RECORDS=20000 SYNC_RECORDS=1000 LATENCY_MS=20 scripts/bench-async.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo bench -q -p statefs-backend --bench async_state
