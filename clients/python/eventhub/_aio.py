"""The asyncio client (grpc.aio)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio

from . import _requests as rq
from ._errors import from_rpc_error
from ._retry import DEFAULT_RETRY, RetryPolicy
from .v1 import eventhub_pb2 as pb
from .v1 import eventhub_pb2_grpc as pb_grpc

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class AsyncStream(Generic[Req, Resp]):
    """An async iterator over the pages of a server stream, reopened after
    UNAVAILABLE right after the last page delivered (see :class:`Stream`)."""

    def __init__(
        self,
        open_call: Callable[[Req], Any],
        request: Req,
        resume: Callable[[Req, Resp], Req | None],
        retry: RetryPolicy,
    ) -> None:
        self._open_call = open_call
        self._request: Req | None = request
        self._resume = resume
        self._retry = retry
        self._call: Any = None
        self._cancelled = False

    def __aiter__(self) -> AsyncStream[Req, Resp]:
        return self

    async def __anext__(self) -> Resp:
        attempt = 0
        while True:
            if self._cancelled or self._request is None:
                raise StopAsyncIteration
            if self._call is None:
                self._call = self._open_call(self._request)
            try:
                page = await self._call.read()
            except asyncio.CancelledError:
                if not self._cancelled:
                    raise
                raise StopAsyncIteration from None
            except grpc.RpcError as e:
                self._call = None
                if self._cancelled:
                    raise StopAsyncIteration from None
                if self._retry.should_retry(e, attempt):
                    await asyncio.sleep(self._retry.backoff(attempt))
                    attempt += 1
                    continue
                self._request = None
                raise from_rpc_error(e) from e
            if page is grpc.aio.EOF:
                self._request = None
                raise StopAsyncIteration
            self._request = self._resume(self._request, page)
            return page  # type: ignore[no-any-return]

    def cancel(self) -> None:
        """Ends the stream."""
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()


class AsyncClient:
    """The asyncio flavour of :class:`eventhub.Client`, with the same methods
    as coroutines; streams are async iterators. Use ``async with``."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        credentials: grpc.ChannelCredentials | None = None,
        channel: grpc.aio.Channel | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = 30.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if channel is None:
            if credentials is None:
                channel = grpc.aio.insecure_channel(target, options=options)
            else:
                channel = grpc.aio.secure_channel(target, credentials, options=options)
        self._channel = channel
        self._stub = pb_grpc.EventHubServiceStub(channel)  # type: ignore[no-untyped-call]
        self._metadata = tuple(metadata)
        self._timeout = timeout
        self._retry = retry

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _unary(
        self, method: Any, request: Any, timeout: float | None, retryable: bool = True, retry: RetryPolicy | None = None
    ) -> Any:
        retry = retry or self._retry
        attempt = 0
        while True:
            try:
                return await method(request, timeout=timeout or self._timeout, metadata=self._metadata)
            except grpc.RpcError as e:
                if retryable and retry.should_retry(e, attempt):
                    await asyncio.sleep(retry.backoff(attempt))
                    attempt += 1
                    continue
                raise from_rpc_error(e) from e

    def _stream(
        self, method: Any, request: Req, resume: Any, timeout: float | None, retry: RetryPolicy | None = None
    ) -> AsyncStream[Req, Any]:
        return AsyncStream(
            lambda r: method(r, timeout=timeout, metadata=self._metadata), request, resume, retry or self._retry
        )

    async def append(
        self,
        topic: str,
        events: Iterable[pb.AppendEvent],
        *,
        dedup_by_content: bool = False,
        timeout: float | None = None,
    ) -> pb.AppendResponse:
        request = rq.append_request(topic, events, dedup_by_content)
        return await self._unary(self._stub.Append, request, timeout, rq.all_have_event_ids(request))  # type: ignore[no-any-return]

    def read_partition(
        self,
        topic: str,
        partition: int,
        cursor: str = "_first",
        *,
        max_events: int = 0,
        wait: float | None = None,
        follow: bool = False,
        types: Iterable[str] = (),
        heartbeat: float | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> AsyncStream[pb.ReadPartitionRequest, pb.ReadPartitionResponse]:
        request = rq.read_partition_request(topic, partition, cursor, max_events, wait, follow, types, heartbeat)
        return self._stream(self._stub.ReadPartition, request, rq.resume_read_partition, timeout, retry)

    def surface(
        self,
        topic: str,
        *,
        key_prefix: str = "",
        after_key: str = "",
        limit: int = 0,
        as_of_transaction: int = 0,
        timeout: float | None = None,
    ) -> AsyncStream[pb.SurfaceRequest, pb.SurfaceResponse]:
        request = pb.SurfaceRequest(
            topic=topic,
            key_prefix=key_prefix,
            after_key=after_key,
            limit=limit,
            as_of_transaction=as_of_transaction,
        )
        return self._stream(self._stub.Surface, request, rq.resume_surface, timeout)

    def read_key(
        self,
        topic: str,
        key: str,
        *,
        from_version: int = 0,
        max_events: int = 0,
        timeout: float | None = None,
    ) -> AsyncStream[pb.ReadKeyRequest, pb.ReadKeyResponse]:
        request = pb.ReadKeyRequest(topic=topic, key=key, from_version=from_version, max_events=max_events)
        return self._stream(self._stub.ReadKey, request, rq.resume_read_key, timeout)

    async def invalidate(
        self, topic: str, transaction_id: int, reason: str, *, timeout: float | None = None
    ) -> pb.InvalidateResponse:
        request = pb.InvalidateRequest(topic=topic, transaction_id=transaction_id, reason=reason)
        return await self._unary(self._stub.Invalidate, request, timeout)  # type: ignore[no-any-return]

    async def create_topic(
        self, name: str, partition_count: int = 0, *, timeout: float | None = None
    ) -> pb.CreateTopicResponse:
        request = pb.CreateTopicRequest(name=name, partition_count=partition_count)
        return await self._unary(self._stub.CreateTopic, request, timeout)  # type: ignore[no-any-return]

    async def get_topic(self, name: str, *, timeout: float | None = None, retry: RetryPolicy | None = None) -> pb.Topic:
        request = pb.GetTopicRequest(name=name)
        response: pb.GetTopicResponse = await self._unary(self._stub.GetTopic, request, timeout, retry=retry)
        return response.topic

    async def list_topics(
        self, name_prefix: str = "", *, page_size: int = 0, timeout: float | None = None
    ) -> AsyncIterator[pb.Topic]:
        after = ""
        while True:
            request = pb.ListTopicsRequest(name_prefix=name_prefix, after_name=after, limit=page_size)
            response: pb.ListTopicsResponse = await self._unary(self._stub.ListTopics, request, timeout)
            for topic in response.topics:
                yield topic
            if not response.next_after_name:
                return
            after = response.next_after_name
