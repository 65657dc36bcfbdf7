-- The cursor table of eventhub consumers, for SQLite.
CREATE TABLE IF NOT EXISTS eventhub_cursors (
    consumer    TEXT    NOT NULL,
    topic       TEXT    NOT NULL,
    "partition" INTEGER NOT NULL,
    "cursor"    TEXT    NOT NULL,
    PRIMARY KEY (consumer, topic, "partition")
);
