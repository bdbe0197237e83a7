#!/usr/bin/env bash
# The fault soak: RocksDB with synced writes on a mount whose object store fails RATE (default
# 0.1) of its calls for SECONDS (default 600): failures before and after taking effect, black
# holes, short reads. Every acknowledged write must survive, every read be right, and at the end
# fsck and gc must agree that nothing leaked.
#
#   scripts/soak.sh                  # 600 s at 10%
#   scripts/soak.sh 120 0.2 1234     # 120 s at 20% from seed 1234
#
# The test suite runs a short version (tests/tests/soak.rs, STATEFS_SOAK_SECONDS=20).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
rate="${2:-0.1}"
seed="${3:-$(date +%s%N)}"
scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/statefs/target}"
export STATEFS_TEST_TMP="${STATEFS_TEST_TMP:-$CARGO_TARGET_DIR/test-scratch}"
mkdir -p "$STATEFS_TEST_TMP"
cargo build -q -p statefs-tests --bins
exec "$CARGO_TARGET_DIR/debug/soak" "$seconds" "$rate" "$seed"
