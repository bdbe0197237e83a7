#!/usr/bin/env bash
# The crash loop: ROUNDS rounds (default 200) of a real workload on a statefs mount, each ended by
# kill -9 at a random point (synced RocksDB writes with flushes, compactions and journal
# compactions; checkpoint publishes; restores into fresh mounts; gc with no grace running beside),
# each followed by statefs fsck (no damage), statefs gc and a check of every acknowledged key.
#
#   scripts/crash-loop.sh                # 200 rounds, a new seed
#   scripts/crash-loop.sh 50 1234        # 50 rounds from seed 1234 (a failure names its seed)
#
# The test suite runs a short version (tests/tests/crash.rs, STATEFS_CRASH_ROUNDS=6).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-200}"
seed="${2:-$(date +%s%N)}"
scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/statefs/target}"
export STATEFS_TEST_TMP="${STATEFS_TEST_TMP:-$CARGO_TARGET_DIR/test-scratch}"
mkdir -p "$STATEFS_TEST_TMP"
cargo build -q -p statefs-cli -p statefs-tests --bins
export STATEFS_BIN="$CARGO_TARGET_DIR/debug/statefs"
exec "$CARGO_TARGET_DIR/debug/crash_loop" "$rounds" "$seed"
