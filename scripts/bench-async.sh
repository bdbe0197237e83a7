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
cargo bench -q -p statefs-backend --bench async_state --no-run
for store in ${STORES:-file s3}; do
    if [ "$store" = file ]; then
        cargo bench -q -p statefs-backend --bench async_state
        continue
    fi
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    moto_server -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
    moto=$!
    trap 'kill $moto 2>/dev/null; wait $moto 2>/dev/null || true' EXIT
    for _ in $(seq 100); do curl -sf -X PUT "http://127.0.0.1:$port/statefs-bench" >/dev/null && break; sleep 0.2; done
    S3_ENDPOINT="http://127.0.0.1:$port" S3_BUCKET=statefs-bench \
        cargo bench -q -p statefs-backend --bench async_state
    kill $moto 2>/dev/null; wait $moto 2>/dev/null || true
    trap - EXIT
done
