"""The Consumer on PostgreSQL through psycopg and DbApiCursorStore.

Runs only when EVENTHUB_TEST_POSTGRES_DSN names a database to use, e.g.
``postgresql://postgres@127.0.0.1:5432/postgres``.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from _support import unique_topic

import eventhub
from eventhub import AppendEvent

DSN = os.environ.get("EVENTHUB_TEST_POSTGRES_DSN", "")
pytestmark = pytest.mark.skipif(not DSN, reason="EVENTHUB_TEST_POSTGRES_DSN is not set")


def test_consumer_with_psycopg(client: eventhub.Client) -> None:
    """Effects and cursors commit together in PostgreSQL; a failing page is rolled back."""
    psycopg = pytest.importorskip("psycopg")
    topic = unique_topic()
    client.create_topic(topic, 3)
    client.append(topic, [AppendEvent(key=f"k{i}", type="T", payload=b"x") for i in range(60)])
    client.append(topic, [AppendEvent(key="k0", type="Poison", payload=b"x")])

    with psycopg.connect(DSN) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS py_seen (topic text, p integer, seq bigint, type text)")
        conn.commit()

        def apply(page: eventhub.ReadPartitionResponse, tx: Any) -> None:
            with tx.cursor() as cur:
                cur.executemany(
                    "INSERT INTO py_seen VALUES (%s, %s, %s, %s)",
                    [(topic, e.partition, e.sequence, e.type) for e in page.events],
                )
            if any(e.type == "Poison" for e in page.events) and fail:
                raise ValueError("poison")

        def run() -> None:
            store = eventhub.DbApiCursorStore(conn)
            assert store.paramstyle == "pyformat"
            eventhub.Consumer(client, topic, "pg", store, apply, max_events=5).run(until_caught_up=True)

        def count() -> int:
            row = conn.execute("SELECT count(*) FROM py_seen WHERE topic = %s", (topic,)).fetchone()
            conn.commit()
            return int(row[0])

        fail = True
        with pytest.raises(ValueError, match="poison"):
            run()
        assert count() < 61
        fail = False
        run()
        run()
        assert count() == 61
        duplicates = conn.execute(
            "SELECT p, seq FROM py_seen WHERE topic = %s GROUP BY p, seq HAVING count(*) > 1", (topic,)
        ).fetchall()
        assert duplicates == []
        stored = dict(
            conn.execute(
                'SELECT "partition", "cursor" FROM eventhub_cursors WHERE consumer = %s AND topic = %s', ("pg", topic)
            ).fetchall()
        )
        conn.commit()
    assert stored == {p.partition: p.head_cursor for p in client.get_topic(topic).partitions}
