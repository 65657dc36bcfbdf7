"""The blocking client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import grpc

from . import _requests as rq
from ._errors import from_rpc_error
from ._retry import DEFAULT_RETRY, RetryPolicy
from .v1 import eventhub_pb2 as pb
from .v1 import eventhub_pb2_grpc as pb_grpc

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Metadata = Sequence[tuple[str, str]]


class Stream(Generic[Req, Resp]):
    """An iterator over the pages of a server stream.

    When the connection fails with UNAVAILABLE, the stream is reopened right
    after the last page it delivered, with exponential backoff. ``cancel()``
    (from any thread, or a signal handler) ends the iteration.
    """

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
        self._cancelled = threading.Event()
        # Reentrant: a signal handler may call cancel() on the thread that
        # holds the lock in __next__.
        self._lock = threading.RLock()

    def __iter__(self) -> Stream[Req, Resp]:
        return self

    def __next__(self) -> Resp:
        attempt = 0
        while True:
            with self._lock:
                if self._cancelled.is_set() or self._request is None:
                    raise StopIteration
                if self._call is None:
                    self._call = self._open_call(self._request)
                call = self._call
            if self._cancelled.is_set():  # by a signal handler while the call was being opened
                call.cancel()
            try:
                page: Resp = next(call)
            except StopIteration:
                self._request = None
                raise
            except grpc.RpcError as e:
                self._call = None
                if self._cancelled.is_set():
                    raise StopIteration from None
                if self._retry.should_retry(e, attempt):
                    self._cancelled.wait(self._retry.backoff(attempt))
                    attempt += 1
                    continue
                self._request = None
                raise from_rpc_error(e) from e
            self._request = self._resume(self._request, page)
            return page

    def cancel(self) -> None:
        """Ends the stream; a blocked ``next()`` returns StopIteration."""
        with self._lock:
            self._cancelled.set()
            if self._call is not None:
                self._call.cancel()

    def __enter__(self) -> Stream[Req, Resp]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class Client:
    """A blocking client of an eventhub server.

    ``target`` is ``host:port``. Pass ``credentials`` for TLS, ``metadata``
    for headers sent with every call (an authorization token, say), or an
    existing ``channel``. ``timeout`` is the default deadline of unary calls
    in seconds; streams have none unless asked.

    Reads (and Appends whose events all carry an ``event_id``) are retried on
    UNAVAILABLE according to ``retry`` (by default up to 8 tries, about 6 to
    11 seconds; ``get_topic`` and ``read_partition`` take a ``retry`` of
    their own). Errors are raised as :class:`eventhub.EventHubError`
    subclasses.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        credentials: grpc.ChannelCredentials | None = None,
        channel: grpc.Channel | None = None,
        metadata: Metadata = (),
        timeout: float | None = 30.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self._target, self._credentials, self._options = target, credentials, tuple(options)
        self._owns_channel = channel is None
        self._channel = channel if channel is not None else self._open_channel()
        self._stub = pb_grpc.EventHubServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._retired: list[grpc.Channel] = []
        self._channel_lock = threading.Lock()
        self._metadata = tuple(metadata)
        self._timeout = timeout
        self._retry = retry

    def _open_channel(self) -> grpc.Channel:
        # A channel of its own connections: gRPC otherwise shares them
        # between channels to the same target, and a renewed channel
        # (_renew_channel) would get the old connection back.
        options = (("grpc.use_local_subchannel_pool", 1), *self._options)
        if self._credentials is None:
            return grpc.insecure_channel(self._target, options=options)
        return grpc.secure_channel(self._target, self._credentials, options=options)

    def _current_channel(self) -> grpc.Channel:
        return self._channel

    def _renew_channel(self, suspect: grpc.Channel) -> bool:
        """Gives the client a new channel, so new calls go over a new
        connection, if it opened its channel itself and that is still
        ``suspect`` (another caller may have renewed it already). The calls
        still open on the old channel go on; it is closed at the next
        renewal, or with the client. Returns whether the client's channel is
        now other than ``suspect``.

        gRPC reuses a connection until it learns that the connection is
        dead; one whose peer vanished without a word (a dropped NAT entry, a
        dead machine) can take the operating system many minutes to give up
        on, and every call made meanwhile stalls on it.
        """
        if not self._owns_channel:
            return False
        with self._channel_lock:
            if self._channel is not suspect:
                return True
            for old in self._retired:
                old.close()
            self._retired = [self._channel]
            self._channel = self._open_channel()
            self._stub = pb_grpc.EventHubServiceStub(self._channel)  # type: ignore[no-untyped-call]
        return True

    def close(self) -> None:
        with self._channel_lock:
            for old in self._retired:
                old.close()
            self._retired = []
            self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unary(
        self, method: Any, request: Any, timeout: float | None, retryable: bool = True, retry: RetryPolicy | None = None
    ) -> Any:
        retry = retry or self._retry
        attempt = 0
        while True:
            try:
                return method(request, timeout=timeout or self._timeout, metadata=self._metadata)
            except grpc.RpcError as e:
                if retryable and retry.should_retry(e, attempt):
                    time.sleep(retry.backoff(attempt))
                    attempt += 1
                    continue
                raise from_rpc_error(e) from e

    def _stream(
        self, method: Any, request: Req, resume: Any, timeout: float | None, retry: RetryPolicy | None = None
    ) -> Stream[Req, Any]:
        return Stream(
            lambda r: method(r, timeout=timeout, metadata=self._metadata), request, resume, retry or self._retry
        )

    def append(
        self,
        topic: str,
        events: Iterable[pb.AppendEvent],
        *,
        dedup_by_content: bool = False,
        timeout: float | None = None,
    ) -> pb.AppendResponse:
        """Appends ``events`` to ``topic`` as one transaction."""
        request = rq.append_request(topic, events, dedup_by_content)
        return self._unary(self._stub.Append, request, timeout, rq.all_have_event_ids(request))  # type: ignore[no-any-return]

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
    ) -> Stream[pb.ReadPartitionRequest, pb.ReadPartitionResponse]:
        """Reads one partition from ``cursor`` as an iterator of pages.

        ``wait`` (seconds) long-polls when nothing is past the cursor;
        ``follow`` keeps the stream open, with an empty page at least every
        ``heartbeat`` seconds (5 by default). Each page's ``cursor`` is the
        checkpoint to store. ``retry`` replaces the client's policy for this
        stream.
        """
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
    ) -> Stream[pb.SurfaceRequest, pb.SurfaceResponse]:
        """The latest valid event of every key, as an iterator of pages.

        Every page carries the per-partition ``cursors`` to continue reading
        from, and the ``as_of_transaction`` of the snapshot.
        """
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
    ) -> Stream[pb.ReadKeyRequest, pb.ReadKeyResponse]:
        """One key's events in key-version order, as an iterator of pages."""
        request = pb.ReadKeyRequest(topic=topic, key=key, from_version=from_version, max_events=max_events)
        return self._stream(self._stub.ReadKey, request, rq.resume_read_key, timeout)

    def invalidate(
        self, topic: str, transaction_id: int, reason: str, *, timeout: float | None = None
    ) -> pb.InvalidateResponse:
        """Marks a committed transaction invalid (idempotent)."""
        request = pb.InvalidateRequest(topic=topic, transaction_id=transaction_id, reason=reason)
        return self._unary(self._stub.Invalidate, request, timeout)  # type: ignore[no-any-return]

    def create_topic(
        self, name: str, partition_count: int = 0, *, timeout: float | None = None
    ) -> pb.CreateTopicResponse:
        """Creates a topic (0 partitions means the server's default)."""
        request = pb.CreateTopicRequest(name=name, partition_count=partition_count)
        return self._unary(self._stub.CreateTopic, request, timeout)  # type: ignore[no-any-return]

    def get_topic(self, name: str, *, timeout: float | None = None, retry: RetryPolicy | None = None) -> pb.Topic:
        """Describes one topic, with its partitions' head cursors. ``retry``
        replaces the client's policy for this call."""
        request = pb.GetTopicRequest(name=name)
        response: pb.GetTopicResponse = self._unary(self._stub.GetTopic, request, timeout, retry=retry)
        return response.topic

    def list_topics(
        self, name_prefix: str = "", *, page_size: int = 0, timeout: float | None = None
    ) -> Iterator[pb.Topic]:
        """Every topic (whose name starts with ``name_prefix``), sorted by name."""
        after = ""
        while True:
            request = pb.ListTopicsRequest(name_prefix=name_prefix, after_name=after, limit=page_size)
            response: pb.ListTopicsResponse = self._unary(self._stub.ListTopics, request, timeout)
            yield from response.topics
            if not response.next_after_name:
                return
            after = response.next_after_name
