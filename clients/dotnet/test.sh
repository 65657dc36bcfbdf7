#!/usr/bin/env bash
# Builds the .NET client (warnings are errors), runs its tests against a real
# hub, packs the NuGet package, and installs it from a local feed into a new
# console project the way the client's README says, then runs the README's
# first program there against a hub.
#
# The hub binary is $EVENTHUB_BIN, by default <repo>/target/debug/eventhub;
# this script does not build it. The PostgreSQL consumer test needs
# EVENTHUB_TEST_POSTGRES_DSN (a postgres:// URL); without it, it is skipped,
# unless EVENTHUB_TEST_REQUIRE_POSTGRES=1 (scripts/test.sh sets both).
# Extra arguments go to `dotnet test` (e.g. --filter Consumer).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export EVENTHUB_BIN="${EVENTHUB_BIN:-$repo/target/debug/eventhub}"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
if [ ! -x "$EVENTHUB_BIN" ]; then
    echo "test.sh: no hub binary at $EVENTHUB_BIN (run cargo build, or set EVENTHUB_BIN)" >&2
    exit 1
fi
cd "$here"

echo "-- build"
dotnet build EventHub.sln -c Debug -nologo -clp:NoSummary

echo "-- tests against $EVENTHUB_BIN"
dotnet test tests/EventHub.Client.Tests -c Debug --no-build -nologo \
    --logger "console;verbosity=normal" "$@"

echo "-- pack"
rm -rf artifacts
dotnet pack src/EventHub.Client -c Release -o artifacts -nologo -clp:NoSummary

echo "-- install from the local feed, as the README says, and run the first program"
scratch="$(mktemp -d /tmp/eventhub-dotnet-pkg.XXXXXX)"
hub_pid=""
cleanup() {
    if [ -n "$hub_pid" ]; then kill "$hub_pid" 2>/dev/null || true; wait "$hub_pid" 2>/dev/null || true; fi
    rm -rf "$scratch"
}
trap cleanup EXIT
# A package cache of its own, so the package just packed is the one installed.
export NUGET_PACKAGES="$scratch/packages"
(
    cd "$scratch"
    # The feed is registered in a nuget.config of the scratch directory, not the user's.
    dotnet new nugetconfig >/dev/null
    dotnet nuget add source "$here/artifacts" --name eventhub-feed --configfile nuget.config >/dev/null
    dotnet new console -o FirstProgram >/dev/null
    cd FirstProgram
    dotnet add package EventHub.Client >/dev/null
    cp "$here/examples/FirstProgram/Program.cs" Program.cs
    dotnet build -nologo -clp:NoSummary -warnaserror >/dev/null
    cd "$scratch"
    dotnet new console -o ProjectToSqlite >/dev/null
    cd ProjectToSqlite
    dotnet add package EventHub.Client >/dev/null
    dotnet add package Microsoft.Data.Sqlite >/dev/null
    dotnet add package Microsoft.Extensions.Logging.Console >/dev/null
    cp "$here/examples/ProjectToSqlite/Program.cs" Program.cs
    dotnet build -nologo -clp:NoSummary -warnaserror >/dev/null
)
"$EVENTHUB_BIN" serve --listen 127.0.0.1:0 --database "sqlite://$scratch/hub.db" >"$scratch/hub.out" 2>"$scratch/hub.log" &
hub_pid=$!
for _ in $(seq 1 600); do
    grep -q '^eventhub listening on ' "$scratch/hub.out" 2>/dev/null && break
    sleep 0.1
done
target="$(sed -n 's/^eventhub listening on //p' "$scratch/hub.out")"
if [ -z "$target" ]; then
    echo "the hub did not start; its log:" >&2
    cat "$scratch/hub.log" >&2
    exit 1
fi
output="$(cd "$scratch/FirstProgram" && timeout 120 dotnet run --no-build -- "http://$target")"
echo "$output"
grep -q '^appended to partition ' <<<"$output"
grep -q 'order-1 OrderPlaced {"total": 42}' <<<"$output"
grep -q '^caught up at cursor ' <<<"$output"

echo "-- the README's consumer, from the same package, projects what the first program appended"
(cd "$scratch/ProjectToSqlite" && exec dotnet bin/Debug/net10.0/ProjectToSqlite.dll "http://$target" orders "$scratch/projection.db") \
    >"$scratch/consumer.log" 2>&1 &
consumer_pid=$!
rows=0
for _ in $(seq 1 600); do
    rows="$(python3 -c 'import sqlite3, sys
try:
    print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM events").fetchone()[0])
except sqlite3.Error:
    print(0)' "$scratch/projection.db")"
    [ "$rows" -ge 1 ] && break
    kill -0 "$consumer_pid" 2>/dev/null || break
    sleep 0.1
done
kill -TERM "$consumer_pid" 2>/dev/null || true
status=0
wait "$consumer_pid" || status=$?
cat "$scratch/consumer.log"
if [ "$rows" -ne 1 ] || [ "$status" -ne 0 ]; then
    echo "the consumer projected $rows events (want 1) and exited with $status (want 0)" >&2
    exit 1
fi
echo "-- the package installs from a local feed; the first program and the consumer run as written"
