#!/usr/bin/env bash
# Runs the Python client's checks (mypy, then pytest) against a real hub.
#
# The hub binary is $EVENTHUB_BIN, by default <repo>/target/debug/eventhub;
# this script does not build it. Extra arguments go to pytest.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${EVENTHUB_PY_VENV:-$here/.venv}"
python="${PYTHON:-python3}"
export EVENTHUB_BIN="${EVENTHUB_BIN:-$repo/target/debug/eventhub}"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$here[test]"

cd "$here"
"$venv/bin/python" -m mypy
"$venv/bin/python" -m pytest "$@"
