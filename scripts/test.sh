#!/usr/bin/env bash
# Runs the whole test suite: formatting and lints, the Rust unit and
# integration tests (real hub, real gRPC) on SQLite and again on PostgreSQL,
# the multi-process PostgreSQL tests, the drift check of every client's
# generated stubs, and every client's tests against a real hub.
#
# PostgreSQL: set EVENTHUB_TEST_POSTGRES_URL to use your own server (its
# user must be allowed to CREATE DATABASE; the tests create databases named
# eventhub_test_*). Otherwise scripts/with-postgres.sh starts a throwaway
# cluster, installing PostgreSQL from Debian's packages first if needed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${EVENTHUB_TEST_POSTGRES_URL:-}" ]; then
    exec scripts/with-postgres.sh "$0" "$@"
fi
# Tests that need PostgreSQL fail instead of skipping.
export EVENTHUB_TEST_REQUIRE_POSTGRES=1

echo "== nats-server, the peer of eventhub bench (tests/bench.rs runs it when present)"
scripts/install-bench-deps.sh || echo "   (continuing: the bench test skips the NATS rows)"

echo "== rust: fmt, clippy, build"
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo build --locked

echo "== rust: tests on SQLite, and the PostgreSQL-only tests"
cargo test --locked

echo "== rust: the conformance suite on PostgreSQL"
EVENTHUB_TEST_BACKEND=postgres cargo test --locked \
    --test api --test access --test bad_input --test concurrency --test crash

export EVENTHUB_BIN="$PWD/target/debug/eventhub"
export EVENTHUB_TEST_POSTGRES_DSN="$EVENTHUB_TEST_POSTGRES_URL"

echo "== generated stubs are up to date"
scripts/check-generated.sh

for client in python go; do
    if [ -x "clients/$client/test.sh" ]; then
        echo "== clients/$client"
        "clients/$client/test.sh"
    fi
done
echo "== all tests passed"
