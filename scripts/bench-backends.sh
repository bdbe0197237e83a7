#!/usr/bin/env bash
# heap vs rocksdb vs forst in one run: state operation throughput (ops/ms), checkpoint duration and
# bytes uploaded per checkpoint over a steady update workload (rocksdb incremental vs forst), and
# restore time to first state access. Root (forst mounts statefs). The first run compiles RocksDB in
# release mode (about 10 minutes on 2 cores).
#
#   STATE_MB=1024 ROUNDS=5 KEYS=200000 scripts/bench-backends.sh
#   STORE_TMPFS=8g WRITE_MB_S=20 ...   both backends' file:// stores on a tmpfs of that size (a
#                                       stand-in for remote storage, which does not share the
#                                       local disk), each round written at 20 MB/s
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ -n "${STORE_TMPFS:-}" ]; then
    stores=$(mktemp -d /var/tmp/statefs-bench-stores.XXXXXX)
    mount -t tmpfs -o "size=$STORE_TMPFS" tmpfs "$stores"
    trap 'umount "$stores"; rmdir "$stores"' EXIT
    export STORE_DIR=$stores
    cargo bench -p statefs-backend --bench backends
else
    exec cargo bench -p statefs-backend --bench backends
fi
