#!/usr/bin/env bash
# The main job, on the embedded default: mount statefs on a file:// object store, run an unmodified
# RocksDB workload (db_bench) on it, show where the bytes went, unmount, remount and read it back.
set -euo pipefail
cd "$(dirname "$0")/.."
demo="${STATEFS_DEMO_DIR:-/var/tmp/statefs-demo}"
keys="${DEMO_KEYS:-500000}"
work="$demo"
source scripts/lib.sh
mount_demo() { start_mount --remote "file://$demo/remote" --local-dir "$demo/local" --cache-dir "$demo/cache"; }

rm -rf "$demo" && mkdir -p "$demo/mnt"
echo "== mounting statefs: SSTs -> file://$demo/remote, everything else -> $demo/local"
mount_demo
echo "== db_bench fillrandom + readrandom, $keys keys, on $demo/mnt/db"
db_bench --db="$demo/mnt/db" --benchmarks=fillrandom,readrandom --num="$keys" --value_size=100 \
  --compression_type=none --write_buffer_size=8388608 --target_file_size_base=8388608 2>&1 \
  | grep -E "^(fillrandom|readrandom)"
echo
echo "== where the bytes went"
printf "%-44s %8s %6s\n" "place" "bytes" "files"
for d in "$demo/remote/data" "$demo/local/files" "$demo/local/journal" "$demo/cache/files"; do
  printf "%-44s %8s %6s\n" "$d" "$(du -sh "$d" | cut -f1)" "$(find "$d" -type f | wc -l)"
done
echo "SST files seen through the mount: $(ls "$demo/mnt/db" | grep -c '\.sst$'), objects in the store: $(find "$demo/remote/data" -type f | wc -l)"
echo "other RocksDB files (stay local): $(ls "$demo/mnt/db" | grep -v '\.sst$' | tr '\n' ' ')"
stop_mount
echo
echo "== unmounted; dropping every local SST copy and remounting: reads now come from the object store"
rm -rf "$demo/cache"
mount_demo
db_bench --db="$demo/mnt/db" --use_existing_db=1 --benchmarks=readrandom --num="$keys" --reads=20000 2>&1 \
  | grep -E "^readrandom"
echo
echo "== statefs stats $demo/mnt"
"$bin" stats "$demo/mnt"
stop_mount
echo "== done; everything is in $demo"
