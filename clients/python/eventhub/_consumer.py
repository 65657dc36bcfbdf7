"""Consumer: reads partitions and applies pages exactly once."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any, Generic, Literal, TypeVar

from ._client import Client, Stream
from ._cursor_store import CursorStore
from .v1 import eventhub_pb2 as pb

Tx = TypeVar("Tx")
Handler = Callable[[pb.ReadPartitionResponse, Tx], None]


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

    One thread per partition reads (with ``follow``); the thread that calls
    ``run()`` runs the handler and the transactions, so a single connection
    is enough. ``stop()`` may be called from any thread or a signal handler.
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
        self.start = start
        self.max_events = max_events
        self.types = tuple(types)
        self.heartbeat = heartbeat
        self.create_table = create_table
        self._stopping = threading.Event()
        self._streams: list[Stream[Any, pb.ReadPartitionResponse]] = []
        self._lock = threading.RLock()  # stop() may run in a signal handler

    def stop(self) -> None:
        """Asks ``run()`` to return after the page it is applying."""
        self._stopping.set()
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.cancel()

    def run(self, *, until_caught_up: bool = False) -> None:
        """Applies pages until ``stop()``, or, with ``until_caught_up``, until
        every partition has been read up to its head."""
        cursors = self._load_cursors()
        pages: queue.Queue[tuple[int, pb.ReadPartitionResponse | BaseException | None]] = queue.Queue(
            maxsize=4 * len(cursors)
        )
        readers = [
            threading.Thread(
                target=self._read,
                args=(partition, cursor or "_first", until_caught_up, pages),
                name=f"eventhub-{self.topic}-{partition}",
                daemon=True,
            )
            for partition, cursor in cursors.items()
        ]
        for reader in readers:
            reader.start()
        running = len(readers)
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
            for reader in readers:
                reader.join()
            self._stopping.clear()
            with self._lock:
                self._streams.clear()

    def _load_cursors(self) -> dict[int, str | None]:
        if self.create_table:
            self.store.create_table()
        topic: pb.Topic | None = None
        partitions = self.partitions
        if partitions is None or self.start == "last":
            topic = self.client.get_topic(self.topic)
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
        partition: int,
        cursor: str,
        until_caught_up: bool,
        pages: queue.Queue[tuple[int, pb.ReadPartitionResponse | BaseException | None]],
    ) -> None:
        try:
            stream = self.client.read_partition(
                self.topic,
                partition,
                cursor,
                max_events=self.max_events,
                follow=not until_caught_up,
                types=self.types,
                heartbeat=self.heartbeat,
            )
            with self._lock:
                self._streams.append(stream)
            if self._stopping.is_set():
                stream.cancel()
            for page in stream:
                pages.put((partition, page))
                if self._stopping.is_set():
                    break
        except Exception as e:  # handed to run(), which raises it
            pages.put((partition, e))
        finally:
            pages.put((partition, None))
