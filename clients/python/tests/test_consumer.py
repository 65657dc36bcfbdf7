"""The Consumer, in process, against a real hub."""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

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


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_handler(directory: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Runs the README's consumer example up to its handler, in ``directory``,
    and returns its globals (``db``, ``apply``)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    [example] = [b for b in blocks if "def apply(" in b]
    monkeypatch.chdir(directory)
    namespace: dict[str, Any] = {}
    exec(compile(example, str(README), "exec"), namespace)
    return namespace


def test_readme_consumer_example(client: eventhub.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's handler copes with the data the READMEs tell you to write (JSON payloads,
    empty payloads, invalidation markers) and, undoing invalidated transactions when their
    markers arrive, ends in the same state whether it read before or after the invalidation,
    with a types filter or not."""
    topic = unique_topic("orders")
    client.create_topic(topic, 4)
    client.append(
        topic,
        [
            AppendEvent(
                key="order-1",
                type="OrderPlaced",
                content_type="application/json",
                payload=b'{"total": 42}',
                event_id="place-order-1",
            ),
            AppendEvent(
                key="order-1", type="OrderPaid", expected=eventhub.EXPECTED_VERSION_EXACT, expected_key_version=1
            ),
        ],
    )
    wrong = client.append(
        topic,
        [
            AppendEvent(
                key=f"order-{i}", type="OrderPlaced", content_type="application/json", payload=b'{"total": 1000}'
            )
            for i in range(2, 6)
        ],
    )
    assert len({r.partition for r in wrong.results}) > 1

    def totals(namespace: dict[str, Any]) -> dict[str, int]:
        query = "SELECT key, sum(total) FROM order_totals GROUP BY key"
        return dict(namespace["db"].execute(query).fetchall())

    def run(namespace: dict[str, Any], **kw: Any) -> None:
        store = eventhub.SqliteCursorStore(namespace["db"])
        eventhub.Consumer(client, topic, "totals", store, namespace["apply"], **kw).run(until_caught_up=True)

    (tmp_path / "early").mkdir()
    early = readme_handler(tmp_path / "early", monkeypatch)
    run(early)
    assert totals(early) == {"order-1": 42, **{f"order-{i}": 1000 for i in range(2, 6)}}

    client.invalidate(topic, wrong.transaction_id, "prices were wrong")
    run(early)
    assert totals(early) == {"order-1": 42}

    (tmp_path / "late").mkdir()
    late = readme_handler(tmp_path / "late", monkeypatch)
    run(late, types=["OrderPlaced"])
    assert totals(late) == {"order-1": 42}


def test_types_filter_includes_invalidation_markers(client: eventhub.Client, tmp_path: Path) -> None:
    """A consumer's types filter lets invalidation markers through, so the handler can undo."""
    topic = unique_topic()
    client.create_topic(topic, 1)
    append(client, topic, 0, 2, type="A")
    bad = client.append(topic, [AppendEvent(key="k9", type="B", payload=b"x")])
    client.invalidate(topic, bad.transaction_id, "wrong")
    db = projection(tmp_path / "p.db")
    filtered = consumer(client, topic, db, types=["A"])
    assert filtered.types == ("A", eventhub.INVALIDATION_EVENT_TYPE)
    filtered.run(until_caught_up=True)
    assert [type for _, _, _, type in rows(db)] == ["A", "A", eventhub.INVALIDATION_EVENT_TYPE]


def test_empty_partitions_list_is_refused(client: eventhub.Client, tmp_path: Path) -> None:
    """partitions=None reads every partition; an empty list is a mistake, not "none"."""
    topic = unique_topic()
    client.create_topic(topic, 2)
    append(client, topic, 0, 10)
    db = projection(tmp_path / "p.db")
    with pytest.raises(ValueError, match="partitions"):
        consumer(client, topic, db, partitions=[])
    consumer(client, topic, db, partitions=None).run(until_caught_up=True)
    assert len(rows(db)) == 10
