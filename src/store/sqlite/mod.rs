//! The SQLite backend: one database file in WAL mode, read by a pool of
//! read-only connections and written by the writer task's one connection.
//! One hub process per file, which it locks: the registry's heads are
//! published by the local writer only.

mod rows;

use crate::config::{Config, SqliteSync};
use crate::domain::EventRow;
use crate::error::{HubError, Result};
use crate::store::storage::{Conn, Dialect, ReadStorage, TopicWrite};
use crate::store::writer::plan::PendingEvent;
use crate::store::{Registry, WriteRequest, writer};
use sqlx::QueryBuilder;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The SQLite backend: the pool of read-only connections.
#[derive(Clone)]
pub(crate) struct Sqlite {
    pool: SqlitePool,
}

impl Dialect for Sqlite {
    type Db = sqlx::Sqlite;

    /// Reads the topic's last transaction. The writer task is the only
    /// writer of the file, so there is nothing to lock against.
    const LOCK_TOPIC: &'static str = "SELECT last_transaction_id FROM topics WHERE topic_id = $1";
    const SOLE_WRITER: bool = true;

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn select_in(
        conn: &mut Conn<Self>,
        select: &str,
        id: i64,
        column: &str,
        values: &[&str],
        prepared: bool,
    ) -> Result<Vec<SqliteRow>> {
        let mut qb = QueryBuilder::<sqlx::Sqlite>::new(select);
        qb.push(" WHERE topic_id = ")
            .push_bind(id)
            .push(format!(" AND {column} IN ("));
        let mut sep = qb.separated(", ");
        for v in values {
            sep.push_bind(*v);
        }
        qb.push(")");
        Ok(qb.build().persistent(prepared).fetch_all(conn).await?)
    }

    async fn write_topic(conn: &mut Conn<Self>, w: &TopicWrite<'_>) -> Result<bool> {
        write_topic(conn, w).await
    }

    async fn bulk_read(
        &self,
        topic_id: i64,
        partition: u32,
        after: u64,
        upto: u64,
        limit: usize,
        types: &[String],
    ) -> Result<Option<Vec<EventRow>>> {
        rows::bulk_read(&self.pool, topic_id, partition, after, upto, limit, types).await
    }

    /// The writer task is the only writer: no other session can be
    /// committing.
    async fn wait_for_lost_commit(_: &mut Conn<Self>, _: i64, _: &PendingEvent) -> Result<()> {
        Ok(())
    }
}

/// Opens (creating if needed) the database file, runs migrations, loads the
/// registry and starts the writer task.
/// `closed` is dropped once the writer has stopped (when every sender of
/// `rx` is gone) and its connections are closed.
pub(crate) async fn open(
    config: &Config,
    rx: mpsc::Receiver<WriteRequest>,
    topics: Registry,
    closed: watch::Sender<()>,
) -> Result<Sqlite> {
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
        .connect_with(
            options
                .clone()
                .pragma("wal_autocheckpoint", WRITER_CHECKPOINT_PAGES.to_string()),
        )
        .await?;
    let lock = lock_file(options.get_filename())?;
    super::SQLITE_MIGRATIONS.run(&write).await?;
    let checkpointer = options.clone().connect().await?;
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .min_connections(1)
        .connect_with(
            options
                .read_only(true)
                .pragma("cache_size", format!("-{READ_CACHE_KIB}")),
        )
        .await?;
    let reads = Sqlite { pool };
    reads.adopt_all(&topics).await?;
    let (wrote, written) = watch::channel(());
    let checkpoints = tokio::spawn(checkpoints(checkpointer, written));
    let config = config.clone();
    tokio::spawn(async move {
        writer::run::<Sqlite>(write.clone(), rx, topics, config, Some(wrote)).await;
        crate::store::close_pool(&write).await;
        // The checkpointer stops with the writer and closes its connection.
        let _ = checkpoints.await;
        drop(lock);
        drop(closed);
    });
    Ok(reads)
}

/// Locks the database file for this process (an advisory `flock`, apart
/// from SQLite's own locks, released when the process ends however it
/// ends). A second hub process on the same file would assign the
/// transaction ids and sequences this one assigns, from heads it does not
/// see move: it is refused at start-up instead.
fn lock_file(path: &std::path::Path) -> Result<Option<std::fs::File>> {
    if path.as_os_str() == ":memory:" {
        return Ok(None);
    }
    let file = std::fs::File::open(path).map_err(sqlx::Error::Io)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(HubError::Unavailable(format!(
            "the database file {} is in use by another eventhub process; a SQLite file \
             serves one hub process at a time (several processes share a PostgreSQL database)",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(sqlx::Error::Io(e).into()),
    }
}

/// Page cache of each read connection, in KiB (the writer keeps 64 MiB).
/// Reads mostly scan forward, and the operating system caches the file
/// anyway. Eight read connections with the writer's cache would hold up to
/// 512 MiB, and a long read spent a quarter of its time in the page faults
/// of filling them (`docs/benchmarks.md`, item 21).
const READ_CACHE_KIB: u32 = 8192;

/// WAL pages past which the writer checkpoints itself, after a commit: only
/// when the background checkpoints fall that far behind.
const WRITER_CHECKPOINT_PAGES: u32 = 8192;
/// Least time between two background checkpoints.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// Copies committed pages from the WAL into the database file on a
/// connection of its own, after the writer wrote, at most every
/// `CHECKPOINT_INTERVAL`, until the writer stops. A PASSIVE checkpoint does
/// not block the writer, so no commit waits for the copying and its fsyncs
/// (SQLite's default is to checkpoint in the commit that passes 1,000 WAL
/// pages). The writer starts the WAL over at its next transaction if a
/// checkpoint has copied all of it by then; under writes without pause
/// that happens after its own checkpoint at `WRITER_CHECKPOINT_PAGES`,
/// which finds little left to copy.
async fn checkpoints(mut conn: sqlx::SqliteConnection, mut written: watch::Receiver<()>) {
    while written.changed().await.is_ok() {
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            tracing::warn!(error = %e, "WAL checkpoint failed; the writer checkpoints when the WAL passes {WRITER_CHECKPOINT_PAGES} pages");
        }
        tokio::time::sleep(CHECKPOINT_INTERVAL).await;
    }
    let _ = conn.close().await;
}

/// Writes a topic's events, keys, heads and last transaction with
/// multi-row statements sent together: sqlx runs them one after another on
/// its worker thread, so the whole write is one hand-off to that thread.
/// With `planned_after` (the writer's unlocked path) the script also
/// begins and commits its own transaction, and a script that fails anywhere
/// is rolled back before the error is returned.
async fn write_topic(conn: &mut Conn<Sqlite>, w: &TopicWrite<'_>) -> Result<bool> {
    let mut qb = QueryBuilder::<sqlx::Sqlite>::new(if w.planned_after.is_some() {
        "BEGIN IMMEDIATE;\n"
    } else {
        ""
    });
    for chunk in w.rows.chunks(Sqlite::CHUNK) {
        qb.push(
            "INSERT INTO events (topic_id, partition, sequence, transaction_id, key, key_version, event_id, \
             event_type, content_type, headers, payload, tombstone, committed_at_ms, invalidates) ",
        );
        qb.push_values(chunk, |mut b, r| {
            b.push_bind(w.topic_id)
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
                .push_bind(w.now_ms)
                .push_bind(r.invalidates.map(|t| t as i64));
        });
        qb.push(";\n");
    }
    for chunk in w.keys.chunks(Sqlite::CHUNK) {
        qb.push(
            "INSERT INTO keys (topic_id, key, version, live_partition, live_sequence, live_tombstone, changed_transaction_id) ",
        );
        qb.push_values(chunk, |mut b, (k, s)| {
            b.push_bind(w.topic_id)
                .push_bind(k.as_str())
                .push_bind(s.version as i64)
                .push_bind(s.live.map(|l| l.partition as i64))
                .push_bind(s.live.map(|l| l.sequence as i64))
                .push_bind(s.live.is_some_and(|l| l.tombstone))
                .push_bind(s.changed.map_or(0, |t| t as i64));
        });
        qb.push(
            " ON CONFLICT (topic_id, key) DO UPDATE SET version = excluded.version, \
             live_partition = excluded.live_partition, live_sequence = excluded.live_sequence, \
             live_tombstone = excluded.live_tombstone, changed_transaction_id = excluded.changed_transaction_id;\n",
        );
    }
    if !w.heads.is_empty() {
        qb.push("INSERT INTO partitions (topic_id, partition, head_sequence) ");
        qb.push_values(&w.heads, |mut b, (p, h)| {
            b.push_bind(w.topic_id)
                .push_bind(*p as i64)
                .push_bind(*h as i64);
        });
        qb.push(
            " ON CONFLICT (topic_id, partition) DO UPDATE SET head_sequence = excluded.head_sequence;\n",
        );
    }
    qb.push("UPDATE topics SET last_transaction_id = ")
        .push_bind(w.last_txn as i64)
        .push(" WHERE topic_id = ")
        .push_bind(w.topic_id);
    if w.planned_after.is_none() {
        qb.build().execute(&mut *conn).await?;
        return Ok(true);
    }
    qb.push(";\nCOMMIT");
    if let Err(e) = qb.build().execute(&mut *conn).await {
        // A statement or COMMIT failed: the transaction may still be open.
        // (Without one, ROLLBACK fails harmlessly.)
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        return Err(e.into());
    }
    Ok(true)
}
