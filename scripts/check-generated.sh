#!/usr/bin/env bash
# Regenerates every client's stubs from proto/ and fails if anything changed:
# generated code must be committed as the generator makes it.
set -euo pipefail
cd "$(dirname "$0")/.."
for gen in clients/*/generate.sh; do
    [ -x "$gen" ] || continue
    echo "-- $gen"
    "$gen"
done
if ! git diff --exit-code --stat -- clients || [ -n "$(git status --porcelain --untracked-files=all -- clients | grep -v '^ M' || true)" ]; then
    git status --short -- clients
    echo "generated stubs differ from proto/: run the generate.sh scripts above and commit the result" >&2
    exit 1
fi
