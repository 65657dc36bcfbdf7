#!/usr/bin/env bash
# Installs what `eventhub-bench` needs beyond Rust: nats-server, the NATS
# JetStream peer the bench compares the hub with. Idempotent: does nothing
# when nats-server is already on PATH. Uses Debian/Ubuntu packages (apt) and
# so must run as root; otherwise it says what to do instead.
set -euo pipefail

if command -v nats-server >/dev/null 2>&1; then
    echo "nats-server is installed: $(command -v nats-server) ($(nats-server --version 2>&1 | head -n1))"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    cat >&2 <<'MSG'
nats-server is not installed, and installing it needs root.
Run this script as root (e.g. `sudo scripts/install-bench-deps.sh`), or install
nats-server yourself (https://docs.nats.io/running-a-nats-service/introduction/installation)
and make sure it is on PATH. Without it, `eventhub-bench` skips the NATS rows.
MSG
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    cat >&2 <<'MSG'
This script installs nats-server with apt-get, which this system does not have.
Install nats-server with your package manager or from
https://github.com/nats-io/nats-server/releases and put it on PATH.
MSG
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq nats-server
echo "installed nats-server: $(command -v nats-server) ($(nats-server --version 2>&1 | head -n1))"
