#!/usr/bin/env bash
# Checkpoint publish time and restore time-to-first-read on statefs, beside copying the same database
# to the store (what an embedded backend's full checkpoint costs), for databases of about 100 MB,
# 1 GB and 4 GB. Everything runs on this machine with a file:// store.
#
#   SIZES="100 1000" scripts/bench-checkpoint.sh      # sizes in MB
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES="${SIZES:-100 1000 4000}"
work="${BENCH_DIR:-/var/tmp/statefs-bench-checkpoint}"
source scripts/lib.sh

ms() { date +%s%3N; }
results=()
for mb in $SIZES; do
  rm -rf "$work" && mkdir -p "$work/mnt" "$work/restored"
  keys=$((mb * 1000000 / 116))
  start_mount --remote "file://$work/remote" --local-dir "$work/local" --cache-dir "$work/cache"
  db_bench --db="$work/mnt/db" --benchmarks=fillseq --num="$keys" --value_size=100 --compression_type=none \
    --write_buffer_size=67108864 --target_file_size_base=67108864 --threads=1 >/dev/null 2>&1
  # statefs: RocksDB's checkpoint (hard links: metadata here) + publish.
  t0=$(ms)
  ldb --db="$work/mnt/db" checkpoint --checkpoint_dir="$work/mnt/chk" >/dev/null
  t1=$(ms)
  id=$("$bin" checkpoint "$work/mnt" "$work/mnt/chk" | tail -1)
  t2=$(ms)
  size=$(du -sb "$work/remote/data" | cut -f1)
  files=$(find "$work/remote/data" -type f | wc -l)

  # Baseline: a full copy of the same files into the store, synced.
  mkdir -p "$work/remote/full-copy"
  t3=$(ms)
  cp -r "$work/mnt/chk" "$work/remote/full-copy/" && sync -f "$work/remote/full-copy"
  t4=$(ms)
  stop_mount

  # Restore on a fresh local dir, time until the first key is read.
  work_restore="$work/restored"
  t5=$(ms)
  "$bin" mount --remote "file://$work/remote" --restore "$id" --local-dir "$work_restore/local" \
    --cache-dir "$work_restore/cache" "$work/mnt" 2>>"$work/mount.log" &
  pid=$!
  for _ in $(seq 600); do grep -q " $work/mnt " /proc/mounts && break; sleep 0.01; done
  db_bench --db="$work/mnt" --use_existing_db=1 --benchmarks=readrandom --num="$keys" --reads=1 --threads=1 \
    >/dev/null 2>&1
  t6=$(ms)
  stop_mount
  results+=("$mb|$size|$files|$((t1 - t0))|$((t2 - t1))|$((t4 - t3))|$((t6 - t5))")
  echo "$mb MB done" >&2
done

echo
echo "checkpoint publish vs full copy, and restore to first read (file:// store on the same disk)"
printf "| %7s | %10s | %5s | %13s | %10s | %10s | %8s | %16s |\n" "DB MB" "SST bytes" "files" "rocksdb chk ms" "publish ms" "copy ms" "publish/copy" "restore+read ms"
printf "|%s|%s|%s|%s|%s|%s|%s|%s|\n" "---------" "------------" "-------" "---------------" "------------" "------------" "----------" "------------------"
for r in "${results[@]}"; do
  IFS='|' read -r mb size files chk pub copy restore <<<"$r"
  printf "| %7s | %10s | %5s | %13s | %10s | %10s | %8s | %16s |\n" "$mb" "$size" "$files" "$chk" "$pub" "$copy" \
    "$(awk -v a="$pub" -v b="$copy" 'BEGIN { printf "%.1f%%", 100 * a / b }')" "$restore"
done
