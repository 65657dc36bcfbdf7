"""Cursor stores: keep a consumer's cursors in the user's own database, in the
same transaction as the effects of the events.

The table is ``eventhub_cursors(consumer, topic, partition, cursor)`` with
``PRIMARY KEY (consumer, topic, partition)``, the same as the Go client's.
"""

from __future__ import annotations

import importlib
import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from ._errors import CursorConflict

Tx = TypeVar("Tx", contravariant=True)

TABLE = "eventhub_cursors"

_CREATE = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    consumer TEXT NOT NULL,
    topic TEXT NOT NULL,
    "partition" INTEGER NOT NULL,
    "cursor" TEXT NOT NULL,
    PRIMARY KEY (consumer, topic, "partition")
)"""
_WHERE = 'consumer = {consumer} AND topic = {topic} AND "partition" = {partition}'
_SELECT = f'SELECT "cursor" FROM {TABLE} WHERE {_WHERE}'
_INSERT = (
    f'INSERT INTO {TABLE} (consumer, topic, "partition", "cursor")'
    " VALUES ({consumer}, {topic}, {partition}, {cursor})"
)
_UPDATE = f'UPDATE {TABLE} SET "cursor" = {{cursor}} WHERE {_WHERE} AND "cursor" = {{previous}}'
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class CursorStore(Protocol[Tx]):
    """Where a :class:`~eventhub.Consumer` keeps its cursors.

    ``transaction()`` opens a transaction on the user's connection and yields
    the object handed to the handler as ``tx``; it commits when the block
    ends and rolls back when it raises.
    """

    def create_table(self) -> None: ...

    def transaction(self) -> Any: ...

    def load(self, tx: Tx, consumer: str, topic: str, partition: int) -> str | None: ...

    def save(self, tx: Tx, consumer: str, topic: str, partition: int, previous: str | None, cursor: str) -> None: ...


class DbApiCursorStore:
    """A cursor store on any DB-API 2.0 connection (PostgreSQL via psycopg,
    for instance). The connection must not be in autocommit mode: the driver's
    implicit transaction is committed with ``connection.commit()``.

    ``paramstyle`` defaults to the driver module's own (``psycopg.paramstyle``
    is ``pyformat``, ``sqlite3.paramstyle`` ``qmark``).

    Saving a cursor checks that the stored cursor is still the one the
    consumer started from; if another consumer of the same group moved it,
    :class:`~eventhub.CursorConflict` is raised and the transaction rolled
    back, so no event is applied twice even then.
    """

    def __init__(self, connection: Any, *, paramstyle: str | None = None) -> None:
        self.connection = connection
        self.paramstyle = paramstyle or _paramstyle_of(connection)
        if self.paramstyle not in ("qmark", "numeric", "named", "format", "pyformat"):
            raise ValueError(f"unknown DB-API paramstyle {self.paramstyle!r}")

    def _execute(self, cursor: Any, template: str, values: Mapping[str, Any]) -> None:
        names = _PLACEHOLDER.findall(template)
        style = self.paramstyle
        marks = iter(
            {
                "qmark": ["?"] * len(names),
                "numeric": [f":{i}" for i in range(1, len(names) + 1)],
                "named": [f":{n}" for n in names],
                "format": ["%s"] * len(names),
                "pyformat": [f"%({n})s" for n in names],
            }[style]
        )
        sql = _PLACEHOLDER.sub(lambda _: next(marks), template)
        params: Sequence[Any] | Mapping[str, Any] = (
            {n: values[n] for n in names} if style in ("named", "pyformat") else [values[n] for n in names]
        )
        cursor.execute(sql, params)

    def _begin(self) -> None:
        if getattr(self.connection, "autocommit", False) is True:
            raise ValueError("the connection is in autocommit mode; a consumer needs transactions")

    def _commit(self) -> None:
        self.connection.commit()

    def _rollback(self) -> None:
        self.connection.rollback()

    def create_table(self) -> None:
        """Creates the cursor table if it does not exist."""
        with self.transaction() as tx:
            cursor = tx.cursor()
            try:
                cursor.execute(_CREATE)
            finally:
                cursor.close()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """Yields the connection inside a transaction."""
        self._begin()
        try:
            yield self.connection
        except BaseException:
            self._rollback()
            raise
        self._commit()

    def load(self, tx: Any, consumer: str, topic: str, partition: int) -> str | None:
        cursor = tx.cursor()
        try:
            self._execute(cursor, _SELECT, {"consumer": consumer, "topic": topic, "partition": partition})
            row = cursor.fetchone()
        finally:
            cursor.close()
        return None if row is None else str(row[0])

    def save(self, tx: Any, consumer: str, topic: str, partition: int, previous: str | None, cursor: str) -> None:
        values = {"consumer": consumer, "topic": topic, "partition": partition, "cursor": cursor}
        db_cursor = tx.cursor()
        try:
            if previous is None:
                self._execute(db_cursor, _INSERT, values)
                return
            self._execute(db_cursor, _UPDATE, {**values, "previous": previous})
            if db_cursor.rowcount != 1:
                raise CursorConflict(
                    f"the cursor of consumer {consumer!r}, topic {topic!r}, partition {partition} "
                    "is no longer the one this consumer read from: another consumer of the "
                    "same group processed the partition"
                )
        finally:
            db_cursor.close()


class SqliteCursorStore(DbApiCursorStore):
    """A cursor store on a :mod:`sqlite3` connection.

    Each transaction is opened with ``BEGIN IMMEDIATE`` (so it holds the
    write lock from the start) and ended with ``COMMIT``/``ROLLBACK``; open
    the connection with ``isolation_level=None`` or the default, and do not
    commit inside the handler.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        super().__init__(connection, paramstyle="qmark")

    def _begin(self) -> None:
        if self.connection.in_transaction:
            raise RuntimeError("the sqlite3 connection has an open transaction; commit or roll it back first")
        self.connection.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self.connection.execute("COMMIT")

    def _rollback(self) -> None:
        if self.connection.in_transaction:
            self.connection.execute("ROLLBACK")


def _paramstyle_of(connection: Any) -> str:
    module = importlib.import_module(type(connection).__module__.split(".")[0])
    style = getattr(module, "paramstyle", None)
    if not isinstance(style, str):
        raise ValueError(f"cannot tell the paramstyle of {type(connection)!r}; pass paramstyle=")
    return style
