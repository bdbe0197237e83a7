#!/usr/bin/env bash
# Warm-up after a start on a distant store (fs/benches/warmup.rs): db_bench readrandom per second on
# local disk, after a cold remount (cache dir lost) and after a restore into fresh dirs, with the
# store LATENCY_MS away and the cache limited to CACHE_MB. Over a file:// store, then over the S3
# test server (moto on loopback) with the latency on top. Root.
#
#   KEYS=4000000 DURATION=60 LATENCY_MS=20 CACHE_MB=64 scripts/bench-warmup.sh
#   STORES=file scripts/bench-warmup.sh     # only the file:// store
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/moto.sh
cargo bench -q -p statefs --bench warmup --no-run
for store in ${STORES:-file s3}; do
    if [ "$store" = file ]; then
        cargo bench -q -p statefs --bench warmup
        continue
    fi
    with_moto cargo bench -q -p statefs --bench warmup
done
