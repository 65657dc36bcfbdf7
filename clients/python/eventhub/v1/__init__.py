"""Generated protobuf and gRPC code for the ``eventhub.v1`` API (see generate.sh)."""
