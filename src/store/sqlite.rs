//! The SQLite backend: one database file in WAL mode, read by a pool of
//! read-only connections and written by the writer task's one connection.
//! One hub process per file: the registry's heads are published by the
//! local writer only.

// The shared implementation, compiled here against SQLite's types (and
// again in the other backend's module, on purpose).
#[allow(clippy::duplicate_mod)]
#[path = "backend/reads.rs"]
mod reads;
#[allow(clippy::duplicate_mod)]
#[path = "backend/writer.rs"]
mod writer;

pub(crate) use reads::Reads;

use crate::config::{Config, SqliteSync};
use crate::error::Result;
use crate::store::{Registry, WriteRequest};
use sqlx::ConnectOptions;
use sqlx::QueryBuilder;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::mpsc;
use writer::{KeyState, PendingEvent};

type Db = sqlx::Sqlite;
type DbConn = sqlx::SqliteConnection;
type DbRow = SqliteRow;

/// Where SQLite's SQL differs from PostgreSQL's.
mod dialect {
    /// Reads the topic's last transaction. The writer task is the only
    /// writer of the file, so there is nothing to lock against.
    pub const LOCK_TOPIC: &str = "SELECT last_transaction_id FROM topics WHERE topic_id = $1";
}

/// Opens (creating if needed) the database file, runs migrations, loads the
/// registry and starts the writer task.
pub(crate) async fn open(
    config: &Config,
    rx: mpsc::Receiver<WriteRequest>,
    topics: Registry,
) -> Result<Reads> {
    let sync = match config.sqlite_synchronous {
        SqliteSync::Full => SqliteSynchronous::Full,
        SqliteSync::Normal => SqliteSynchronous::Normal,
    };
    let options = SqliteConnectOptions::from_str(&config.database_url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(sync)
        .busy_timeout(Duration::from_secs(10))
        .pragma("cache_size", "-65536")
        .pragma("temp_store", "memory")
        .log_statements(tracing::log::LevelFilter::Trace);
    let write = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .connect_with(options.clone())
        .await?;
    sqlx::migrate!("migrations/sqlite").run(&write).await?;
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .min_connections(1)
        .connect_with(options.read_only(true))
        .await?;
    let reads = Reads { pool };
    reads.adopt_all(&topics).await?;
    tokio::spawn(writer::run(write, rx, topics, config.clone()));
    Ok(reads)
}

/// `<select> WHERE topic_id = <id> AND <column> IN (<values>)`.
fn select_in<'a>(select: &str, id: i64, column: &str, values: &[&'a str]) -> QueryBuilder<'a, Db> {
    let mut qb = QueryBuilder::<Db>::new(select);
    qb.push(" WHERE topic_id = ")
        .push_bind(id)
        .push(format!(" AND {column} IN ("));
    let mut sep = qb.separated(", ");
    for v in values {
        sep.push_bind(*v);
    }
    qb.push(")");
    qb
}

/// Rows per multi-row statement (SQLite allows 32,766 bound values).
const CHUNK: usize = 1000;

/// Inserts events with multi-row `INSERT ... VALUES`.
async fn insert_events(
    conn: &mut DbConn,
    topic_id: i64,
    rows: &[PendingEvent],
    now_ms: i64,
) -> Result<()> {
    for chunk in rows.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Db>::new(
            "INSERT INTO events (topic_id, partition, sequence, transaction_id, key, key_version, event_id, \
             event_type, content_type, headers, payload, tombstone, committed_at_ms, invalidates) ",
        );
        qb.push_values(chunk, |mut b, r| {
            b.push_bind(topic_id)
                .push_bind(r.partition as i64)
                .push_bind(r.sequence as i64)
                .push_bind(r.transaction_id as i64)
                .push_bind(r.key.as_deref())
                .push_bind(r.key_version as i64)
                .push_bind(r.event_id.as_deref())
                .push_bind(r.content.event_type.as_str())
                .push_bind(r.content.content_type.as_str())
                .push_bind(r.content.headers.as_deref())
                .push_bind(r.content.payload.as_slice())
                .push_bind(r.content.tombstone)
                .push_bind(now_ms)
                .push_bind(r.invalidates.map(|t| t as i64));
        });
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Writes keys' new states with multi-row upserts.
async fn upsert_keys(
    conn: &mut DbConn,
    topic_id: i64,
    keys: &[(&String, &KeyState)],
) -> Result<()> {
    for chunk in keys.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Db>::new(
            "INSERT INTO keys (topic_id, key, version, live_partition, live_sequence, live_tombstone, changed_transaction_id) ",
        );
        qb.push_values(chunk, |mut b, (k, s)| {
            b.push_bind(topic_id)
                .push_bind(k.as_str())
                .push_bind(s.version as i64)
                .push_bind(s.live.map(|l| l.partition as i64))
                .push_bind(s.live.map(|l| l.sequence as i64))
                .push_bind(s.live.is_some_and(|l| l.tombstone))
                .push_bind(s.changed.map(|t| t as i64));
        });
        qb.push(UPSERT_KEYS_TAIL);
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

const UPSERT_KEYS_TAIL: &str = " ON CONFLICT (topic_id, key) DO UPDATE SET version = excluded.version, \
     live_partition = excluded.live_partition, live_sequence = excluded.live_sequence, \
     live_tombstone = excluded.live_tombstone, changed_transaction_id = excluded.changed_transaction_id";

/// Stores the topic's new partition heads and last transaction.
async fn write_heads(
    conn: &mut DbConn,
    topic_id: i64,
    _topic: &str,
    last_txn: u64,
    heads: &[(u32, u64)],
) -> Result<()> {
    let mut qb =
        QueryBuilder::<Db>::new("INSERT INTO partitions (topic_id, partition, head_sequence) ");
    qb.push_values(heads, |mut b, (p, h)| {
        b.push_bind(topic_id)
            .push_bind(*p as i64)
            .push_bind(*h as i64);
    });
    qb.push(
        " ON CONFLICT (topic_id, partition) DO UPDATE SET head_sequence = excluded.head_sequence",
    );
    qb.build().execute(&mut *conn).await?;
    sqlx::query("UPDATE topics SET last_transaction_id = $1 WHERE topic_id = $2")
        .bind(last_txn as i64)
        .bind(topic_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
