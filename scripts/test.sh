#!/usr/bin/env bash
# Runs the whole test suite: formatting and lints, the Rust unit and
# integration tests (real hub, real gRPC, SQLite), the drift check of every
# client's generated stubs, and every client's tests against a real hub.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== rust: fmt, clippy, build"
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo build --locked

echo "== rust: tests"
cargo test --locked

export EVENTHUB_BIN="$PWD/target/debug/eventhub"

echo "== generated stubs are up to date"
scripts/check-generated.sh

for client in python go; do
    if [ -x "clients/$client/test.sh" ]; then
        echo "== clients/$client"
        "clients/$client/test.sh"
    fi
done
echo "== all tests passed"
