"""Cursor stores, without a hub."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

import eventhub


def test_sqlite_store_round_trip_and_conflict(tmp_path: Any) -> None:
    db = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    store = eventhub.SqliteCursorStore(db)
    store.create_table()
    with store.transaction() as tx:
        assert store.load(tx, "g", "t", 0) is None
        store.save(tx, "g", "t", 0, None, "c1")
    with store.transaction() as tx:
        assert store.load(tx, "g", "t", 0) == "c1"
        store.save(tx, "g", "t", 0, "c1", "c2")
    with pytest.raises(eventhub.CursorConflict):
        with store.transaction() as tx:
            tx.execute("CREATE TABLE effects (x)")
            store.save(tx, "g", "t", 0, "c1", "c3")
    # The conflicting transaction was rolled back as a whole.
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'effects'").fetchall() == []
    assert db.execute("SELECT consumer, topic, partition, cursor FROM eventhub_cursors").fetchall() == [
        ("g", "t", 0, "c2")
    ]
    assert not db.in_transaction


def test_sqlite_store_works_with_the_default_isolation_level(tmp_path: Any) -> None:
    db = sqlite3.connect(tmp_path / "c.db")
    store = eventhub.SqliteCursorStore(db)
    store.create_table()
    with store.transaction() as tx:
        store.save(tx, "g", "t", 1, None, "c1")
    with pytest.raises(RuntimeError):
        with store.transaction() as tx:
            raise RuntimeError("handler failed")
    assert sqlite3.connect(tmp_path / "c.db").execute("SELECT cursor FROM eventhub_cursors").fetchall() == [("c1",)]


@pytest.mark.parametrize("paramstyle", ["qmark", "named"])
def test_dbapi_store_paramstyles_on_sqlite(tmp_path: Any, paramstyle: str) -> None:
    db = sqlite3.connect(tmp_path / "c.db")
    store = eventhub.DbApiCursorStore(db, paramstyle=paramstyle)
    store.create_table()
    with store.transaction() as tx:
        store.save(tx, "g", "t", 0, None, "c1")
    with store.transaction() as tx:
        store.save(tx, "g", "t", 0, "c1", "c2")
    with store.transaction() as tx:
        assert store.load(tx, "g", "t", 0) == "c2"


class Recording:
    """A DB-API connection that records what it is asked to run."""

    paramstyle = "pyformat"

    def __init__(self) -> None:
        self.executed: list[tuple[str, Any]] = []
        self.commits = 0
        self.rowcount = 1

    def cursor(self) -> Recording:
        return self

    def execute(self, sql: str, params: Any = None) -> None:
        self.executed.append((sql, params))

    def fetchone(self) -> Any:
        return ("stored",)

    def close(self) -> None:
        pass

    def commit(self) -> None:
        self.commits += 1

    def rollback(self) -> None:
        pass


def test_dbapi_store_uses_the_drivers_paramstyle() -> None:
    conn = Recording()
    store = eventhub.DbApiCursorStore(conn, paramstyle="pyformat")
    with store.transaction() as tx:
        assert store.load(tx, "g", "t", 2) == "stored"
        store.save(tx, "g", "t", 2, "stored", "next")
    (select, select_params), (update, update_params) = conn.executed
    assert 'consumer = %(consumer)s AND topic = %(topic)s AND "partition" = %(partition)s' in select
    assert select_params == {"consumer": "g", "topic": "t", "partition": 2}
    assert update.startswith('UPDATE eventhub_cursors SET "cursor" = %(cursor)s')
    assert update_params["previous"] == "stored" and update_params["cursor"] == "next"
    assert conn.commits == 1


def test_dbapi_store_numeric_and_format_paramstyles() -> None:
    for paramstyle, mark, params in [("numeric", ":3", ["g", "t", 2]), ("format", "%s", ["g", "t", 2])]:
        conn = Recording()
        store = eventhub.DbApiCursorStore(conn, paramstyle=paramstyle)
        with store.transaction() as tx:
            store.load(tx, "g", "t", 2)
        sql, got = conn.executed[0]
        assert sql.endswith(f'"partition" = {mark}') and got == params


def test_dbapi_store_refuses_autocommit() -> None:
    conn = Recording()
    conn.autocommit = True  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="autocommit"):
        with eventhub.DbApiCursorStore(conn, paramstyle="format").transaction():
            pass


def test_paramstyle_from_the_driver_module() -> None:
    assert eventhub.DbApiCursorStore(sqlite3.connect(":memory:")).paramstyle == "qmark"
