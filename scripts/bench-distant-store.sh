#!/usr/bin/env bash
# A mount on a slow store (file:// behind the fault layer, LATENCY_MS per call, default 20): cold
# random reads with one reader vs eight, and the slowest metadata operation while fsyncs upload vs
# on an idle mount, in the same run. Root (it mounts).
#
#   LATENCY_MS=50 scripts/bench-distant-store.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo bench -p statefs --bench distant_store
