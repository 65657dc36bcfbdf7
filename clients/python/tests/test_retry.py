"""Retries and error details against an in-process fake server (no hub needed)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

import eventhub
from eventhub.v1 import eventhub_pb2 as pb
from eventhub.v1 import eventhub_pb2_grpc as pb_grpc

FAST = eventhub.RetryPolicy(max_attempts=4, initial_backoff=0.001, max_backoff=0.01)


class Flaky(pb_grpc.EventHubServiceServicer):
    """Fails the first ``failures`` calls of each method with UNAVAILABLE."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: dict[str, list[Any]] = {}

    def _call(self, name: str, request: Any, context: grpc.ServicerContext) -> None:
        calls = self.requests.setdefault(name, [])
        calls.append(request)
        if len(calls) <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "database unreachable")

    def GetTopic(self, request: pb.GetTopicRequest, context: grpc.ServicerContext) -> pb.GetTopicResponse:
        self._call("GetTopic", request, context)
        return pb.GetTopicResponse(topic=pb.Topic(name=request.name, partition_count=2))

    def Append(self, request: pb.AppendRequest, context: grpc.ServicerContext) -> pb.AppendResponse:
        self._call("Append", request, context)
        if request.events[0].expected == pb.EXPECTED_VERSION_NO_KEY:
            context.set_trailing_metadata((("eventhub-key", "acct%20%C3%A9"), ("eventhub-actual-version", "7")))
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "key acct is at version 7, not 0")
        return pb.AppendResponse(transaction_id=1)

    def ReadPartition(
        self, request: pb.ReadPartitionRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ReadPartitionResponse]:
        # Every call sends one page past the cursor, then the connection "breaks"
        # until the third page, after which the stream ends.
        calls = self.requests.setdefault("ReadPartition", [])
        calls.append(request)
        n = 1 if request.cursor == "_first" else int(request.cursor) + 1
        yield pb.ReadPartitionResponse(events=[pb.Event(sequence=n)], cursor=str(n), caught_up=n == 3)
        if n < 3:
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")


@pytest.fixture
def flaky() -> Iterator[tuple[Flaky, str]]:
    servicer = Flaky(failures=2)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_EventHubServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(grace=None)


def test_reads_are_retried_on_unavailable(flaky: tuple[Flaky, str]) -> None:
    servicer, target = flaky
    with eventhub.Client(target, retry=FAST) as client:
        assert client.get_topic("t").partition_count == 2
    assert len(servicer.requests["GetTopic"]) == 3


def test_retries_give_up(flaky: tuple[Flaky, str]) -> None:
    servicer, target = flaky
    with eventhub.Client(target, retry=eventhub.RetryPolicy(max_attempts=2, initial_backoff=0.001)) as client:
        with pytest.raises(eventhub.Unavailable, match="database unreachable"):
            client.get_topic("t")
    assert len(servicer.requests["GetTopic"]) == 2


def test_append_is_retried_only_with_event_ids(flaky: tuple[Flaky, str]) -> None:
    servicer, target = flaky
    with eventhub.Client(target, retry=FAST) as client:
        with pytest.raises(eventhub.Unavailable):
            client.append("t", [eventhub.AppendEvent(key="k", type="T")])
        assert len(servicer.requests["Append"]) == 1
        client.append("t", [eventhub.AppendEvent(key="k", type="T", event_id="e1")])
        assert len(servicer.requests["Append"]) == 3


def test_stream_resumes_after_the_last_page(flaky: tuple[Flaky, str]) -> None:
    servicer, target = flaky
    with eventhub.Client(target, retry=FAST) as client:
        pages = list(client.read_partition("t", 1, max_events=5))
    assert [p.cursor for p in pages] == ["1", "2", "3"]
    assert [r.cursor for r in servicer.requests["ReadPartition"]] == ["_first", "1", "2"]
    assert all(r.partition == 1 and r.max_events == 5 for r in servicer.requests["ReadPartition"])


def test_failed_precondition_details(flaky: tuple[Flaky, str]) -> None:
    servicer, target = flaky
    servicer.failures = 0
    with eventhub.Client(target, retry=FAST) as client:
        with pytest.raises(eventhub.FailedPrecondition) as error:
            client.append("t", [eventhub.AppendEvent(key="acct", type="T", expected=eventhub.EXPECTED_VERSION_NO_KEY)])
    assert (error.value.key, error.value.actual_version) == ("acct é", 7)
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "version 7" in str(error.value)


def test_async_client_retries_and_resumes(flaky: tuple[Flaky, str]) -> None:
    servicer, target = flaky

    async def main() -> None:
        async with eventhub.AsyncClient(target, retry=FAST) as client:
            assert (await client.get_topic("t")).name == "t"
            assert [p.cursor async for p in client.read_partition("t", 0)] == ["1", "2", "3"]
            with pytest.raises(eventhub.FailedPrecondition) as error:
                event = eventhub.AppendEvent(
                    key="acct", type="T", event_id="e1", expected=eventhub.EXPECTED_VERSION_NO_KEY
                )
                await client.append("t", [event])
            assert error.value.actual_version == 7

    asyncio.run(main())
    assert len(servicer.requests["GetTopic"]) == 3


def test_retrying_forever_never_waits_longer_than_max_backoff() -> None:
    """RETRY_FOREVER allows every retry, and its backoff stays capped however long it goes on
    (the exponential term overflows a float after about a thousand retries)."""
    forever = eventhub.RETRY_FOREVER
    assert all(forever.allows_retry(n) for n in (0, 8, 10**6))
    assert not eventhub.RetryPolicy().allows_retry(7)
    assert all(0 <= forever.backoff(n) <= forever.max_backoff for n in (0, 10, 1100, 10**6))
