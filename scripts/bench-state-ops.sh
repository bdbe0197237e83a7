#!/usr/bin/env bash
# Heap state operations (backend/benches/state_ops.rs) beside a same-machine JVM reference
# (scripts/jvm/StateOpsReference.java: Flink's heap layout in JDK collections, roughly a lower
# bound on the time Flink's heap backend needs here) and Flink's published heap figures. One JVM
# per operation, as JMH forks.
#
#   BENCH_MS=1000 BENCH_ROUNDS=3 JVM_OPTS="-Xms6g -Xmx6g" scripts/bench-state-ops.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! command -v javac >/dev/null 2>&1; then
    echo "bench-state-ops: installing openjdk-17-jdk-headless for the JVM reference" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
javac -d "$work" scripts/jvm/StateOpsReference.java

cargo bench -q -p statefs-backend --bench state_ops 2>/dev/null | grep '^| [a-z]' >"$work/rust"
ops="valueGet valueUpdate valueAdd listUpdate listAdd listAppend listGet listAddAll mapGet mapContains mapUpdate mapAdd mapIterator"
for op in $ops; do
    # shellcheck disable=SC2086
    java ${JVM_OPTS:--Xms6g -Xmx6g} -cp "$work" StateOpsReference "$op" >>"$work/jvm"
done

echo "heap state operations, ops/ms, one thread, $(nproc) cores, $(date -u +%F)"
echo "| operation | statefs heap | JVM reference (JDK collections) | statefs / JVM | Flink heap (published) | statefs / Flink |"
echo "|---|---|---|---|---|---|"
for op in $ops; do
    # Rust rows: | name [(note)] | ops | flink |
    row=$(grep "^| $op[ |]" "$work/rust" || true)
    ours=$(echo "$row" | awk -F'|' '{gsub(/ /, "", $3); print $3}')
    flink=$(echo "$row" | awk -F'|' '{gsub(/^ +| +$/, "", $4); print $4}')
    jvm=$(awk -v op="$op" '$1 == op {print $2}' "$work/jvm")
    awk -v op="$op" -v o="${ours:-0}" -v j="${jvm:-0}" -v f="$flink" 'BEGIN {
        rj = (j > 0) ? sprintf("%.2fx", o / j) : "";
        rf = (f + 0 > 0) ? sprintf("%.2fx", o / f) : "";
        printf "| %s | %s | %s | %s | %s | %s |\n", op, o, j, rj, f, rf }'
done
