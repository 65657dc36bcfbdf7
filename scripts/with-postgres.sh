#!/usr/bin/env bash
# Runs a command with a PostgreSQL server to test against, named by
# EVENTHUB_TEST_POSTGRES_URL (a URL whose user may CREATE DATABASE, e.g.
# postgres://postgres@127.0.0.1:5432/postgres).
#
# If EVENTHUB_TEST_POSTGRES_URL is already set, that server is used as it is.
# Otherwise this script starts a throwaway cluster in a temporary directory
# on a free loopback port, installs PostgreSQL from Debian's packages first
# if it is missing (when run as root with apt-get), and removes the cluster
# when the command ends. For the throwaway cluster it also exports
# EVENTHUB_TEST_POSTGRES_CTL, a script taking `stop` or `start`, which the
# tests use to take the server away under a running hub.
#
#   scripts/with-postgres.sh cargo test
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi

if [ -n "${EVENTHUB_TEST_POSTGRES_URL:-}" ]; then
    exec "$@"
fi

find_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

bin="$(find_bin)"
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing PostgreSQL from Debian's packages" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq postgresql >&2
        bin="$(find_bin)"
    fi
fi
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "PostgreSQL is not installed and this script cannot install it (it needs root and apt-get)." >&2
    echo "Install it (Debian: apt-get install postgresql) or point EVENTHUB_TEST_POSTGRES_URL at a server." >&2
    exit 1
fi

dir="$(mktemp -d /tmp/eventhub-pg.XXXXXX)"
chmod 755 "$dir"
# initdb refuses to run as root: run the cluster as the postgres user then.
run_as=()
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$dir" postgres
    chown postgres "$dir"
    run_as=(runuser -u postgres --)
fi

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

cleanup() {
    "${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

"${run_as[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-instructions >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    exit 1
}
# Durability as in production: fsync and synchronous_commit stay on.
cat >"$dir/ctl" <<CTL
#!/usr/bin/env bash
# stop | start the throwaway PostgreSQL cluster of scripts/with-postgres.sh.
set -euo pipefail
case "\$1" in
    stop) ${run_as[*]} "$bin/pg_ctl" -D "$dir/data" -m fast -w stop ;;
    start) ${run_as[*]} "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \\
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=500" start ;;
    *) echo "usage: \$0 stop|start" >&2; exit 2 ;;
esac
CTL
chmod 755 "$dir/ctl"
"$dir/ctl" start >/dev/null || {
    cat "$dir/server.log" >&2
    exit 1
}
echo "== PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (throwaway cluster in $dir)" >&2

export EVENTHUB_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
export EVENTHUB_TEST_POSTGRES_CTL="$dir/ctl"
"$@"
