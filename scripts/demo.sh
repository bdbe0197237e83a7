#!/usr/bin/env bash
# The main job, on the embedded default: mount statefs on a file:// object store, run an unmodified
# RocksDB workload (db_bench) on it, show where the bytes went, unmount, remount and read it back.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p statefs-cli
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/statefs"
demo="${STATEFS_DEMO_DIR:-/var/tmp/statefs-demo}"
keys="${DEMO_KEYS:-500000}"

cleanup() {
  if grep -q " $demo/mnt " /proc/mounts; then "$bin" unmount --lazy "$demo/mnt" || true; fi
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
}
trap cleanup EXIT

start_mount() {
  "$bin" mount --remote "file://$demo/remote" --local-dir "$demo/local" --cache-dir "$demo/cache" "$demo/mnt" \
    2>>"$demo/mount.log" &
  pid=$!
  for _ in $(seq 300); do grep -q " $demo/mnt " /proc/mounts && return; sleep 0.1; done
  echo "mount did not come up:"; cat "$demo/mount.log"; exit 1
}
stop_mount() { "$bin" unmount "$demo/mnt"; wait "$pid"; pid=; }

rm -rf "$demo" && mkdir -p "$demo/mnt"
echo "== mounting statefs: SSTs -> file://$demo/remote, everything else -> $demo/local"
start_mount
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
echo "SST files seen through the mount: $(ls "$demo/mnt/db" | grep -c '\.sst$'), objects in the store: $(ls "$demo/remote/data" | wc -l)"
echo "other RocksDB files (stay local): $(ls "$demo/mnt/db" | grep -v '\.sst$' | tr '\n' ' ')"
stop_mount
echo
echo "== unmounted; dropping every local SST copy and remounting: reads now come from the object store"
rm -rf "$demo/cache"
start_mount
db_bench --db="$demo/mnt/db" --use_existing_db=1 --benchmarks=readrandom --num="$keys" --reads=20000 2>&1 \
  | grep -E "^readrandom"
echo
echo "== statefs stats $demo/mnt"
"$bin" stats "$demo/mnt"
stop_mount
echo "== done; everything is in $demo"
