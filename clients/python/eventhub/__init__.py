"""Python client of eventhub, a gRPC event hub.

* :class:`Client` (blocking) and :class:`AsyncClient` (asyncio) call the API
  of ``proto/eventhub/v1/eventhub.proto``; messages are the generated classes
  of :mod:`eventhub.v1.eventhub_pb2`, re-exported here.
* :class:`Consumer` reads partitions and stores its cursor in the user's
  database transaction (exactly-once), through a :class:`CursorStore`.
* Failed calls raise :class:`EventHubError` subclasses carrying the gRPC code.
* :func:`partition_for` computes a key's partition.
"""

from ._aio import AsyncClient, AsyncStream
from ._client import Client, Stream
from ._consumer import INVALIDATION_EVENT_TYPE, Consumer, Handler
from ._cursor_store import CursorStore, DbApiCursorStore, SqliteCursorStore
from ._errors import (
    AlreadyExists,
    Cancelled,
    CursorConflict,
    DeadlineExceeded,
    EventHubError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from ._partition import fnv1a_64, partition_for
from ._retry import NO_RETRY, RETRY_FOREVER, RetryPolicy
from .v1.eventhub_pb2 import (
    EXPECTED_VERSION_ANY,
    EXPECTED_VERSION_EXACT,
    EXPECTED_VERSION_EXISTS,
    EXPECTED_VERSION_NO_KEY,
    AppendEvent,
    AppendOutcome,
    AppendResponse,
    AppendResult,
    Event,
    ExpectedVersion,
    InvalidateResponse,
    PartitionCursor,
    PartitionInfo,
    ReadKeyResponse,
    ReadPartitionResponse,
    SurfaceResponse,
    Topic,
)

FIRST = "_first"
"""The cursor before a partition's first event."""
LAST = "_last"
"""The cursor at a partition's head, as of the call."""

__all__ = [
    "FIRST",
    "LAST",
    "INVALIDATION_EVENT_TYPE",
    "EXPECTED_VERSION_ANY",
    "EXPECTED_VERSION_EXACT",
    "EXPECTED_VERSION_EXISTS",
    "EXPECTED_VERSION_NO_KEY",
    "AlreadyExists",
    "AppendEvent",
    "AppendOutcome",
    "AppendResponse",
    "AppendResult",
    "AsyncClient",
    "AsyncStream",
    "Cancelled",
    "Client",
    "Consumer",
    "CursorConflict",
    "CursorStore",
    "DbApiCursorStore",
    "DeadlineExceeded",
    "Event",
    "EventHubError",
    "ExpectedVersion",
    "FailedPrecondition",
    "Handler",
    "Internal",
    "InvalidArgument",
    "InvalidateResponse",
    "NO_RETRY",
    "RETRY_FOREVER",
    "NotFound",
    "OutOfRange",
    "PartitionCursor",
    "PartitionInfo",
    "PermissionDenied",
    "ReadKeyResponse",
    "ReadPartitionResponse",
    "ResourceExhausted",
    "RetryPolicy",
    "SqliteCursorStore",
    "Stream",
    "SurfaceResponse",
    "Topic",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "fnv1a_64",
    "partition_for",
]
