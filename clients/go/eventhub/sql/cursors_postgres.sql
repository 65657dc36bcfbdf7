-- The cursor table of eventhub consumers, for PostgreSQL.
CREATE TABLE IF NOT EXISTS eventhub_cursors (
    consumer    text    NOT NULL,
    topic       text    NOT NULL,
    "partition" integer NOT NULL,
    "cursor"    text    NOT NULL,
    PRIMARY KEY (consumer, topic, "partition")
);
