#!/usr/bin/env bash
# Scaling in 2 -> 1 for rocksdb and forst: the other subtask's key groups ingested as SST files
# (default) vs copied through write batches, against restoring one subtask's checkpoint as it is,
# in the same run. Root (forst mounts statefs).
#
#   STATE_MB=512 scripts/bench-rescale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo bench -p statefs-backend --bench rescale
