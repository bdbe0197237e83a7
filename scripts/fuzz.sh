#!/usr/bin/env bash
# Runs every fuzz target with libFuzzer (cargo-fuzz) for SECONDS each (default 60), then prints
# executions and crashes per target. A crash is copied to fuzz/regressions/<target>/, which the
# normal test suite replays (statefs::fuzzing / statefs_backend::fuzzing); fix it, keep the file.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# cargo-fuzz needs the compiler's unstable sanitizer flags; RUSTC_BOOTSTRAP=1 lets the stable
# toolchain take them, so no nightly is needed. The backend's targets build it without RocksDB.
set -euo pipefail
secs=${1:-60}
shift || true
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${STATEFS_FUZZ_TARGET_DIR:-$HOME/.cache/statefs/fuzz-target}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz

fs_targets="journal journal_records snapshot cache_index manifest mount_record config_yaml http_request remote_url"
backend_targets="savepoint savepoint_raw checkpoint_metadata"
targets=${*:-$fs_targets $backend_targets}

summary=$(mktemp)
failed=0
for t in $targets; do
    mkdir -p "corpus-work/$t" "artifacts/$t" "regressions/$t"
    log=$(mktemp)
    # -rss_limit_mb: a parser that allocates without bound is a crash. -timeout: so is a hang.
    set +e
    cargo fuzz run -O "$t" "corpus-work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1
    rc=$?
    set -e
    execs=$({ grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" || true; } | grep -o '[0-9]*$' | tail -1 || true)
    crashes=0
    for a in artifacts/"$t"/*; do
        [ -e "$a" ] || continue
        cp "$a" "regressions/$t/$(basename "$a")"
        crashes=$((crashes + 1))
        rm -f "$a"
    done
    if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
        failed=1
        echo "== $t failed (exit $rc); the end of its log:" >&2
        tail -40 "$log" >&2
    fi
    printf '%-20s %12s executions %3d crashes (%ss)\n' "$t" "${execs:-?}" "$crashes" "$secs" | tee -a "$summary"
    rm -f "$log"
done
echo
echo "fuzz summary:"
cat "$summary"
rm -f "$summary"
exit $failed
