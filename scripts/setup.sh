#!/usr/bin/env bash
# Installs everything statefs needs on a fresh Debian 12 machine (run as root). Idempotent: a second
# run installs nothing.
#   - fuse3: fusermount3 (non-root unmount) and the FUSE userspace tools
#   - rocksdb-tools: Debian's unmodified db_bench, for tests, demo and benchmarks
#   - libclang-dev, clang, build-essential: bindgen and the C++ build of RocksDB (rocksdb crate)
#   - moto[server] from PyPI: a loopback S3 server for the S3 tests
#   - azurite from npm (Node.js and npm from Debian if missing) and azure-storage-blob from PyPI:
#     Azure's storage emulator for the az:// tests, and the client that creates its container
#   - util-linux: setpriv, which the privacy and POSIX tests use to act as another user
#   - fio: the data-integrity exerciser of the POSIX tests
# (scripts/fuzz.sh installs cargo-fuzz from crates.io itself.)
set -euo pipefail

log() { echo "setup: $*" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
  log "cargo is not installed; statefs needs a Rust toolchain (rustup, Rust >= 1.88)"
  exit 1
fi

# rustfmt and clippy: the suite checks formatting and lints first.
if command -v rustup >/dev/null 2>&1; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
fi

packages=(fuse3 rocksdb-tools fio libclang-dev clang build-essential pkg-config python3 python3-pip python3-venv util-linux)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -e /dev/fuse ]; then
  modprobe fuse 2>/dev/null || true
  [ -e /dev/fuse ] || { log "/dev/fuse is missing: this machine cannot mount FUSE filesystems"; exit 1; }
fi

pip_install() {
  # Debian's system Python refuses global pip installs (PEP 668); a pyenv/venv Python does not.
  python3 -m pip install --quiet "$@" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages "$@"
}

if ! command -v moto_server >/dev/null 2>&1; then
  log "installing moto[server] (loopback S3 for tests)"
  pip_install 'moto[server]'
  hash -r
  command -v moto_server >/dev/null 2>&1 || { log "moto_server not on PATH after install"; exit 1; }
fi


if ! command -v azurite-blob >/dev/null 2>&1; then
  if ! command -v npm >/dev/null 2>&1; then
    log "installing nodejs npm (for Azurite)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  fi
  log "installing azurite (Azure storage emulator for tests)"
  # 3.35: the last release that runs on Debian 12's Node.js 18 (3.36 and later want Node 21+).
  npm install -g --silent azurite@3.35.0 >/dev/null
  hash -r
  command -v azurite-blob >/dev/null 2>&1 || { log "azurite-blob not on PATH after install"; exit 1; }
fi
if ! python3 -c 'import azure.storage.blob' 2>/dev/null; then
  log "installing azure-storage-blob (creates the Azurite test container)"
  pip_install azure-storage-blob
fi
