#!/usr/bin/env bash
# The whole test suite: unit tests of the core, mount tests with real RocksDB, db_bench, kill -9 crash
# recovery, loopback S3 and bad input. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
target="${CARGO_TARGET_DIR:-$PWD/target}"
# Scratch space of mount tests: on the target's disk, not a possibly small /tmp.
export STATEFS_TEST_TMP="${STATEFS_TEST_TMP:-$target/test-scratch}"
mkdir -p "$STATEFS_TEST_TMP"
# Hygiene first: formatting, lints and rustdoc, each with warnings as errors.
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
# The heap backend alone builds, and without RocksDB or FUSE.
cargo clippy -p statefs-backend --no-default-features --all-targets -- -D warnings
if cargo tree -p statefs-backend --no-default-features -e normal | grep -E ' (fuser|rocksdb|statefs) v'; then
  echo "statefs-backend without default features depends on the above" >&2
  exit 1
fi
cargo build --workspace --all-targets
log="$STATEFS_TEST_TMP/cargo-test.log"
cargo test --workspace 2>&1 | tee "$log"
# Model-checked concurrency (shuttle): the namespace's and the cache's threads under random
# schedules.
cargo test -p statefs --features shuttle --lib -- core::namespace::model core::cached::model 2>&1 | tee -a "$log"
# The library's examples, as a user runs them (each asserts what it prints).
for example in heap_checkpoint rocksdb_checkpoint forst_checkpoint window_count; do
  TMPDIR="$STATEFS_TEST_TMP" cargo run --quiet -p statefs-backend --example "$example"
done
# Fuzzing, the short version: every parser target for a few seconds each (STATEFS_CI_FUZZ_SECONDS,
# 0 skips); scripts/fuzz.sh runs them for as long as asked.
fuzz_secs="${STATEFS_CI_FUZZ_SECONDS:-10}"
if [ "$fuzz_secs" -gt 0 ]; then
  scripts/fuzz.sh "$fuzz_secs"
fi
# One closing line for the whole run (cargo's own last line is the doc-test summary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "statefs: %d passed, %d failed\n", p, f }' "$log"
