"""Consumer: reads partitions and applies pages exactly once."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from ._client import Client, Stream
from ._cursor_store import CursorStore
from ._errors import EventHubError, Unavailable
from ._retry import NO_RETRY, RETRY_FOREVER, RetryPolicy
from .v1 import eventhub_pb2 as pb

Tx = TypeVar("Tx")
Handler = Callable[[pb.ReadPartitionResponse, Tx], None]

INVALIDATION_EVENT_TYPE = "$invalidation"
"""The type of the marker events Invalidate appends."""

# The hub's heartbeat when none is asked for, and the shortest it sends
# (ReadPartitionRequest.heartbeat_ms), in milliseconds.
_DEFAULT_HEARTBEAT_MS = 5000
_MIN_HEARTBEAT_MS = 50
# A follow stream that sends nothing, not even a heartbeat, for this many
# heartbeat intervals is taken for dead and read again.
_SILENT_HEARTBEATS = 3

log = logging.getLogger("eventhub.consumer")


@dataclass
class _Reader:
    """One partition's reading, shared by its thread, stop() and the watchdog."""

    partition: int
    # Where the next stream starts: right after the last page read.
    cursor: str
    # The open stream, which stop() and the watchdog cancel.
    stream: Stream[Any, pb.ReadPartitionResponse] | None = None
    # When the thread began to wait for the stream's next page; None while
    # it does something else (such as waiting for room in the page queue).
    waiting_since: float | None = None
    # Set by the watchdog when it cancelled a silent stream.
    silent: bool = False


class Consumer(Generic[Tx]):
    """Reads every partition of a topic (or ``partitions``) and calls
    ``handler(page, tx)`` for every page of events.

    ``tx`` is the user's connection inside an open transaction (see
    :class:`CursorStore`). After the handler returns, the consumer writes the
    page's cursor in that same transaction and commits: the effects of a page
    and the cursor after it are stored together or not at all, so each event
    is applied exactly once, whatever crashes. If the handler raises, the
    transaction is rolled back and ``run()`` raises.

    The cursor rows are keyed by ``group``. A partition with no stored cursor
    starts at ``_first`` (``start="first"``) or at the head as of the first
    run (``start="last"``, stored at once so a restart does not skip ahead).
    ``partitions=None`` reads them all; an empty list is refused. The topic
    must exist (``run()`` raises :class:`NotFound` otherwise).

    ``types``, when not empty, keeps only events of these types, and
    invalidation markers (``$invalidation`` is added to the list), so that
    the handler can undo the effects of an invalidated transaction.

    One thread per partition reads; the thread that calls ``run()`` runs the
    handler and the transactions, so a single connection is enough.
    ``stop()`` may be called from any thread or a signal handler.

    When the hub is unavailable, or ends a follow stream (it does when it
    shuts down), or sends nothing, not even a heartbeat, for three
    ``heartbeat`` intervals (5 seconds by default), the partition is read
    again from its last cursor after a backoff of ``retry``. Each failure
    is logged (logger ``eventhub.consumer``). The default,
    :data:`RETRY_FOREVER`, never gives up; with a bounded policy ``run()``
    raises :class:`Unavailable` after that many failures in a row.
    """

    def __init__(
        self,
        client: Client,
        topic: str,
        group: str,
        store: CursorStore[Tx],
        handler: Handler[Tx],
        *,
        partitions: Iterable[int] | None = None,
        start: Literal["first", "last"] = "first",
        max_events: int = 100,
        types: Iterable[str] = (),
        heartbeat: float | None = None,
        retry: RetryPolicy = RETRY_FOREVER,
        create_table: bool = True,
    ) -> None:
        if start not in ("first", "last"):
            raise ValueError(f"start must be 'first' or 'last', got {start!r}")
        self.client = client
        self.topic = topic
        self.group = group
        self.store = store
        self.handler = handler
        self.partitions = None if partitions is None else sorted(set(partitions))
        if self.partitions == []:
            raise ValueError("partitions is empty; pass None to read every partition")
        self.start = start
        self.max_events = max_events
        self.types = tuple(types)
        if self.types and INVALIDATION_EVENT_TYPE not in self.types:
            self.types += (INVALIDATION_EVENT_TYPE,)
        self.heartbeat = heartbeat
        self.retry = retry
        self.create_table = create_table
        self._stopping = threading.Event()
        self._readers: list[_Reader] = []
        self._lock = threading.RLock()  # stop() may run in a signal handler

    def stop(self) -> None:
        """Asks ``run()`` to return after the page it is applying."""
        self._stopping.set()
        with self._lock:
            streams = [r.stream for r in self._readers if r.stream is not None]
        for stream in streams:
            stream.cancel()

    def run(self, *, until_caught_up: bool = False) -> None:
        """Applies pages until ``stop()``, or, with ``until_caught_up``, until
        every partition has been read up to its head."""
        try:
            cursors = self._load_cursors()
            if cursors is not None:
                self._consume(cursors, until_caught_up)
        finally:
            self._stopping.clear()

    def _consume(self, cursors: dict[int, str | None], until_caught_up: bool) -> None:
        pages: queue.Queue[tuple[int, pb.ReadPartitionResponse | BaseException | None]] = queue.Queue(
            maxsize=4 * len(cursors)
        )
        readers = [_Reader(partition, cursor or "_first") for partition, cursor in cursors.items()]
        with self._lock:
            self._readers = readers
        threads = [
            threading.Thread(
                target=self._read,
                args=(reader, until_caught_up, pages),
                name=f"eventhub-{self.topic}-{reader.partition}",
                daemon=True,
            )
            for reader in readers
        ]
        running = len(threads)
        if not until_caught_up:
            threads.append(threading.Thread(target=self._watch, name=f"eventhub-{self.topic}-watchdog", daemon=True))
        for thread in threads:
            thread.start()
        try:
            while running and not self._stopping.is_set():
                partition, item = pages.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                elif not self._stopping.is_set():
                    cursors[partition] = self._apply(partition, cursors[partition], item)
        finally:
            self.stop()
            while running:
                if pages.get()[1] is None:
                    running -= 1
            for thread in threads:
                thread.join()
            with self._lock:
                self._readers = []

    def _load_cursors(self) -> dict[int, str | None] | None:
        """The stored cursor of every partition to read; None if stop() was
        called while the hub was unavailable."""
        if self.create_table:
            self.store.create_table()
        topic: pb.Topic | None = None
        partitions = self.partitions
        if partitions is None or self.start == "last":
            failures = 0
            while topic is None:
                try:
                    topic = self.client.get_topic(self.topic, retry=NO_RETRY)
                except Unavailable as e:
                    if not self._backoff(failures, e, f"{self._where()}: GetTopic"):
                        return None
                    failures += 1
            if partitions is None:
                partitions = list(range(topic.partition_count))
        cursors: dict[int, str | None] = {}
        with self.store.transaction() as tx:
            for partition in partitions:
                cursor = self.store.load(tx, self.group, self.topic, partition)
                if cursor is None and topic is not None and self.start == "last":
                    cursor = topic.partitions[partition].head_cursor or "_first"
                    self.store.save(tx, self.group, self.topic, partition, None, cursor)
                cursors[partition] = cursor
        return cursors

    def _apply(self, partition: int, previous: str | None, page: pb.ReadPartitionResponse) -> str | None:
        if not page.events and page.cursor == (previous or "_first"):
            return previous
        with self.store.transaction() as tx:
            if page.events:
                self.handler(page, tx)
            self.store.save(tx, self.group, self.topic, partition, previous, page.cursor)
        return page.cursor

    def _read(
        self,
        reader: _Reader,
        until_caught_up: bool,
        pages: queue.Queue[tuple[int, pb.ReadPartitionResponse | BaseException | None]],
    ) -> None:
        """Reads one partition into ``pages``, reading again from the last
        cursor when the stream fails, ends while following, or falls silent."""
        failures = 0
        try:
            while True:
                channel = self.client._current_channel()
                stream = self.client.read_partition(
                    self.topic,
                    reader.partition,
                    reader.cursor,
                    max_events=self.max_events,
                    follow=not until_caught_up,
                    types=self.types,
                    heartbeat=self.heartbeat,
                    retry=NO_RETRY,  # retried here, without end by default, and logged
                )
                with self._lock:
                    reader.stream, reader.silent = stream, False
                if self._stopping.is_set():  # stop() may have missed the new stream
                    return
                error: EventHubError
                caught_up = False
                try:
                    for page in self._pages(reader, stream):
                        if failures:
                            log.info("%s: reading again", self._where(reader))
                            failures = 0
                        reader.cursor, caught_up = page.cursor, page.caught_up
                        pages.put((reader.partition, page))
                        if self._stopping.is_set():
                            return
                except Unavailable as e:
                    error = e
                else:
                    if reader.silent:
                        message = f"no page or heartbeat for {self._silence():g}s"
                        # The connection may be dead without gRPC knowing:
                        # read again over a new one.
                        if self.client._renew_channel(channel):
                            message += "; reading again over a new connection"
                        error = Unavailable(message)
                    elif until_caught_up and caught_up:
                        return
                    else:  # ended early: the hub is shutting down, say
                        error = Unavailable("the hub ended the stream")
                if self._stopping.is_set() or not self._backoff(failures, error, self._where(reader)):
                    return
                failures += 1
        except Exception as e:  # handed to run(), which raises it
            pages.put((reader.partition, e))
        finally:
            pages.put((reader.partition, None))

    def _pages(
        self, reader: _Reader, stream: Stream[Any, pb.ReadPartitionResponse]
    ) -> Iterator[pb.ReadPartitionResponse]:
        """The pages of ``stream``, with ``reader.waiting_since`` set while
        the thread waits for each."""
        while True:
            with self._lock:
                reader.waiting_since = time.monotonic()
            try:
                page = next(stream, None)
            finally:
                with self._lock:
                    reader.waiting_since = None
            if page is None:
                return
            yield page

    def _watch(self) -> None:
        """Cancels the stream of a reader that has waited for a page longer
        than the hub's heartbeats allow (the connection died without a word,
        say), so that the reader opens it again; until ``stop()``."""
        silence = self._silence()
        while not self._stopping.wait(silence / 4):
            now = time.monotonic()
            with self._lock:
                for reader in self._readers:
                    if reader.waiting_since is not None and now - reader.waiting_since > silence:
                        reader.silent = True
                        reader.waiting_since = None
                        if reader.stream is not None:
                            reader.stream.cancel()

    def _silence(self) -> float:
        """Seconds without a page after which a follow stream is taken for dead."""
        asked = round((self.heartbeat or 0) * 1000)
        heartbeat_ms = max(asked, _MIN_HEARTBEAT_MS) if asked else _DEFAULT_HEARTBEAT_MS
        return _SILENT_HEARTBEATS * heartbeat_ms / 1000

    def _backoff(self, failures: int, error: EventHubError, what: str) -> bool:
        """After failure number ``failures`` (0-based) in a row: raises
        ``error`` if the retry policy gives up, else logs it and waits; False
        if ``stop()`` was called meanwhile."""
        if not self.retry.allows_retry(failures):
            raise error
        delay = self.retry.backoff(failures)
        log.warning("%s: %s; trying again in %.2fs (failure %d)", what, error, delay, failures + 1)
        return not self._stopping.wait(delay)

    def _where(self, reader: _Reader | None = None) -> str:
        where = f"consumer {self.group!r}, topic {self.topic!r}"
        if reader is not None:
            where += f", partition {reader.partition} (cursor {reader.cursor!r})"
        return where
