#!/usr/bin/env bash
# Timer operations (backend/benches/timers.rs) on the statefs heap and RocksDB backends, beside
# Flink 2.3's own heap timers on this machine (scripts/jvm/FlinkTimerReference.java: the queue
# HeapKeyedStateBackend creates for InternalTimerServiceImpl, one JVM per operation) and Flink's
# published figure for its timer benchmark (flink-benchmarks' ProcessingTimerBenchmark,
# fireProcessingTimers: ~250 ops/ms at 150k timers per invocation, apache/flink-benchmarks#29,
# 2021, a whole job on other hardware). Then the scale run: TIMER_SCALE (2M) timers on RocksDB.
#
#   TIMERS=200000 BENCH_ROUNDS=5 TIMER_SCALE=2000000 JVM_OPTS="-Xms6g -Xmx6g" scripts/bench-timers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# shellcheck source=scripts/jvm/flink.sh
. scripts/jvm/flink.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
javac -nowarn -cp "$flink_cp" -d "$work" scripts/jvm/StateOpsReference.java \
    scripts/jvm/FlinkHeapReference.java scripts/jvm/FlinkTimerReference.java

cargo bench -q -p statefs-backend --bench timers 2>/dev/null >"$work/rust"
ops="timerRegister timerDelete timerFire fireProcessingTimers"
for op in $ops; do
    # shellcheck disable=SC2086
    java ${JVM_OPTS:--Xms6g -Xmx6g} -cp "$work:$flink_cp" \
        FlinkTimerReference "$op" 2>/dev/null >>"$work/flink"
done

head -1 "$work/rust"
echo "| operation | statefs heap | statefs rocksdb | Flink $flink_version heap, this machine | heap / Flink here | Flink published | heap / published | rocksdb / published |"
echo "|---|---|---|---|---|---|---|---|"
for op in $ops; do
    row=$(grep "^| $op |" "$work/rust")
    heap=$(echo "$row" | awk -F'|' '{gsub(/ /, "", $3); print $3}')
    rocks=$(echo "$row" | awk -F'|' '{gsub(/ /, "", $4); print $4}')
    flink=$(awk -v op="$op" '$1 == op {print $2}' "$work/flink")
    published=""
    [ "$op" = fireProcessingTimers ] && published=250
    awk -v op="$op" -v h="$heap" -v r="$rocks" -v f="${flink:-0}" -v p="$published" 'BEGIN {
        rf = (f > 0) ? sprintf("%.2fx", h / f) : "";
        ph = (p > 0) ? sprintf("%.1fx", h / p) : "";
        pr = (p > 0) ? sprintf("%.1fx", r / p) : "";
        printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", op, h, r, f, rf, (p > 0 ? "~" p : "not published"), ph, pr }'
done
echo
grep '^scale' "$work/rust" || true
