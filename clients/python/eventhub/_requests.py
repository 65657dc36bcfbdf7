"""Request building and stream resumption shared by Client and AsyncClient."""

from __future__ import annotations

from collections.abc import Iterable

from .v1 import eventhub_pb2 as pb


def _ms(seconds: float | None, name: str) -> int:
    if seconds is None:
        return 0
    if seconds < 0:
        raise ValueError(f"{name} must not be negative, got {seconds}")
    return round(seconds * 1000)


def append_request(topic: str, events: Iterable[pb.AppendEvent], dedup_by_content: bool) -> pb.AppendRequest:
    return pb.AppendRequest(topic=topic, events=list(events), dedup_by_content=dedup_by_content)


def read_partition_request(
    topic: str,
    partition: int,
    cursor: str,
    max_events: int,
    wait: float | None,
    follow: bool,
    types: Iterable[str],
    heartbeat: float | None,
) -> pb.ReadPartitionRequest:
    return pb.ReadPartitionRequest(
        topic=topic,
        partition=partition,
        cursor=cursor,
        max_events=max_events,
        wait_ms=_ms(wait, "wait"),
        follow=follow,
        types=list(types),
        heartbeat_ms=_ms(heartbeat, "heartbeat"),
    )


def all_have_event_ids(request: pb.AppendRequest) -> bool:
    """An Append is safe to retry when every event carries an event id."""
    return all(e.event_id for e in request.events)


# Each ``resume_*`` function returns the request that continues a stream right
# after ``page``, or None when nothing is left to ask for.


def resume_read_partition(request: pb.ReadPartitionRequest, page: pb.ReadPartitionResponse) -> pb.ReadPartitionRequest:
    nxt = pb.ReadPartitionRequest()
    nxt.CopyFrom(request)
    nxt.cursor = page.cursor
    return nxt


def resume_surface(request: pb.SurfaceRequest, page: pb.SurfaceResponse) -> pb.SurfaceRequest | None:
    nxt = pb.SurfaceRequest()
    nxt.CopyFrom(request)
    nxt.as_of_transaction = page.as_of_transaction
    if page.events:
        nxt.after_key = page.events[-1].key
        if request.limit:
            if request.limit <= len(page.events):
                return None
            nxt.limit = request.limit - len(page.events)
    return nxt


def resume_read_key(request: pb.ReadKeyRequest, page: pb.ReadKeyResponse) -> pb.ReadKeyRequest:
    nxt = pb.ReadKeyRequest()
    nxt.CopyFrom(request)
    if page.events:
        nxt.from_version = page.events[-1].key_version + 1
    return nxt
