#!/usr/bin/env bash
# Regenerates every client's stubs from proto/ and fails if anything changed:
# generated code must be committed as the generator makes it.
#
# A generator whose toolchain this machine lacks (go for clients/go) is
# skipped, and said so. The .NET client commits no stubs: Grpc.Tools
# generates them from proto/ at every build.
set -euo pipefail
cd "$(dirname "$0")/.."
for gen in clients/*/generate.sh; do
    [ -x "$gen" ] || continue
    if [ "$gen" = clients/go/generate.sh ] && ! command -v go >/dev/null 2>&1; then
        echo "-- $gen: skipped, no go on this machine (its stubs are checked where go is installed)"
        continue
    fi
    echo "-- $gen"
    "$gen"
done
if ! git diff --exit-code --stat -- clients || [ -n "$(git status --porcelain --untracked-files=all -- clients | grep -v '^ M' || true)" ]; then
    git status --short -- clients
    echo "generated stubs differ from proto/: run the generate.sh scripts above and commit the result" >&2
    exit 1
fi
