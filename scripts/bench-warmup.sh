#!/usr/bin/env bash
# Warm-up after a start on a distant store (fs/benches/warmup.rs): db_bench readrandom per second on
# local disk, after a cold remount (cache dir lost) and after a restore into fresh dirs, with the
# store LATENCY_MS away and the cache limited to CACHE_MB. Over a file:// store, then over the S3
# test server (moto on loopback) with the latency on top. Root.
#
#   KEYS=4000000 SECONDS=60 LATENCY_MS=20 CACHE_MB=64 scripts/bench-warmup.sh
#   STORES=file scripts/bench-warmup.sh     # only the file:// store
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo bench -q -p statefs --bench warmup --no-run
for store in ${STORES:-file s3}; do
    if [ "$store" = file ]; then
        cargo bench -q -p statefs --bench warmup
        continue
    fi
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    moto_server -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
    moto=$!
    trap 'kill $moto 2>/dev/null; wait $moto 2>/dev/null || true' EXIT
    for _ in $(seq 100); do curl -sf -X PUT "http://127.0.0.1:$port/statefs-bench" >/dev/null && break; sleep 0.2; done
    S3_ENDPOINT="http://127.0.0.1:$port" S3_BUCKET=statefs-bench cargo bench -q -p statefs --bench warmup
    kill $moto 2>/dev/null; wait $moto 2>/dev/null || true
    trap - EXIT
done
