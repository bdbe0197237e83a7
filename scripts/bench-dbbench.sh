#!/usr/bin/env bash
# db_bench on local disk and on statefs in the same run: fillrandom, readrandom, readseq and a synced
# fillrandom (--sync=1). Prints ops/s of each (median of ROUNDS rounds) and the ratio statefs/local.
#
#   scripts/bench-dbbench.sh                       # defaults below
#   KEYS=2000000 ROUNDS=5 PASSTHROUGH=off scripts/bench-dbbench.sh
#
# The statefs side mounts a file:// remote on the same disk as the local baseline, so the ratio is the
# cost of the filesystem itself, not of a network.
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS="${KEYS:-1000000}"
SYNC_KEYS="${SYNC_KEYS:-20000}"
ROUNDS="${ROUNDS:-3}"
PASSTHROUGH="${PASSTHROUGH:-auto}"
FUSE_THREADS="${FUSE_THREADS:-2}"
work="${BENCH_DIR:-/var/tmp/statefs-bench}"

source scripts/lib.sh
source scripts/results.sh

common=(--value_size=100 --compression_type=none --write_buffer_size=67108864 --threads=1
        --histogram=0 --statistics=0)

# ops/s of one db_bench benchmark line.
ops() { awk -v b="$1" '$1 == b { for (i = 1; i <= NF; i++) if ($i == "ops/sec") print $(i-1) }'; }

run_suite() { # $1 = db dir; prints "fillrandom readrandom readseq fillsync"
  local db="$1" out fr rr rs fs
  rm -rf "$db"
  out=$(db_bench --db="$db" "${common[@]}" --num="$KEYS" --benchmarks=fillrandom 2>&1); fr=$(ops fillrandom <<<"$out")
  out=$(db_bench --db="$db" "${common[@]}" --num="$KEYS" --use_existing_db=1 --benchmarks=readrandom,readseq 2>&1)
  rr=$(ops readrandom <<<"$out"); rs=$(ops readseq <<<"$out")
  rm -rf "$db"
  out=$(db_bench --db="$db" "${common[@]}" --num="$SYNC_KEYS" --sync=1 --benchmarks=fillrandom 2>&1); fs=$(ops fillrandom <<<"$out")
  rm -rf "$db"
  echo "$fr $rr $rs $fs"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

rm -rf "$work" && mkdir -p "$work/mnt" "$work/localdisk"
start_mount --remote "file://$work/remote" --local-dir "$work/local" --cache-dir "$work/cache" \
  --passthrough "$PASSTHROUGH" --fuse-threads "$FUSE_THREADS"
mode=$(grep -o "passthrough o[nf]*" "$work/mount.log" | tail -1)

: >"$work/local.txt"; : >"$work/statefs.txt"
for r in $(seq "$ROUNDS"); do
  # Alternate the order so neither side always runs on a warmer machine.
  if [ $((r % 2)) -eq 1 ]; then
    run_suite "$work/localdisk/db" >>"$work/local.txt"; run_suite "$work/mnt/db" >>"$work/statefs.txt"
  else
    run_suite "$work/mnt/db" >>"$work/statefs.txt"; run_suite "$work/localdisk/db" >>"$work/local.txt"
  fi
  echo "round $r done" >&2
done

echo
echo "db_bench: $KEYS keys (synced fill: $SYNC_KEYS), 100-byte values, median of $ROUNDS rounds, statefs $mode, $FUSE_THREADS FUSE threads"
printf "| %-18s | %12s | %12s | %7s |\n" benchmark "local ops/s" "statefs ops/s" ratio
printf "|%s|%s|%s|%s|\n" "--------------------" "--------------" "--------------" "---------"
names=(fillrandom readrandom readseq "fillrandom sync=1")
results_open dbbench "benchmark,local_ops,statefs_ops" \
  "db_bench $KEYS keys (synced fill $SYNC_KEYS), median of $ROUNDS rounds, statefs $mode"
for i in 0 1 2 3; do
  l=$(awk -v c=$((i + 1)) '{ print $c }' "$work/local.txt" | median)
  s=$(awk -v c=$((i + 1)) '{ print $c }' "$work/statefs.txt" | median)
  results_row "${names[$i]}" "$l" "$s"
  printf "| %-18s | %12s | %12s | %7s |\n" "${names[$i]}" "$l" "$s" "$(awk -v a="$s" -v b="$l" 'BEGIN { printf "%.2fx", a / b }')"
done
results_close
echo "objects in the store after the run: $(find "$work/remote/data" -type f 2>/dev/null | wc -l)"
