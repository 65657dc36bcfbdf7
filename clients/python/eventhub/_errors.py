"""Typed exceptions for the gRPC statuses the hub returns."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

import grpc


class EventHubError(Exception):
    """A call to the hub failed. ``code`` is the gRPC status code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.metadata = metadata or {}

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class Cancelled(EventHubError):
    code = grpc.StatusCode.CANCELLED


class InvalidArgument(EventHubError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(EventHubError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(EventHubError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(EventHubError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(EventHubError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(EventHubError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(EventHubError):
    """An expected key version did not hold.

    ``key`` and ``actual_version`` come from the trailing metadata
    ``eventhub-key`` (percent-encoded UTF-8) and ``eventhub-actual-version``
    (None when absent).
    """

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code, metadata=metadata)
        key = self.metadata.get("eventhub-key")
        self.key: str | None = None if key is None else unquote(key, errors="replace")
        version = self.metadata.get("eventhub-actual-version")
        self.actual_version: int | None = int(version) if version and version.isdigit() else None


class OutOfRange(EventHubError):
    """A value out of range: a request over the hub's total size limit (see the
    limits in the proto), or a cursor past its partition's head."""

    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(EventHubError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(EventHubError):
    code = grpc.StatusCode.INTERNAL


class Unavailable(EventHubError):
    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(EventHubError):
    code = grpc.StatusCode.UNAUTHENTICATED


class CursorConflict(Exception):
    """The stored cursor moved under a consumer: another instance of the same
    consumer group processed the partition. The transaction was rolled back."""


_BY_CODE: dict[grpc.StatusCode, type[EventHubError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        Unauthenticated,
    )
}


def _metadata(pairs: Iterable[Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in pairs or ():
        out[key] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return out


def from_rpc_error(error: grpc.RpcError) -> EventHubError:
    """Turns a failed gRPC call (sync or asyncio) into an :class:`EventHubError`."""
    code = error.code()
    details = error.details() or code.name
    metadata = _metadata(error.trailing_metadata())
    cls = _BY_CODE.get(code, EventHubError)
    return cls(details, code=code, metadata=metadata)
