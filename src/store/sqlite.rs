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
use crate::store::{Registry, WriteRequest, adopt};
use sqlx::ConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::mpsc;

type Db = sqlx::Sqlite;
type DbConn = sqlx::SqliteConnection;
type DbRow = SqliteRow;

/// Where SQLite's SQL differs from PostgreSQL's.
mod dialect {
    /// Reads the topic's last transaction. The writer task is the only
    /// writer of the file, so there is nothing to lock against.
    pub const LOCK_TOPIC: &str = "SELECT last_transaction_id FROM topics WHERE topic_id = $1";
    /// No other process to tell about new heads.
    pub const NOTIFY_HEADS: Option<&str> = None;
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
    for row in reads.all_topic_rows().await? {
        adopt(&topics, &row);
    }
    tokio::spawn(writer::run(write, rx, topics, config.clone()));
    Ok(reads)
}
