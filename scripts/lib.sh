# Shared by the scripts that mount statefs in the background (sourced, not run).
# Expects $work; sets $bin (the release statefs binary) and a trap that never leaves a mount or a
# mount process behind, whatever way the script ends.

scripts/setup.sh
cargo build --release -q -p statefs-cli
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/statefs"

pid=
cleanup() {
  if grep -q " $work/mnt " /proc/mounts; then "$bin" unmount --lazy "$work/mnt" || true; fi
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; } || true
}
trap cleanup EXIT

# Starts `statefs mount ARGS... $work/mnt` in the background and waits until it is live.
start_mount() {
  "$bin" mount "$@" "$work/mnt" 2>>"$work/mount.log" &
  pid=$!
  for _ in $(seq 300); do grep -q " $work/mnt " /proc/mounts && return; sleep 0.1; done
  echo "mount did not come up:" >&2; cat "$work/mount.log" >&2; exit 1
}

stop_mount() { "$bin" unmount "$work/mnt"; wait "$pid"; pid=; }
