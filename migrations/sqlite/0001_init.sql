-- eventhub schema (SQLite). Sequences, versions and transaction ids are
-- stored as INTEGER (i64); the API exposes them as unsigned.

CREATE TABLE topics (
    topic_id            INTEGER PRIMARY KEY,
    name                TEXT    NOT NULL UNIQUE,
    partition_count     INTEGER NOT NULL,
    created_at_ms       INTEGER NOT NULL,
    last_transaction_id INTEGER NOT NULL DEFAULT 0
);

-- One row per partition: its head (last sequence, 0 when empty).
CREATE TABLE partitions (
    topic_id      INTEGER NOT NULL,
    partition     INTEGER NOT NULL,
    head_sequence INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (topic_id, partition)
) WITHOUT ROWID;

-- The log. Invalidation markers have key NULL, key_version 0 and
-- `invalidates` naming the invalidated transaction; their payload is the reason.
CREATE TABLE events (
    topic_id        INTEGER NOT NULL,
    partition       INTEGER NOT NULL,
    sequence        INTEGER NOT NULL,
    transaction_id  INTEGER NOT NULL,
    key             TEXT,
    key_version     INTEGER NOT NULL,
    event_id        TEXT,
    event_type      TEXT    NOT NULL,
    content_type    TEXT    NOT NULL,
    headers         BLOB,
    payload         BLOB    NOT NULL,
    tombstone       INTEGER NOT NULL,
    committed_at_ms INTEGER NOT NULL,
    invalidates     INTEGER,
    PRIMARY KEY (topic_id, partition, sequence)
) WITHOUT ROWID;

-- Event-id idempotency, forever.
CREATE UNIQUE INDEX events_by_event_id ON events (topic_id, event_id) WHERE event_id IS NOT NULL;
-- ReadKey, key versions and Surface's per-key fallbacks.
CREATE UNIQUE INDEX events_by_key ON events (topic_id, key, key_version) WHERE key IS NOT NULL;
-- Invalidate (events of a transaction) and as-of cursors (last sequence of
-- a partition at or before a transaction).
CREATE INDEX events_by_transaction ON events (topic_id, partition, transaction_id);

-- Every key's current version and latest valid event (the surface), kept
-- current at append and invalidation time. `changed_transaction_id` is the
-- last transaction that changed the row; Surface as of an earlier
-- transaction looks such keys up in the log instead.
CREATE TABLE keys (
    topic_id               INTEGER NOT NULL,
    key                    TEXT    NOT NULL,
    version                INTEGER NOT NULL,
    live_partition         INTEGER,
    live_sequence          INTEGER,
    live_tombstone         INTEGER NOT NULL DEFAULT 0,
    changed_transaction_id INTEGER NOT NULL,
    PRIMARY KEY (topic_id, key)
) WITHOUT ROWID;

CREATE TABLE invalidations (
    topic_id              INTEGER NOT NULL,
    transaction_id        INTEGER NOT NULL,
    marker_transaction_id INTEGER NOT NULL,
    reason                TEXT    NOT NULL,
    PRIMARY KEY (topic_id, transaction_id)
) WITHOUT ROWID;
