#!/usr/bin/env bash
# Regenerates the Go stubs in eventhubv1/ from ../../proto.
#
# Installs pinned versions of protoc-gen-go and protoc-gen-go-grpc into
# .tools/bin and of grpcio-tools (which bundles protoc) into .tools/venv.
# Needs go and python3; nothing else.
set -euo pipefail

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
GRPCIO_TOOLS_VERSION=1.85.1
MODULE=github.com/eventhub/eventhub/clients/go

cd "$(dirname "$0")"
tools="$PWD/.tools"
bin="$tools/bin"
py="$tools/venv/bin/python"

if [ "$("$bin/protoc-gen-go" --version 2>/dev/null)" != "protoc-gen-go $PROTOC_GEN_GO_VERSION" ]; then
  GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
fi
if [ "$("$bin/protoc-gen-go-grpc" --version 2>/dev/null)" != "protoc-gen-go-grpc ${PROTOC_GEN_GO_GRPC_VERSION#v}" ]; then
  GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
fi
if [ ! -x "$py" ]; then
  python3 -m venv "$tools/venv"
fi
if [ "$("$py" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))' 2>/dev/null)" != "$GRPCIO_TOOLS_VERSION" ]; then
  "$py" -m pip install --quiet --disable-pip-version-check "grpcio-tools==$GRPCIO_TOOLS_VERSION"
fi
wkt="$("$py" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"

rm -f eventhubv1/*.pb.go
"$py" -m grpc_tools.protoc \
  -I ../../proto -I "$wkt" \
  --plugin=protoc-gen-go="$bin/protoc-gen-go" \
  --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
  --go_out=. --go_opt=module="$MODULE" \
  --go-grpc_out=. --go-grpc_opt=module="$MODULE" \
  eventhub/v1/eventhub.proto
