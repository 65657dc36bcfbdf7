"""The example consumer, SIGKILLed mid-run and restarted, still applies every event exactly once."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from functools import partial
from pathlib import Path

from _support import unique_topic, wait_for
from conftest import Hub

import eventhub
from eventhub import AppendEvent

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "project_to_sqlite.py"
PARTITIONS = 4
UPFRONT = 3000
PER_ROUND = 500
ROUNDS = 4
LAST = 300
TOTAL = UPFRONT + ROUNDS * PER_ROUND + LAST


def count_rows(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=10) as conn:
            return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def produce(client: eventhub.Client, topic: str, start: int, count: int) -> None:
    for first in range(start, start + count, 100):
        client.append(
            topic,
            [
                AppendEvent(key=f"k{i % 37}", type="Counted", payload=str(i).encode())
                for i in range(first, min(first + 100, start + count))
            ],
        )


def test_sigkilled_consumer_applies_every_event_exactly_once(client: eventhub.Client, hub: Hub, tmp_path: Path) -> None:
    topic = unique_topic()
    client.create_topic(topic, PARTITIONS)
    db = tmp_path / "projection.db"
    command = [
        sys.executable,
        str(EXAMPLE),
        "--target",
        hub.target,
        "--topic",
        topic,
        "--db",
        str(db),
        "--max-events",
        "20",
    ]

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL)

    def alive_with_rows(process: subprocess.Popen[bytes], rows: int) -> bool:
        assert process.poll() is None, f"the consumer exited with {process.returncode}"
        return count_rows(db) >= rows

    produce(client, topic, 0, UPFRONT)
    produced = UPFRONT
    for _ in range(ROUNDS):
        produce(client, topic, produced, PER_ROUND)
        produced += PER_ROUND
        # The backlog stays thousands of events ahead, so each kill lands mid-run.
        threshold = count_rows(db) + 400
        process = start()
        try:
            wait_for(partial(alive_with_rows, process, threshold), timeout=60, what=f"{threshold} rows")
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        assert count_rows(db) < produced, "the consumer finished before it was killed"

    # A last run follows the topic while the rest is appended, and stops cleanly on SIGTERM...
    process = start()
    try:
        produce(client, topic, produced, LAST)
        wait_for(lambda: alive_with_rows(process, TOTAL), timeout=60, what=f"all {TOTAL} rows")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # ...and one more run finds nothing left to do.
    subprocess.run([*command, "--until-caught-up"], check=True, timeout=60, stdin=subprocess.DEVNULL)

    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT partition, sequence, key, payload FROM events").fetchall()
    assert len(rows) == TOTAL
    assert sorted(int(payload) for _, _, _, payload in rows) == list(range(TOTAL))
    for partition in range(PARTITIONS):
        sequences = sorted(s for p, s, _, _ in rows if p == partition)
        assert sequences == list(range(1, len(sequences) + 1))
    assert all(p == eventhub.partition_for(key, PARTITIONS) for p, _, key, _ in rows)
