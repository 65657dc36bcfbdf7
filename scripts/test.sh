#!/usr/bin/env bash
# Runs the whole test suite: formatting and lints, the Rust unit and
# integration tests (real hub, real gRPC) on SQLite and again on PostgreSQL,
# the multi-process PostgreSQL tests, the drift check of every client's
# generated stubs, and every client's tests against a real hub.
#
# Every part whose toolchain this machine has runs; a part whose toolchain is
# missing (go for the Go client, dotnet for the .NET client) is skipped and
# named, with the reason, in the summary printed at the end.
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

ran=()
skipped=()
current=""
summary() {
    local status=$?
    echo
    echo "== summary"
    for part in "${ran[@]}"; do echo "   ran:     $part"; done
    for part in "${skipped[@]}"; do echo "   skipped: $part"; done
    if [ "$status" -ne 0 ]; then
        echo "   FAILED:  $current (exit status $status)"
    fi
}
trap summary EXIT
step() {
    current="$1"
    echo "== $1"
}
passed() { ran+=("$current"); }

step "nats-server, the peer of eventhub-bench (bench/tests/bench.rs runs it when present)"
if scripts/install-bench-deps.sh; then
    passed
else
    skipped+=("nats-server install (bench/tests/bench.rs skips its NATS rows)")
fi

step "rust: fmt, clippy, build"
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo build --locked --workspace
passed

step "rust: tests on SQLite, the PostgreSQL-only tests, and the bench harness"
cargo test --locked --workspace
passed

step "rust: the conformance suite on PostgreSQL"
EVENTHUB_TEST_BACKEND=postgres cargo test --locked --test it -- \
    access:: api:: bad_input:: concurrency:: crash::
passed

export EVENTHUB_BIN="$PWD/target/debug/eventhub"
export EVENTHUB_TEST_POSTGRES_DSN="$EVENTHUB_TEST_POSTGRES_URL"

step "generated stubs are up to date"
if ! command -v go >/dev/null 2>&1; then
    skipped+=("the Go half of the stub drift check (no go toolchain on this machine)")
fi
scripts/check-generated.sh
passed

# client directory, the command its tests need, and what that command is
for entry in "python python3 Python 3" "go go Go" "dotnet dotnet the .NET SDK"; do
    read -r client tool toolname <<<"$entry"
    if [ ! -x "clients/$client/test.sh" ]; then
        continue
    fi
    if ! command -v "$tool" >/dev/null 2>&1; then
        skipped+=("clients/$client tests (no $tool on this machine: install $toolname to run them)")
        echo "== clients/$client: skipped, no $tool on this machine"
        continue
    fi
    step "clients/$client"
    "clients/$client/test.sh"
    passed
done
current=""
echo "== all tests that can run here passed"
