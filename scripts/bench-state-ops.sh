#!/usr/bin/env bash
# Heap state operations (backend/benches/state_ops.rs) beside two same-machine JVM references and
# Flink's published heap figures. One JVM per operation, as JMH forks.
#   - Flink heap: Flink's own HeapKeyedStateBackend (flink-dist 2.3.0 from PyPI's
#     apache-flink-libraries, cached under ~/.cache/statefs/flink), built as flink-benchmarks builds
#     it (scripts/jvm/FlinkHeapReference.java). This is the comparison that counts.
#   - JDK layout: Flink's heap layout in JDK collections with none of Flink's bookkeeping
#     (scripts/jvm/StateOpsReference.java), roughly a lower bound on what a JVM needs here.
# Both sides use KEY_GROUPS key groups (default 128, Flink's default max parallelism;
# flink-benchmarks uses 2).
#
#   BENCH_MS=1000 BENCH_ROUNDS=3 KEY_GROUPS=128 JVM_OPTS="-Xms6g -Xmx6g" scripts/bench-state-ops.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# shellcheck source=scripts/jvm/flink.sh
. scripts/jvm/flink.sh
source scripts/results.sh
export KEY_GROUPS=${KEY_GROUPS:-128}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
javac -nowarn -cp "$flink_cp" -d "$work" scripts/jvm/StateOpsReference.java scripts/jvm/FlinkHeapReference.java

BENCH_KEY_GROUPS=$KEY_GROUPS cargo bench -q -p statefs-backend --bench state_ops 2>/dev/null \
    | grep '^| [a-z]' >"$work/rust"
ops="valueGet valueUpdate valueAdd listUpdate listAdd listAppend listGet listAddAll mapGet mapContains mapUpdate mapAdd mapIterator recordGet3"
for op in $ops; do
    # shellcheck disable=SC2086
    java ${JVM_OPTS:--Xms6g -Xmx6g} -cp "$work:$flink_cp" \
        FlinkHeapReference "$op" 2>/dev/null >>"$work/flink"
    # shellcheck disable=SC2086
    java ${JVM_OPTS:--Xms6g -Xmx6g} -cp "$work" StateOpsReference "$op" >>"$work/jvm"
done

echo "heap state operations, ops/ms, one thread, $(nproc) cores, $KEY_GROUPS key groups, $(date -u +%F)"
echo "| operation | statefs heap | Flink $flink_version heap, this machine | statefs / Flink here | JDK layout | statefs / JDK | Flink heap (published) | statefs / published |"
echo "|---|---|---|---|---|---|---|---|"
results_open state-ops "operation,statefs_ops_ms,flink_here_ops_ms,jdk_ops_ms,flink_published_ops_ms" \
  "heap state operations, one thread, $KEY_GROUPS key groups, Flink $flink_version"
for op in $ops; do
    # Rust rows: | name [(note)] | ops | flink |
    row=$(grep "^| $op[ |]" "$work/rust" || true)
    ours=$(echo "$row" | awk -F'|' '{gsub(/ /, "", $3); print $3}')
    published=$(echo "$row" | awk -F'|' '{gsub(/^ +| +$/, "", $4); print $4}')
    flink=$(awk -v op="$op" '$1 == op {print $2}' "$work/flink")
    jvm=$(awk -v op="$op" '$1 == op {print $2}' "$work/jvm")
    results_row "$op" "${ours//,/}" "${flink//,/}" "${jvm//,/}" "${published//,/}"
    awk -v op="$op" -v o="${ours:-0}" -v f="${flink:-0}" -v j="${jvm:-0}" -v p="$published" 'BEGIN {
        rf = (f > 0) ? sprintf("%.2fx", o / f) : "";
        rj = (j > 0) ? sprintf("%.2fx", o / j) : "";
        rp = (p + 0 > 0) ? sprintf("%.2fx", o / p) : "";
        printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", op, o, f, rf, j, rj, p, rp }'
done
results_close
