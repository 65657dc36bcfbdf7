"""The blocking client against a real hub."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from _support import unique_topic, wait_for
from conftest import DEFAULT_PARTITIONS, start_hub, stop_hub

import eventhub
from eventhub import AppendEvent


def ev(key: str, type: str = "Happened", payload: bytes = b"", **kw: object) -> AppendEvent:
    return AppendEvent(key=key, type=type, payload=payload, **kw)  # type: ignore[arg-type]


def read_all(client: eventhub.Client, topic: str, partition: int, cursor: str = "_first") -> list[eventhub.Event]:
    return [e for page in client.read_partition(topic, partition, cursor) for e in page.events]


def test_round_trip(client: eventhub.Client) -> None:
    """Appended events come back from their partition with all their fields."""
    topic = unique_topic()
    client.create_topic(topic, 4)
    events = [
        ev(f"order-{i}", "OrderPlaced", f"payload {i}".encode(), content_type="text/plain", headers={"trace": str(i)})
        for i in range(20)
    ]
    response = client.append(topic, events)
    assert response.transaction_id > 0
    assert len(response.results) == 20
    for event, result in zip(events, response.results, strict=True):
        assert result.partition == eventhub.partition_for(event.key, 4)
        assert result.key_version == 1
        assert result.outcome == eventhub.AppendOutcome.Value("APPEND_OUTCOME_STORED")
        assert result.transaction_id == response.transaction_id

    read = {p: read_all(client, topic, p) for p in range(4)}
    assert sum(len(v) for v in read.values()) == 20
    by_key = {e.key: e for events_ in read.values() for e in events_}
    for event, result in zip(events, response.results, strict=True):
        got = by_key[event.key]
        assert (got.partition, got.sequence, got.cursor) == (result.partition, result.sequence, result.cursor)
        assert (got.type, got.payload, got.content_type) == (event.type, event.payload, event.content_type)
        assert dict(got.headers) == dict(event.headers)
        assert got.transaction_id == response.transaction_id
        assert got.committed_at.seconds > 0
    for events_ in read.values():
        assert [e.sequence for e in events_] == list(range(1, len(events_) + 1))

    topic_info = client.get_topic(topic)
    assert topic_info.partition_count == 4
    assert topic_info.event_count == 20
    assert topic_info.last_transaction_id == response.transaction_id
    for info in topic_info.partitions:
        assert info.event_count == len(read[info.partition])
        # Reading from the head cursor finds nothing more.
        assert read_all(client, topic, info.partition, info.head_cursor) == []


def test_pages_and_cursors(client: eventhub.Client) -> None:
    """max_events splits a partition into pages; each page's cursor continues exactly after it."""
    topic = unique_topic()
    client.create_topic(topic, 1)
    client.append(topic, [ev("k", payload=str(i).encode()) for i in range(25)])
    pages = list(client.read_partition(topic, 0, max_events=10))
    assert [len(p.events) for p in pages] == [10, 10, 5]
    assert pages[-1].caught_up
    assert all(p.partition == 0 for p in pages)
    assert pages[0].cursor == pages[0].events[-1].cursor
    rest = read_all(client, topic, 0, pages[0].cursor)
    assert [e.sequence for e in rest] == list(range(11, 26))


def test_auto_create_and_topics(client: eventhub.Client) -> None:
    """Append creates a topic with the default partition count; topics can be listed and created idempotently."""
    prefix = unique_topic("list")
    client.append(f"{prefix}.b", [ev("k")])
    created = client.create_topic(f"{prefix}.a", 2)
    assert created.created and created.topic.partition_count == 2
    again = client.create_topic(f"{prefix}.a", 2)
    assert not again.created
    with pytest.raises(eventhub.AlreadyExists):
        client.create_topic(f"{prefix}.a", 3)
    assert client.get_topic(f"{prefix}.b").partition_count == DEFAULT_PARTITIONS
    names = [t.name for t in client.list_topics(prefix, page_size=1)]
    assert names == [f"{prefix}.a", f"{prefix}.b"]


def test_event_id_and_content_dedup(client: eventhub.Client) -> None:
    """A retried event id and unchanged content point at the stored event instead of a copy."""
    topic = unique_topic()
    first = client.append(topic, [ev("k", payload=b"1", event_id="e-1")])
    again = client.append(topic, [ev("k", payload=b"1", event_id="e-1")])
    assert again.results[0].deduplicated
    assert again.results[0].outcome == eventhub.AppendOutcome.Value("APPEND_OUTCOME_DUPLICATE_EVENT_ID")
    assert again.results[0].sequence == first.results[0].sequence
    assert again.transaction_id == first.transaction_id
    same = client.append(topic, [ev("k", payload=b"1")], dedup_by_content=True)
    assert same.results[0].outcome == eventhub.AppendOutcome.Value("APPEND_OUTCOME_DUPLICATE_CONTENT")
    assert client.get_topic(topic).event_count == 1


def test_long_poll_returns_when_an_event_commits(client: eventhub.Client) -> None:
    """A read with `wait` at the head returns as soon as an event commits, not after the wait."""
    topic = unique_topic()
    client.create_topic(topic, 1)
    head = client.append(topic, [ev("k")]).results[0].cursor
    pages: list[eventhub.ReadPartitionResponse] = []
    reader = threading.Thread(target=lambda: pages.extend(client.read_partition(topic, 0, head, wait=60)))
    started = time.monotonic()
    reader.start()
    client.append(topic, [ev("k", payload=b"second")])
    reader.join(timeout=30)
    assert not reader.is_alive(), "the long-poll did not return after an append"
    assert time.monotonic() - started < 30
    events = [e for p in pages for e in p.events]
    assert [e.payload for e in events] == [b"second"]
    assert pages[-1].cursor == events[-1].cursor


def test_long_poll_times_out_with_an_empty_page(client: eventhub.Client) -> None:
    """With nothing past the cursor, a read waits `wait` and returns one empty page with the cursor unchanged."""
    topic = unique_topic()
    client.create_topic(topic, 1)
    head = client.append(topic, [ev("k")]).results[0].cursor
    started = time.monotonic()
    pages = list(client.read_partition(topic, 0, head, wait=0.3))
    elapsed = time.monotonic() - started
    assert len(pages) == 1
    assert not pages[0].events and pages[0].cursor == head and pages[0].caught_up
    assert 0.25 <= elapsed < 10


def test_follow_pushes_new_events_and_heartbeats(client: eventhub.Client) -> None:
    """A follow stream delivers events as they commit, in order, and sends empty heartbeat pages."""
    topic = unique_topic()
    client.create_topic(topic, 1)
    seen: list[bytes] = []
    heartbeats = threading.Event()
    stream = client.read_partition(topic, 0, follow=True, heartbeat=0.05)

    def follow() -> None:
        for page in stream:
            if not page.events:
                heartbeats.set()
            seen.extend(e.payload for e in page.events)

    follower = threading.Thread(target=follow)
    follower.start()
    try:
        for batch in range(5):
            client.append(topic, [ev("k", payload=f"{batch}-{i}".encode()) for i in range(10)])
        wait_for(lambda: len(seen) >= 50, what="50 followed events")
        assert seen == [f"{b}-{i}".encode() for b in range(5) for i in range(10)]
        assert heartbeats.wait(timeout=10), "no heartbeat page"
    finally:
        stream.cancel()
        follower.join(timeout=10)
    assert not follower.is_alive()


def test_surface_then_continue_from_its_cursors(client: eventhub.Client) -> None:
    """Surface lists each key's latest valid event; reading from its cursors continues with no gap or overlap."""
    topic = unique_topic()
    client.create_topic(topic, 3)
    client.append(topic, [ev("a", payload=b"a1"), ev("b", payload=b"b1"), ev("c", payload=b"c1")])
    client.append(topic, [ev("a", payload=b"a2")])
    bad = client.append(topic, [ev("b", payload=b"b2")])
    client.append(topic, [ev("c", payload=b"", tombstone=True)])
    client.invalidate(topic, bad.transaction_id, "b2 was wrong")

    pages = list(client.surface(topic))
    surface = [(e.key, e.payload) for p in pages for e in p.events]
    assert surface == [("a", b"a2"), ("b", b"b1")]
    cursors = {c.partition: c.cursor for c in pages[0].cursors}
    assert sorted(cursors) == [0, 1, 2]
    assert all(p.as_of_transaction == pages[0].as_of_transaction for p in pages)

    # Nothing is past the snapshot yet; what comes later is read exactly once.
    assert all(
        [e for e in read_all(client, topic, p, c) if e.type != eventhub.INVALIDATION_EVENT_TYPE] == []
        for p, c in cursors.items()
    )
    client.append(topic, [ev("a", payload=b"a3"), ev("d", payload=b"d1")])
    later = sorted((e.key, e.payload) for p, c in cursors.items() for e in read_all(client, topic, p, c))
    assert later == [("a", b"a3"), ("d", b"d1")]


def test_surface_paging_is_one_snapshot(client: eventhub.Client) -> None:
    """Paging a surface with limit/after_key/as_of_transaction lists one consistent moment."""
    topic = unique_topic()
    client.append(topic, [ev(f"k{i:02}", payload=b"v1") for i in range(10)])
    first = list(client.surface(topic, limit=4))
    keys = [e.key for p in first for e in p.events]
    assert keys == [f"k{i:02}" for i in range(4)]
    as_of = first[-1].as_of_transaction
    assert first[-1].next_after_key == "k03"
    client.append(topic, [ev("k05", payload=b"v2"), ev("k99", payload=b"v1")])
    rest = list(client.surface(topic, after_key=first[-1].next_after_key, as_of_transaction=as_of))
    assert [(e.key, e.payload) for p in rest for e in p.events] == [(f"k{i:02}", b"v1") for i in range(4, 10)]
    assert [e.key for p in client.surface(topic, key_prefix="k9") for e in p.events] == ["k99"]


def test_read_key_and_expected_versions(client: eventhub.Client) -> None:
    """ReadKey returns a key's history; a wrong expected version fails with the key and actual version."""
    topic = unique_topic()
    client.append(topic, [ev("acct", payload=b"1", expected=eventhub.EXPECTED_VERSION_NO_KEY)])
    client.append(topic, [ev("acct", payload=b"2", expected=eventhub.EXPECTED_VERSION_EXACT, expected_key_version=1)])
    pages = list(client.read_key(topic, "acct"))
    assert pages[0].current_version == 2
    assert [(e.key_version, e.payload) for p in pages for e in p.events] == [(1, b"1"), (2, b"2")]
    assert [e.key_version for p in client.read_key(topic, "acct", from_version=2) for e in p.events] == [2]

    with pytest.raises(eventhub.FailedPrecondition) as failed:
        client.append(
            topic,
            [
                ev("other", payload=b"x"),
                ev("acct", payload=b"3", expected=eventhub.EXPECTED_VERSION_EXACT, expected_key_version=1),
            ],
        )
    assert failed.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failed.value.key == "acct"
    assert failed.value.actual_version == 2
    with pytest.raises(eventhub.FailedPrecondition):
        client.append(topic, [ev("acct", expected=eventhub.EXPECTED_VERSION_NO_KEY)])
    with pytest.raises(eventhub.FailedPrecondition) as unicode:
        for _ in range(2):
            client.append(topic, [ev("ключ 1%", expected=eventhub.EXPECTED_VERSION_NO_KEY)])
    assert (unicode.value.key, unicode.value.actual_version) == ("ключ 1%", 1)
    with pytest.raises(eventhub.FailedPrecondition) as missing:
        client.append(topic, [ev("ghost", expected=eventhub.EXPECTED_VERSION_EXISTS)])
    assert (missing.value.key, missing.value.actual_version) == ("ghost", 0)
    # Rejected means untouched: the whole append was refused.
    assert [p.current_version for p in client.read_key(topic, "other")] == [0]
    assert client.get_topic(topic).event_count == 3


def test_read_key_of_unknown_key(client: eventhub.Client) -> None:
    """An unknown key is one empty page with current_version 0."""
    topic = unique_topic()
    client.append(topic, [ev("k")])
    pages = list(client.read_key(topic, "nobody"))
    assert [(len(p.events), p.current_version) for p in pages] == [(0, 0)]


def test_invalidate(client: eventhub.Client) -> None:
    """Invalidate appends a marker after the invalid events; doing it twice returns the first markers."""
    topic = unique_topic()
    client.create_topic(topic, 1)
    bad = client.append(topic, [ev("k", payload=b"oops")])
    first = client.invalidate(topic, bad.transaction_id, "wrong price")
    assert not first.already_invalidated and len(first.markers) == 1
    second = client.invalidate(topic, bad.transaction_id, "wrong price")
    assert second.already_invalidated
    assert second.marker_transaction_id == first.marker_transaction_id
    events = read_all(client, topic, 0)
    assert [e.type for e in events] == ["Happened", eventhub.INVALIDATION_EVENT_TYPE]
    assert events[0].transaction_invalidated
    assert events[1].invalidation.transaction_id == bad.transaction_id
    assert events[1].invalidation.reason == "wrong price"
    markers = [e.type for p in client.read_partition(topic, 0, types=["$invalidation"]) for e in p.events]
    assert markers == [eventhub.INVALIDATION_EVENT_TYPE]
    assert [e.type for p in client.read_partition(topic, 0, types=["Happened"]) for e in p.events] == ["Happened"]
    with pytest.raises(eventhub.NotFound):
        client.invalidate(topic, 10_000, "no such transaction")
    with pytest.raises(eventhub.InvalidArgument):
        client.invalidate(topic, bad.transaction_id, "")


def test_types_filter_advances_the_cursor(client: eventhub.Client) -> None:
    """A filtered read skips other types but its cursor moves past them."""
    topic = unique_topic()
    client.create_topic(topic, 1)
    client.append(topic, [ev("k", "A"), ev("k", "B"), ev("k", "A"), ev("k", "B")])
    pages = list(client.read_partition(topic, 0, types=["A"]))
    assert [e.sequence for p in pages for e in p.events] == [1, 3]
    assert read_all(client, topic, 0, pages[-1].cursor) == []


def test_error_mapping(client: eventhub.Client) -> None:
    """Bad input raises the typed exception of its gRPC status, with a message."""
    topic = unique_topic()
    client.create_topic(topic, 2)
    cursor = client.append(topic, [ev("k")]).results[0].cursor
    partition = eventhub.partition_for("k", 2)

    with pytest.raises(eventhub.NotFound) as not_found:
        client.get_topic(unique_topic("missing"))
    assert not_found.value.code == grpc.StatusCode.NOT_FOUND and not_found.value.message
    with pytest.raises(eventhub.NotFound):
        list(client.read_partition(unique_topic("missing"), 0))
    for bad_topic in [".dot", "", "sp ace", "x" * 201]:
        with pytest.raises(eventhub.InvalidArgument):
            client.append(bad_topic, [ev("k")])
    for bad_event in [ev("k", "$reserved"), ev("$k"), ev("", "T"), ev("k", "")]:
        with pytest.raises(eventhub.InvalidArgument):
            client.append(topic, [bad_event])
    with pytest.raises(eventhub.InvalidArgument):
        client.append(topic, [])
    with pytest.raises(eventhub.InvalidArgument):
        client.append(topic, [ev("k", event_id="same"), ev("k", event_id="same")])
    with pytest.raises(eventhub.InvalidArgument):
        list(client.read_partition(topic, 2))
    with pytest.raises(eventhub.InvalidArgument):
        list(client.read_partition(topic, partition, "not-a-cursor"))
    with pytest.raises(eventhub.InvalidArgument):
        list(client.read_partition(topic, 1 - partition, cursor))
    other = unique_topic()
    client.create_topic(other, 2)
    with pytest.raises(eventhub.InvalidArgument):
        list(client.read_partition(other, partition, cursor))
    with pytest.raises(eventhub.InvalidArgument):
        client.create_topic(unique_topic(), 1025)
    # Nothing was stored by the refused calls.
    assert client.get_topic(topic).event_count == 1


def test_unavailable_after_retries() -> None:
    """A hub that cannot be reached raises Unavailable once the retries are used up."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    retry = eventhub.RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
    with eventhub.Client(f"127.0.0.1:{port}", retry=retry, timeout=10) as c:
        with pytest.raises(eventhub.Unavailable) as error:
            c.get_topic("t")
        assert error.value.code == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(eventhub.Unavailable):
            list(c.read_partition("t", 0))


def test_out_of_range(tmp_path: Path) -> None:
    """A request over the hub's total size limit raises OutOfRange, and nothing is stored."""
    small = start_hub(tmp_path, "--max-request-bytes", "2000")
    try:
        with eventhub.Client(small.target) as c:
            topic = unique_topic()
            c.create_topic(topic, 1)
            with pytest.raises(eventhub.OutOfRange) as error:
                c.append(topic, [ev("k", payload=b"x" * 5000)])
            assert error.value.code == grpc.StatusCode.OUT_OF_RANGE and "2000" in error.value.message
            assert c.get_topic(topic).event_count == 0
    finally:
        assert stop_hub(small) == 0


@pytest.mark.timeout(30)
def test_cancel_from_a_signal_handler_while_the_call_opens(client: eventhub.Client) -> None:
    """A signal handler that cancels a stream runs on the thread iterating it, possibly while that
    thread holds the stream's lock to open the call: the cancel neither deadlocks nor is lost
    (the follow stream below would otherwise wait for its first heartbeat, a minute away)."""
    topic = unique_topic()
    client.create_topic(topic, 1)
    stream = client.read_partition(topic, 0, "_last", follow=True, heartbeat=60)
    open_call = stream._open_call

    def open_during_a_signal(request: Any) -> Any:
        signal.raise_signal(signal.SIGUSR1)  # its handler runs here, inside the stream's lock
        return open_call(request)

    stream._open_call = open_during_a_signal
    previous = signal.signal(signal.SIGUSR1, lambda *_: stream.cancel())
    try:
        started = time.monotonic()
        assert list(stream) == []
        assert time.monotonic() - started < 10
    finally:
        signal.signal(signal.SIGUSR1, previous)
