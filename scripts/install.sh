#!/usr/bin/env bash
# Installs statefs for operators (as root): the release binary as /usr/local/bin/statefs, the mount
# helper /usr/sbin/mount.fuse.statefs (a symlink, for `mount -t fuse.statefs` and fstab) and the
# systemd unit template /etc/systemd/system/statefs@.service. See docs/OPERATIONS.md.
#
#   scripts/install.sh               # build and install
#   DESTDIR=/tmp/pkg scripts/install.sh   # into a staging root (packaging)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -q -p statefs-cli
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/statefs"
root="${DESTDIR:-}"
install -D -m 0755 "$bin" "$root/usr/local/bin/statefs"
mkdir -p "$root/usr/sbin"
ln -sf /usr/local/bin/statefs "$root/usr/sbin/mount.fuse.statefs"
install -D -m 0644 contrib/statefs@.service "$root/etc/systemd/system/statefs@.service"
install -d -m 0700 "$root/etc/statefs"
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
echo "installed: /usr/local/bin/statefs, /usr/sbin/mount.fuse.statefs, /etc/systemd/system/statefs@.service" >&2
