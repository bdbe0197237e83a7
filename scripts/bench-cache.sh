#!/usr/bin/env bash
# db_bench readrandom against local disk and against statefs with its cache at 100%, 30%, 10% and 0%
# of the data, with and without FUSE passthrough, in one run. db_bench's own block cache is kept
# small so reads reach the filesystem, and the kernel page cache is dropped before every measured run
# (local and statefs alike) so neither side starts with its data in memory. statefs's in-memory block
# store for cold reads is kept at BLOCK_MEMORY, and the warm-up of a cold start is off (this measures
# the cache's limits and promotion; scripts/bench-warmup.sh measures the warm-up). Prints ops/s, the
# ratio to local disk, and remote GETs per 1,000 reads. Needs root (drop_caches).
#
#   KEYS=4000000 READS=200000 scripts/bench-cache.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS="${KEYS:-4000000}"
READS="${READS:-200000}"
BLOCK_MEMORY="${BLOCK_MEMORY:-8mb}"
work="${BENCH_DIR:-/var/tmp/statefs-bench-cache}"
source scripts/lib.sh
source scripts/results.sh

# The same table options for every run, and no compaction while reading: the file layout (many
# 8 MiB SSTs) stays what the cache sizes are computed against.
table=(--value_size=100 --compression_type=none --write_buffer_size=8388608 --target_file_size_base=8388608
       --num="$KEYS" --threads=1)
fill=("${table[@]}" --seed=42)
read_args=("${table[@]}" --use_existing_db=1 --benchmarks=readrandom --reads="$READS" --cache_size=1048576
           --seed=7 --open_files=-1 --disable_auto_compactions=1)
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

ops() { awk '$1 == "readrandom" { for (i = 1; i <= NF; i++) if ($i == "ops/sec") print $(i-1) }'; }

mount_with() { # $1 = cache size limit (bytes; 0 with reserve 0 = no cache), $2 = passthrough
  start_mount --remote "file://$work/remote" --local-dir "$work/local" --cache-dir "$work/cache" \
    --cache-size-limit "$1" --cache-reserve-size 0 --passthrough "$2" \
    --block-memory "$BLOCK_MEMORY" --warm-memory 0
}
gets() { "$bin" stats --raw "$work/mnt" | awk -F' ' '/^statefs_remote_requests_total\{op="get"\}/ { print $2 }'; }
cache_used() { "$bin" stats --raw "$work/mnt" | awk '$1 == "statefs_cache_used_bytes" { print $2 }'; }

rm -rf "$work" && mkdir -p "$work/mnt" "$work/localdisk"
echo "filling $KEYS keys on local disk and on statefs" >&2
# Fill, then compact fully: both databases end with the same LSM shape.
for db in "$work/localdisk/db" "$work/mnt/db"; do
  [ "$db" = "$work/mnt/db" ] && mount_with 100gb on
  db_bench --db="$db" --benchmarks=fillrandom "${fill[@]}" >/dev/null 2>&1
  db_bench --db="$db" "${table[@]}" --use_existing_db=1 --benchmarks=compact >/dev/null 2>&1
done
stop_mount
data=$(du -sb "$work/remote/data" | cut -f1)
echo "SST data: $data bytes in $(find "$work/remote/data" -type f | wc -l) objects" >&2

db_bench --db="$work/localdisk/db" "${read_args[@]}" >/dev/null 2>&1
# Local disk is measured right before each statefs configuration: every ratio is a same-moment pair.
local_run() { drop_caches; db_bench --db="$work/localdisk/db" "${read_args[@]}" 2>&1 | ops; }

results=()
for pct in 100 30 10 0; do
  limit=$((data * pct / 100))
  [ "$pct" -eq 100 ] && limit=$((data * 2))
  for pt in on off; do
    mount_with "$limit" "$pt"
    # Warm-up pass: lets promotion fill the cache as far as the limit allows.
    db_bench --db="$work/mnt/db" "${read_args[@]}" >/dev/null 2>&1
    l=$(local_run)
    before=$(gets)
    drop_caches
    s=$(db_bench --db="$work/mnt/db" "${read_args[@]}" 2>&1 | ops)
    after=$(gets)
    used=$(cache_used)
    stop_mount
    per1k=$(awk -v a="$after" -v b="$before" -v r="$READS" 'BEGIN { printf "%.1f", (a - b) * 1000 / r }')
    # What the cache holds against its limit (the room a new file needs is learned from the SSTs
    # written, so a limit holds as many files as fit).
    held=$(awk -v u="${used:-0}" -v l="$limit" 'BEGIN { printf "%.0f%%", (l > 0 ? u * 100 / l : 0) }')
    results+=("$pct|$pt|$l|$s|$per1k|$held")
    echo "cache ${pct}% passthrough $pt done" >&2
  done
done

echo
echo "db_bench readrandom: $KEYS keys, $READS reads after dropping the page cache, 1 MiB db_bench block cache;"
echo "SST data $((data / 1048576)) MiB in $(find "$work/remote/data" -type f | wc -l) files; statefs block memory $BLOCK_MEMORY"
printf "| %-6s | %-11s | %12s | %14s | %8s | %20s | %16s |\n" cache passthrough "local ops/s" "statefs ops/s" "ratio" "remote GETs/1k reads" "cache used/limit"
printf "|%s|%s|%s|%s|%s|%s|%s|\n" "--------" "-------------" "--------------" "----------------" "----------" "----------------------" "------------------"
results_open cache "cache_pct,passthrough,local_ops,statefs_ops,gets_per_1k_reads,held" \
  "db_bench readrandom, $KEYS keys, $READS reads after dropping the page cache"
for r in "${results[@]}"; do
  IFS='|' read -r pct pt l s per1k held <<<"$r"
  results_row "$pct" "$pt" "$l" "$s" "$per1k" "${held%\%}"
  printf "| %-6s | %-11s | %12s | %14s | %8s | %20s | %16s |\n" "$pct%" "$pt" "$l" "$s" \
    "$(awk -v a="$s" -v b="$l" 'BEGIN { printf "%.2fx", a / b }')" "$per1k" "$held"
done
results_close
