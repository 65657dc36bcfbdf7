#!/usr/bin/env bash
# Regenerates the gRPC stubs in eventhub/v1/ from ../../proto.
#
# The output lands where the proto package says (eventhub/v1/…), so the
# generated `from eventhub.v1 import eventhub_pb2` resolves inside this
# package without rewriting. Tool versions are pinned: regenerating with the
# same pins changes nothing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
proto_root="$here/../../proto"
venv="${EVENTHUB_PY_VENV:-$here/.venv}"
python="${PYTHON:-python3}"

GRPCIO_VERSION=1.85.1
GRPCIO_TOOLS_VERSION=1.85.1
PROTOBUF_VERSION=7.36.2

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "grpcio==$GRPCIO_VERSION" "grpcio-tools==$GRPCIO_TOOLS_VERSION" "protobuf==$PROTOBUF_VERSION"

out="$here/eventhub/v1"
rm -f "$out"/*_pb2.py "$out"/*_pb2.pyi "$out"/*_pb2_grpc.py
cd "$proto_root"
"$venv/bin/python" -m grpc_tools.protoc \
  -I . \
  --python_out="$here" \
  --pyi_out="$here" \
  --grpc_python_out="$here" \
  eventhub/v1/*.proto
