"""Project a topic into a SQLite table, exactly once.

Every event of TOPIC becomes one row of the table ``events`` in DB. The
consumer stores its cursor in the same SQLite transaction as the rows, so
killing this program at any moment and starting it again leaves every event
in the table exactly once: no row is lost and none is written twice.

    python clients/python/examples/project_to_sqlite.py --target 127.0.0.1:50051 --topic orders --db orders.db

(from the repository root, with the package installed). TOPIC must exist.
It follows the topic until SIGINT/SIGTERM, through restarts of the hub, or
with ``--until-caught-up`` stops once it has read every partition up to its
head.
"""

from __future__ import annotations

import argparse
import signal
import sqlite3

import eventhub

SCHEMA = """CREATE TABLE IF NOT EXISTS events (
    partition INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    key TEXT NOT NULL,
    type TEXT NOT NULL,
    payload BLOB NOT NULL
)"""
# No unique constraint on purpose: exactly-once comes from the cursor being
# committed with the rows, not from deduplicating them here.


def project(page: eventhub.ReadPartitionResponse, tx: sqlite3.Connection) -> None:
    tx.executemany(
        "INSERT INTO events (partition, sequence, key, type, payload) VALUES (?, ?, ?, ?, ?)",
        [(e.partition, e.sequence, e.key, e.type, e.payload) for e in page.events],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="127.0.0.1:50051", help="the hub, host:port")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--db", required=True, help="the SQLite file to project into")
    parser.add_argument("--group", default="project_to_sqlite", help="the consumer group name")
    parser.add_argument("--start", choices=["first", "last"], default="first")
    parser.add_argument("--max-events", type=int, default=100, help="most events per page (and transaction)")
    parser.add_argument("--until-caught-up", action="store_true")
    args = parser.parse_args()

    db = sqlite3.connect(args.db, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA busy_timeout=5000")
    db.execute(SCHEMA)

    with eventhub.Client(args.target) as client:
        consumer = eventhub.Consumer(
            client,
            args.topic,
            args.group,
            eventhub.SqliteCursorStore(db),
            project,
            start=args.start,
            max_events=args.max_events,
        )
        signal.signal(signal.SIGTERM, lambda *_: consumer.stop())
        signal.signal(signal.SIGINT, lambda *_: consumer.stop())
        consumer.run(until_caught_up=args.until_caught_up)
    db.close()


if __name__ == "__main__":
    main()
