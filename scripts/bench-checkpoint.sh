#!/usr/bin/env bash
# Checkpoint publish time and restore time-to-first-read on statefs, beside copying the same database
# to the store (what an embedded backend's full checkpoint costs) and beside the embedded RocksDB
# backend itself (the same database on local disk: a RocksDB checkpoint there, copied into the
# store; its restore copies everything back before the first read), for databases of about 100 MB,
# 1 GB and 4 GB. Everything runs on this machine with a file:// store; the page cache is dropped
# before each restore.
#
#   SIZES="100 1000" scripts/bench-checkpoint.sh      # sizes in MB
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES="${SIZES:-100 1000 4000}"
work="${BENCH_DIR:-/var/tmp/statefs-bench-checkpoint}"
source scripts/lib.sh
source scripts/results.sh

ms() { date +%s%3N; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
fill() { db_bench --db="$1" --benchmarks=fillseq --num="$2" --value_size=100 --compression_type=none \
    --write_buffer_size=67108864 --target_file_size_base=67108864 --threads=1 >/dev/null 2>&1; }
first_read() { db_bench --db="$1" --use_existing_db=1 --benchmarks=readrandom --num="$2" --reads=1 --threads=1 \
    >/dev/null 2>&1; }
results=()
for mb in $SIZES; do
  rm -rf "$work" && mkdir -p "$work/mnt" "$work/restored"
  keys=$((mb * 1000000 / 116))
  start_mount --remote "file://$work/remote" --local-dir "$work/local" --cache-dir "$work/cache"
  fill "$work/mnt/db" "$keys"
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
  drop_caches
  t5=$(ms)
  "$bin" mount --remote "file://$work/remote" --restore "$id" --local-dir "$work_restore/local" \
    --cache-dir "$work_restore/cache" "$work/mnt" 2>>"$work/mount.log" &
  pid=$!
  for _ in $(seq 600); do grep -q " $work/mnt " /proc/mounts && break; sleep 0.01; done
  first_read "$work/mnt" "$keys"
  t6=$(ms)
  stop_mount
  # The embedded RocksDB backend: checkpoint on local disk, copied into the store; restore copies
  # it back to a fresh local dir, then opens and reads.
  rm -rf "$work/remote/full-copy"
  fill "$work/localdb" "$keys"
  t7=$(ms)
  ldb --db="$work/localdb" checkpoint --checkpoint_dir="$work/localchk" >/dev/null
  mkdir -p "$work/remote/embedded" && cp -r "$work/localchk" "$work/remote/embedded/" && sync -f "$work/remote/embedded"
  t8=$(ms)
  rm -rf "$work/localdb" "$work/localchk"
  drop_caches
  t9=$(ms)
  cp -r "$work/remote/embedded/localchk" "$work/embedded-restored" && sync -f "$work/embedded-restored"
  first_read "$work/embedded-restored" "$keys"
  t10=$(ms)
  results+=("$mb|$size|$files|$((t1 - t0))|$((t2 - t1))|$((t4 - t3))|$((t6 - t5))|$((t8 - t7))|$((t10 - t9))")
  echo "$mb MB done" >&2
done

echo
echo "checkpoint publish vs full copy, and restore to first read (file:// store on the same disk)"
printf "| %7s | %10s | %5s | %13s | %10s | %10s | %8s | %16s | %15s | %19s |\n" "DB MB" "SST bytes" "files" "rocksdb chk ms" "publish ms" "copy ms" "publish/copy" "restore+read ms" "embedded chk ms" "embedded restore ms"
printf "|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n" "---------" "------------" "-------" "---------------" "------------" "------------" "----------" "------------------" "-----------------" "---------------------"
results_open checkpoint "db_mb,sst_bytes,files,rocksdb_checkpoint_ms,publish_ms,full_copy_ms,restore_ms,embedded_checkpoint_ms,embedded_restore_ms" \
  "db_bench fillseq, file:// store on the same disk"
for r in "${results[@]}"; do
  IFS='|' read -r mb size files chk pub copy restore echk erestore <<<"$r"
  results_row "$mb" "$size" "$files" "$chk" "$pub" "$copy" "$restore" "$echk" "$erestore"
  printf "| %7s | %10s | %5s | %13s | %10s | %10s | %8s | %16s | %15s | %19s |\n" "$mb" "$size" "$files" "$chk" "$pub" "$copy" \
    "$(awk -v a="$pub" -v b="$copy" 'BEGIN { printf "%.1f%%", 100 * a / b }')" "$restore" "$echk" "$erestore"
done
results_close
