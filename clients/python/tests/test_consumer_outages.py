"""The Consumer through hub restarts, crashes and silences, against real hub processes."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _support import wait_for
from conftest import start_hub, stop_hub
from test_consumer import append, projection, record, rows

import eventhub

TOPIC = "orders"
# The channel's own reconnect backoff (1 s, growing to 120 s by default)
# would make these tests wait longer than they need to.
FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 200),
]
# RETRY_FOREVER, quicker.
FAST_FOREVER = eventhub.RetryPolicy(max_attempts=None, initial_backoff=0.005, max_backoff=0.02)


class RestartableHub:
    """A hub of the test's own, which it may stop, kill, pause and start
    again on the same database and port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.hub = start_hub(directory)
        self.target = self.hub.target

    def stop(self) -> None:
        assert stop_hub(self.hub) == 0, f"the hub exited badly on SIGTERM; log:\n{self.hub.log_tail()}"

    def kill(self) -> None:
        self.hub.process.kill()
        self.hub.process.wait()

    def start(self) -> None:
        self.hub = start_hub(self.directory, listen=self.target)

    def signal(self, signum: int) -> None:
        os.kill(self.hub.process.pid, signum)

    def close(self) -> None:
        if self.hub.process.poll() is None:
            self.signal(signal.SIGCONT)
            self.kill()


class Running:
    """A consumer's run() on a thread of its own."""

    def __init__(self, consumer: eventhub.Consumer[sqlite3.Connection]) -> None:
        self.consumer = consumer
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.consumer.run()
        except BaseException as e:
            self.error = e

    def stop(self) -> None:
        if self.thread.is_alive():  # a stop() before run() would make the next run() return at once
            self.consumer.stop()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "the consumer did not stop"


@pytest.fixture
def own_hub(tmp_path: Path) -> Iterator[RestartableHub]:
    hub = RestartableHub(tmp_path)
    try:
        yield hub
    finally:
        hub.close()


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="eventhub.consumer")
    return caplog


def logged(log: pytest.LogCaptureFixture, text: str) -> int:
    """How many records of the consumer's logger contain ``text``."""
    return sum(text in r.getMessage() for r in list(log.records) if r.name == "eventhub.consumer")


def counter(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, timeout=10)


def count(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT count(*) FROM seen").fetchone()[0])


def assert_exactly_once(db: sqlite3.Connection, events: int) -> None:
    got = rows(db)
    assert len(got) == events
    assert len({(p, s) for p, s, _, _ in got}) == events
    assert sorted(key for _, _, key, _ in got) == sorted(f"k{i}" for i in range(events))


def test_consumer_survives_hub_restart(own_hub: RestartableHub, tmp_path: Path, log: pytest.LogCaptureFixture) -> None:
    """A hub stopped with SIGTERM ends its follow streams with OK; the consumer (with its
    default retry policy) follows again once the hub is back on the same database and port,
    and applies what comes next exactly once."""
    with eventhub.Client(own_hub.target) as client:
        client.create_topic(TOPIC, 3)
        db = projection(tmp_path / "p.db")
        running = Running(eventhub.Consumer(client, TOPIC, "test", eventhub.SqliteCursorStore(db), record))
        try:
            append(client, TOPIC, 0, 30)
            seen = counter(tmp_path / "p.db")
            wait_for(lambda: count(seen) == 30, what="30 applied events")
            own_hub.stop()
            wait_for(lambda: logged(log, "the hub ended the stream") >= 3, what="3 ended streams logged")
            assert running.thread.is_alive(), f"run() returned when the hub stopped ({running.error!r})"
            own_hub.start()
            client.get_topic(TOPIC)  # appends without event ids are not retried: wait until the hub is back
            append(client, TOPIC, 30, 30)
            wait_for(lambda: count(seen) == 60, what="60 applied events")
        finally:
            running.stop()
    assert running.error is None
    assert_exactly_once(db, 60)


def test_consumer_retries_without_end(own_hub: RestartableHub, tmp_path: Path, log: pytest.LogCaptureFixture) -> None:
    """A consumer that retries forever (the default) outlasts the client's bounded policy: started
    while the hub is down it waits for it, and when the hub is killed under it, it reads again once
    the hub is back, logging every failure and applying every event once."""
    bounded = eventhub.RetryPolicy().max_attempts
    assert bounded is not None
    with eventhub.Client(own_hub.target, options=FAST_RECONNECT) as client:
        client.create_topic(TOPIC, 2)
        append(client, TOPIC, 0, 10)
        own_hub.kill()
        db = projection(tmp_path / "p.db")
        consumer = eventhub.Consumer(client, TOPIC, "test", eventhub.SqliteCursorStore(db), record)
        assert consumer.retry is eventhub.RETRY_FOREVER and eventhub.RETRY_FOREVER.max_attempts is None
        consumer.retry = FAST_FOREVER
        running = Running(consumer)
        try:
            wait_for(lambda: logged(log, "GetTopic") > 2 * bounded, what="failed GetTopics logged")
            own_hub.start()
            seen = counter(tmp_path / "p.db")
            wait_for(lambda: count(seen) == 10, what="10 applied events")
            failed_reads = logged(log, ", partition ")
            own_hub.kill()
            wait_for(lambda: logged(log, ", partition ") > failed_reads + 2 * bounded, what="failed reads logged")
            assert running.thread.is_alive(), f"run() returned when the hub was killed ({running.error!r})"
            own_hub.start()
            client.get_topic(TOPIC)
            append(client, TOPIC, 10, 10)
            wait_for(lambda: count(seen) == 20, what="20 applied events")
        finally:
            running.stop()
    assert running.error is None
    assert_exactly_once(db, 20)
    assert logged(log, "reading again") >= 1


def test_bounded_retry_gives_up(own_hub: RestartableHub, tmp_path: Path, log: pytest.LogCaptureFixture) -> None:
    """With a bounded policy, run() raises Unavailable after that many failures in a row,
    while following and at start."""
    retry = eventhub.RetryPolicy(max_attempts=3, initial_backoff=0.005, max_backoff=0.02)
    with eventhub.Client(own_hub.target, options=FAST_RECONNECT) as client:
        client.create_topic(TOPIC, 2)
        db = projection(tmp_path / "p.db")
        consumer = eventhub.Consumer(client, TOPIC, "test", eventhub.SqliteCursorStore(db), record, retry=retry)
        running = Running(consumer)
        try:
            append(client, TOPIC, 0, 5)
            seen = counter(tmp_path / "p.db")
            wait_for(lambda: count(seen) == 5, what="5 applied events")
            own_hub.kill()
            running.thread.join(timeout=30)
            assert not running.thread.is_alive(), "run() did not give up"
        finally:
            running.stop()
        assert isinstance(running.error, eventhub.Unavailable)
        assert logged(log, "(failure 2)") >= 1 and logged(log, "(failure 3)") == 0
        with pytest.raises(eventhub.Unavailable):
            consumer.run()
        assert logged(log, "GetTopic") == 2


def test_stop_interrupts_the_backoff(own_hub: RestartableHub, tmp_path: Path, log: pytest.LogCaptureFixture) -> None:
    """stop() returns run() at once, even while the consumer waits (up to a minute) to read again."""
    patient = eventhub.RetryPolicy(max_attempts=None, initial_backoff=60, max_backoff=60)
    with eventhub.Client(own_hub.target) as client:
        client.create_topic(TOPIC, 1)
        db = projection(tmp_path / "p.db")
        running = Running(
            eventhub.Consumer(client, TOPIC, "test", eventhub.SqliteCursorStore(db), record, retry=patient)
        )
        try:
            own_hub.kill()
            wait_for(lambda: logged(log, "trying again in") >= 1, what="a failure logged")
        finally:
            started = time.monotonic()
            running.stop()
        assert time.monotonic() - started < 5
    assert running.error is None


def test_silent_follow_stream_is_read_again(
    own_hub: RestartableHub, tmp_path: Path, log: pytest.LogCaptureFixture
) -> None:
    """A follow stream that brings nothing, not even a heartbeat, for three heartbeats (the hub is
    SIGSTOPped, so its connection stays open but says nothing) is cancelled and read again from the
    last cursor; once the hub goes on, what comes next is applied exactly once."""
    with eventhub.Client(own_hub.target) as client:
        client.create_topic(TOPIC, 2)
        db = projection(tmp_path / "p.db")
        consumer = eventhub.Consumer(client, TOPIC, "test", eventhub.SqliteCursorStore(db), record, heartbeat=0.1)
        running = Running(consumer)
        try:
            append(client, TOPIC, 0, 10)
            seen = counter(tmp_path / "p.db")
            wait_for(lambda: count(seen) == 10, what="10 applied events")
            own_hub.signal(signal.SIGSTOP)
            try:
                paused = time.monotonic()
                wait_for(lambda: logged(log, "no page or heartbeat for 0.3s") >= 2, timeout=10, what="silences logged")
                assert time.monotonic() - paused < 10
            finally:
                own_hub.signal(signal.SIGCONT)
            append(client, TOPIC, 10, 10)
            wait_for(lambda: count(seen) == 20, what="20 applied events")
        finally:
            running.stop()
    assert running.error is None
    assert_exactly_once(db, 20)
    assert logged(log, "reading again") >= 1  # a page came on a stream opened after the silence


class Blackhole:
    """A TCP proxy to the hub. ``cut()`` makes the connections open at that moment stop passing
    bytes either way while staying open, as when a peer vanishes or a NAT entry is dropped:
    nothing is closed or reset. Connections accepted later are passed through."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.target = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted = 0
        self._lock = threading.Lock()
        self._cuts: list[threading.Event] = []
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
                upstream = socket.create_connection(self.upstream)
            except OSError:
                return
            cut = threading.Event()
            with self._lock:
                self.accepted += 1
                self._cuts.append(cut)
                self._sockets += [downstream, upstream]
            for src, dst in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(src, dst, cut), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, cut: threading.Event) -> None:
        while True:
            try:
                data = src.recv(65536)
                if not data:
                    if not cut.is_set():
                        dst.shutdown(socket.SHUT_WR)
                    return
                if not cut.is_set():
                    dst.sendall(data)
            except OSError:
                return

    def cut(self) -> None:
        with self._lock:
            for cut in self._cuts:
                cut.set()

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for s in self._sockets:
                s.close()


def test_consumer_gets_past_a_vanished_connection(
    own_hub: RestartableHub, tmp_path: Path, log: pytest.LogCaptureFixture
) -> None:
    """The connection to the hub goes silent without being closed (a proxy stops passing bytes,
    as when a NAT entry is dropped). The consumer's streams fall silent, and it reads again over
    a new connection of its client's own; what comes next is applied exactly once."""
    proxy = Blackhole(own_hub.target)
    try:
        with eventhub.Client(proxy.target) as client, eventhub.Client(own_hub.target) as direct:
            direct.create_topic(TOPIC, 2)
            db = projection(tmp_path / "p.db")
            consumer = eventhub.Consumer(
                client, TOPIC, "test", eventhub.SqliteCursorStore(db), record, heartbeat=0.2, retry=FAST_FOREVER
            )
            running = Running(consumer)
            try:
                append(direct, TOPIC, 0, 10)
                seen = counter(tmp_path / "p.db")
                wait_for(lambda: count(seen) == 10, what="10 applied events")
                assert proxy.accepted == 1
                proxy.cut()
                append(direct, TOPIC, 10, 10)
                wait_for(lambda: count(seen) == 20, timeout=60, what="20 applied events after the cut")
                assert proxy.accepted == 2, "one new connection, after the cut"
            finally:
                running.stop()
        assert running.error is None
        assert_exactly_once(db, 20)
        assert logged(log, "reading again over a new connection") >= 1
    finally:
        proxy.close()
