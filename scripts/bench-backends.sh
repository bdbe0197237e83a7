#!/usr/bin/env bash
# heap vs rocksdb vs forst in one run: state operation throughput (ops/ms), checkpoint duration and
# bytes uploaded per checkpoint over a steady update workload (rocksdb incremental vs forst), and
# restore time to first state access. Root (forst mounts statefs). The first run compiles RocksDB in
# release mode (about 10 minutes on 2 cores).
#
#   STATE_MB=1024 ROUNDS=5 KEYS=200000 scripts/bench-backends.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo bench -p statefs-backend --bench backends
