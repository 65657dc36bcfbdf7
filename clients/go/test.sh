#!/usr/bin/env bash
# Vets the module and runs its tests against a real hub: $EVENTHUB_BIN, by
# default target/debug/eventhub of this repository (build it first; this
# script does not build Rust).
set -euo pipefail
cd "$(dirname "$0")"
export EVENTHUB_BIN="${EVENTHUB_BIN:-$(cd ../.. && pwd)/target/debug/eventhub}"
if [ ! -x "$EVENTHUB_BIN" ]; then
  echo "test.sh: no hub binary at $EVENTHUB_BIN (run cargo build, or set EVENTHUB_BIN)" >&2
  exit 1
fi
go vet ./...
go test -count=1 -timeout 5m ./...
