"""The Consumer, in process, against a real hub."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from _support import unique_topic, wait_for

import eventhub
from eventhub import AppendEvent


def projection(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("CREATE TABLE IF NOT EXISTS seen (partition INTEGER, sequence INTEGER, key TEXT, type TEXT)")
    return db


def record(page: eventhub.ReadPartitionResponse, tx: sqlite3.Connection) -> None:
    tx.executemany(
        "INSERT INTO seen VALUES (?, ?, ?, ?)", [(e.partition, e.sequence, e.key, e.type) for e in page.events]
    )


def rows(db: sqlite3.Connection) -> list[tuple[int, int, str, str]]:
    return db.execute("SELECT partition, sequence, key, type FROM seen ORDER BY partition, sequence").fetchall()


def append(client: eventhub.Client, topic: str, start: int, count: int, type: str = "T") -> None:
    client.append(topic, [AppendEvent(key=f"k{i}", type=type, payload=b"x") for i in range(start, start + count)])


def consumer(
    client: eventhub.Client, topic: str, db: sqlite3.Connection, **kw: object
) -> eventhub.Consumer[sqlite3.Connection]:
    return eventhub.Consumer(client, topic, "test-group", eventhub.SqliteCursorStore(db), record, max_events=7, **kw)  # type: ignore[arg-type]


def test_applies_every_event_once_across_runs(client: eventhub.Client, tmp_path: Path) -> None:
    """Each run continues from the stored cursors: nothing is applied twice or skipped."""
    topic = unique_topic()
    client.create_topic(topic, 3)
    append(client, topic, 0, 100)
    db = projection(tmp_path / "p.db")
    consumer(client, topic, db).run(until_caught_up=True)
    assert len(rows(db)) == 100
    consumer(client, topic, db).run(until_caught_up=True)
    assert len(rows(db)) == 100
    append(client, topic, 100, 20)
    consumer(client, topic, db).run(until_caught_up=True)
    got = rows(db)
    assert sorted(key for _, _, key, _ in got) == sorted(f"k{i}" for i in range(120))
    assert len(set((p, s) for p, s, _, _ in got)) == 120
    heads = {p.partition: p.head_cursor for p in client.get_topic(topic).partitions}
    stored = dict(db.execute("SELECT partition, cursor FROM eventhub_cursors WHERE consumer = 'test-group'").fetchall())
    assert stored == heads


def test_handler_failure_rolls_back_the_page(client: eventhub.Client, tmp_path: Path) -> None:
    """When the handler raises, its writes and the cursor are rolled back and run() raises."""
    topic = unique_topic()
    client.create_topic(topic, 1)
    append(client, topic, 0, 5)
    append(client, topic, 5, 1, type="Poison")
    db = projection(tmp_path / "p.db")

    def fragile(page: eventhub.ReadPartitionResponse, tx: sqlite3.Connection) -> None:
        record(page, tx)
        if any(e.type == "Poison" for e in page.events):
            raise ValueError("cannot handle poison")

    broken = eventhub.Consumer(client, topic, "g", eventhub.SqliteCursorStore(db), fragile, max_events=3)
    with pytest.raises(ValueError, match="poison"):
        broken.run(until_caught_up=True)
    assert len(rows(db)) == 3  # the first page only
    assert not db.execute("SELECT 1 FROM seen WHERE type = 'Poison'").fetchall()
    eventhub.Consumer(client, topic, "g", eventhub.SqliteCursorStore(db), record).run(until_caught_up=True)
    assert [s for _, s, _, _ in rows(db)] == [1, 2, 3, 4, 5, 6]


def test_start_last_skips_history_but_not_what_follows(client: eventhub.Client, tmp_path: Path) -> None:
    """start="last" begins at the head as of the first run, and remembers it."""
    topic = unique_topic()
    client.create_topic(topic, 2)
    append(client, topic, 0, 10)
    db = projection(tmp_path / "p.db")
    consumer(client, topic, db, start="last").run(until_caught_up=True)
    assert rows(db) == []
    append(client, topic, 10, 6)
    consumer(client, topic, db, start="last").run(until_caught_up=True)
    assert sorted(key for _, _, key, _ in rows(db)) == sorted(f"k{i}" for i in range(10, 16))


def test_subset_of_partitions_and_types(client: eventhub.Client, tmp_path: Path) -> None:
    """A consumer can read chosen partitions and event types only."""
    topic = unique_topic()
    client.create_topic(topic, 4)
    append(client, topic, 0, 40, type="A")
    append(client, topic, 40, 40, type="B")
    db = projection(tmp_path / "p.db")
    consumer(client, topic, db, partitions=[1, 3], types=["B"]).run(until_caught_up=True)
    expected = sorted(f"k{i}" for i in range(40, 80) if eventhub.partition_for(f"k{i}", 4) in (1, 3))
    assert sorted(key for _, _, key, _ in rows(db)) == expected


def test_follow_and_stop(client: eventhub.Client, tmp_path: Path) -> None:
    """A following consumer applies events as they are appended and stops cleanly on stop()."""
    topic = unique_topic()
    client.create_topic(topic, 2)
    db = projection(tmp_path / "p.db")
    follower = consumer(client, topic, db, heartbeat=0.05)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            follower.run()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        for batch in range(5):
            append(client, topic, batch * 10, 10)
        reader = sqlite3.connect(tmp_path / "p.db")
        wait_for(lambda: reader.execute("SELECT count(*) FROM seen").fetchone()[0] == 50, what="50 rows")
    finally:
        follower.stop()
        thread.join(timeout=15)
    assert not thread.is_alive(), "the consumer did not stop"
    assert errors == []
    assert len(rows(db)) == 50


def test_unknown_topic(client: eventhub.Client, tmp_path: Path) -> None:
    db = projection(tmp_path / "p.db")
    with pytest.raises(eventhub.NotFound):
        consumer(client, unique_topic("missing"), db).run(until_caught_up=True)
