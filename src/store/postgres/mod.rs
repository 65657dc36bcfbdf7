//! The PostgreSQL backend: any number of hub processes on one database.
//!
//! Each process has a pool for reads, a writer with its own connection on a
//! thread of its own, and a listener connection. Writers of every process
//! assign a topic's sequences only while holding a lock on the topic's row
//! (`SELECT ... FOR UPDATE`, held to commit), so sequences follow commit
//! order across processes. A writer whose own commit is still the topic's
//! last skips that transaction: it writes in one statement that takes the
//! lock and writes only if nothing was committed to the topic since
//! (`write_sql`'s guarded form), else it plans again under the lock. In the
//! same transaction (or statement) the writer sends a `NOTIFY` with the new
//! heads; PostgreSQL delivers it to every listening process when, and only
//! when, the transaction commits, so a long-poll on one process wakes for a
//! commit made through another without polling the database.
//!
//! If the listener's connection drops, notifications sent meanwhile are
//! lost; the listener reconnects (with backoff) and then reads every
//! topic's heads from the database once, so no reader is left waiting for
//! a commit it missed.

mod copy;
mod notify;

use crate::config::Config;
use crate::domain::EventRow;
use crate::error::Result;
use crate::store::storage::{Conn, Dialect, ReadStorage, TopicWrite};
use crate::store::writer::plan::PendingEvent;
use crate::store::{Registry, WriteRequest, writer};
use notify::{follow_heads, heads_payloads, listen_heads};
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// The PostgreSQL backend: the pool that reads use.
#[derive(Clone)]
pub(crate) struct Postgres {
    pool: PgPool,
}

impl Dialect for Postgres {
    type Db = sqlx::Postgres;

    /// Locks the topic's row until commit: every writer of the topic, in
    /// any hub process, queues here before reading the heads it extends.
    const LOCK_TOPIC: &'static str =
        "SELECT last_transaction_id FROM topics WHERE topic_id = $1 FOR UPDATE";
    /// Other hub processes may write the same database.
    const SOLE_WRITER: bool = false;

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// `= ANY(<array>)`: one statement text whatever the number of values.
    async fn select_in(
        conn: &mut Conn<Self>,
        select: &str,
        id: i64,
        column: &str,
        values: &[&str],
        prepared: bool,
    ) -> Result<Vec<PgRow>> {
        let sql = format!("{select} WHERE topic_id = $1 AND {column} = ANY($2)");
        Ok(sqlx::query(&sql)
            .bind(id)
            .bind(values)
            .persistent(prepared)
            .fetch_all(conn)
            .await?)
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
        copy::bulk_read(&self.pool, topic_id, partition, after, upto, limit, types).await
    }

    /// The lost session may still be committing, or still waiting for the
    /// topic's row to write (it locks that row until its transaction ends):
    /// waits behind it, for at most 5 s. A topic the lost transaction
    /// created is invisible to that lock until it commits; an insert at the
    /// first event's place waits for whoever is inserting there (the caller
    /// rolls it back).
    async fn wait_for_lost_commit(
        conn: &mut Conn<Self>,
        topic_id: i64,
        first: &PendingEvent,
    ) -> Result<()> {
        sqlx::query("SET LOCAL lock_timeout = '5s'")
            .execute(&mut *conn)
            .await?;
        sqlx::query("SELECT 1 FROM topics WHERE topic_id = $1 FOR SHARE")
            .bind(topic_id)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO events (topic_id, partition, sequence, transaction_id, key_version, \
             event_type, content_type, payload, tombstone, committed_at_ms) \
             VALUES ($1, $2, $3, 0, 0, '', '', $4, false, 0) ON CONFLICT DO NOTHING",
        )
        .bind(topic_id)
        .bind(first.partition as i64)
        .bind(first.sequence as i64)
        .bind(Vec::<u8>::new())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// How long a call waits for a database connection before it fails with
/// UNAVAILABLE (for instance while PostgreSQL is down).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects, runs migrations, starts the listener and the writer task.
/// `closed` is dropped once the writer has stopped (when every sender of
/// `rx` is gone) and its and the listener's connections are closed.
pub(crate) async fn open(
    config: &Config,
    rx: mpsc::Receiver<WriteRequest>,
    topics: Registry,
    closed: watch::Sender<()>,
) -> Result<Postgres> {
    let options = PgConnectOptions::from_str(&config.database_url)?
        .application_name("eventhub")
        .log_statements(tracing::log::LevelFilter::Trace);
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options.clone())
        .await?;
    // Migrations take an advisory lock, so hub processes starting together
    // run them once.
    super::POSTGRES_MIGRATIONS.run(&pool).await?;
    let listen = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(options.clone().application_name("eventhub listener"));
    let reads = Postgres { pool };
    let listener = listen_heads(&listen).await?;
    let reads_for_listener = reads.clone();
    reads.adopt_all(&topics).await?;
    // The writer runs until the store is dropped; the listener stops with it.
    let (stopped_tx, stopped) = oneshot::channel::<()>();
    spawn_writer(
        options.application_name("eventhub writer"),
        rx,
        topics.clone(),
        config.clone(),
        stopped_tx,
    )
    .await?;
    tokio::spawn(async move {
        tokio::select! {
            _ = follow_heads(listener, listen.clone(), reads_for_listener, topics) => {}
            _ = stopped => {}
        }
        listen.close().await;
        drop(closed);
    });
    Ok(reads)
}

/// Starts the writer on a thread of its own, with a single-threaded tokio
/// runtime that also drives the writer's connection, and returns once that
/// connection is open. A transaction takes four round trips (BEGIN, the
/// topic's lock, the write, COMMIT); on the hub's runtime each reply would
/// wait for a worker busy with gRPC before the writer saw it, and the
/// writer is what every append queues for. With 64 concurrent one-event
/// producers this took a batch from 1.16 ms to 0.71 ms (docs/benchmarks.md).
/// The thread ends when every sender of `rx` is gone; `stopped` is dropped
/// then, after the connection is closed.
async fn spawn_writer(
    options: PgConnectOptions,
    rx: mpsc::Receiver<WriteRequest>,
    topics: Registry,
    config: Config,
    stopped: oneshot::Sender<()>,
) -> Result<()> {
    let (opened_tx, opened) = oneshot::channel::<Result<()>>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(sqlx::Error::Io)?;
    std::thread::Builder::new()
        .name("eventhub-writer".into())
        .spawn(move || {
            runtime.block_on(async move {
                let connected = PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await;
                let write = match connected {
                    Ok(pool) => {
                        let _ = opened_tx.send(Ok(()));
                        pool
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e.into()));
                        return;
                    }
                };
                writer::run::<Postgres>(write.clone(), rx, topics, config, None).await;
                write.close().await;
                drop(stopped);
            })
        })
        .map_err(sqlx::Error::Io)?;
    // The thread either answers or panicked.
    opened
        .await
        .unwrap_or(Err(sqlx::Error::WorkerCrashed.into()))
}

/// The write statement of [`write_topic`]. Unguarded, it runs in the
/// transaction that holds the topic's lock. Guarded, it runs on its own
/// (one round trip, committed by itself): its first part updates the
/// topic's last transaction only if that is still `$25`, which also locks
/// the topic's row (waiting for a transaction of another process that
/// holds it, then checking again), and every other part writes only if
/// that update did (a condition PostgreSQL evaluates once, not per row),
/// so the statement writes all or nothing. Its rows are the notifications
/// sent: none means it did not write.
fn write_sql(guarded: bool) -> String {
    let (t, guard, join) = if guarded {
        (
            "t AS (UPDATE topics SET last_transaction_id = $23 WHERE topic_id = $1 \
             AND last_transaction_id = $25 RETURNING topic_id), ",
            "",
            " WHERE EXISTS (SELECT FROM t)",
        )
    } else {
        (
            "",
            ", t AS (UPDATE topics SET last_transaction_id = $23 WHERE topic_id = $1)",
            "",
        )
    };
    format!(
        "WITH {t}e AS (INSERT INTO events (topic_id, partition, sequence, transaction_id, key, key_version, event_id, \
             event_type, content_type, headers, payload, tombstone, committed_at_ms, invalidates) \
             SELECT $1, u.p, u.s, u.t, u.k, u.kv, u.eid, u.et, u.ct, u.h, u.pl, u.tb, $2, u.inv \
             FROM UNNEST($3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $7::bigint[], $8::text[], \
                 $9::text[], $10::text[], $11::bytea[], $12::bytea[], $13::boolean[], $14::bigint[]) \
             AS u(p, s, t, k, kv, eid, et, ct, h, pl, tb, inv){join}), \
         k AS (INSERT INTO keys (topic_id, key, version, live_partition, live_sequence, live_tombstone, changed_transaction_id) \
             SELECT $1, u.* FROM UNNEST($15::text[], $16::bigint[], $17::bigint[], $18::bigint[], $19::boolean[], $20::bigint[]) \
             AS u(key, version, live_partition, live_sequence, live_tombstone, changed_transaction_id){join} \
             ON CONFLICT (topic_id, key) DO UPDATE SET version = excluded.version, \
             live_partition = excluded.live_partition, live_sequence = excluded.live_sequence, \
             live_tombstone = excluded.live_tombstone, changed_transaction_id = excluded.changed_transaction_id), \
         h AS (INSERT INTO partitions (topic_id, partition, head_sequence) \
             SELECT $1, u.p, u.h FROM UNNEST($21::bigint[], $22::bigint[]) AS u(p, h){join} \
             ON CONFLICT (topic_id, partition) DO UPDATE SET head_sequence = excluded.head_sequence){guard} \
         SELECT pg_notify('eventhub_heads', n) FROM UNNEST($24::text[]) AS n{join}"
    )
}

static WRITE: LazyLock<String> = LazyLock::new(|| write_sql(false));
static GUARDED_WRITE: LazyLock<String> = LazyLock::new(|| write_sql(true));

/// Writes a topic's events, keys, heads and last transaction, and
/// notifies every hub process of the new heads (delivered on commit, in
/// commit order): one statement of a fixed text, so one round trip and one
/// prepared statement. Each column is bound as an array and `UNNEST`ed: a
/// batch of any size binds 24 values, not 14 per event. Returns whether it
/// wrote, which only a guarded write (`planned_after`) may not have.
async fn write_topic(conn: &mut Conn<Postgres>, w: &TopicWrite<'_>) -> Result<bool> {
    let (rows, keys, heads) = (w.rows, &w.keys, &w.heads);
    let ints = |f: fn(&PendingEvent) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
    let sql = match w.planned_after {
        Some(_) => GUARDED_WRITE.as_str(),
        None => WRITE.as_str(),
    };
    let notifications = heads_payloads(w.topic, w.last_txn, heads);
    // A guarded write tells whether it wrote by its notifications.
    debug_assert!(w.planned_after.is_none() || !notifications.is_empty());
    let mut q = sqlx::query(sql)
        .bind(w.topic_id)
        .bind(w.now_ms)
        .bind(ints(|r| r.partition as i64))
        .bind(ints(|r| r.sequence as i64))
        .bind(ints(|r| r.transaction_id as i64))
        .bind(rows.iter().map(|r| r.key.as_deref()).collect::<Vec<_>>())
        .bind(ints(|r| r.key_version as i64))
        .bind(
            rows.iter()
                .map(|r| r.event_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.content.event_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.content.content_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.content.headers.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.content.payload.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.content.tombstone).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.invalidates.map(|t| t as i64))
                .collect::<Vec<_>>(),
        )
        .bind(keys.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
        .bind(
            keys.iter()
                .map(|(_, s)| s.version as i64)
                .collect::<Vec<_>>(),
        )
        .bind(
            keys.iter()
                .map(|(_, s)| s.live.map(|l| l.partition as i64))
                .collect::<Vec<_>>(),
        )
        .bind(
            keys.iter()
                .map(|(_, s)| s.live.map(|l| l.sequence as i64))
                .collect::<Vec<_>>(),
        )
        .bind(
            keys.iter()
                .map(|(_, s)| s.live.is_some_and(|l| l.tombstone))
                .collect::<Vec<_>>(),
        )
        .bind(
            keys.iter()
                .map(|(_, s)| s.changed.map_or(0, |t| t as i64))
                .collect::<Vec<_>>(),
        )
        .bind(heads.iter().map(|(p, _)| *p as i64).collect::<Vec<_>>())
        .bind(heads.iter().map(|(_, h)| *h as i64).collect::<Vec<_>>())
        .bind(w.last_txn as i64)
        .bind(notifications);
    if let Some(after) = w.planned_after {
        q = q.bind(after as i64);
    }
    let sent = q.fetch_all(&mut *conn).await?;
    Ok(!sent.is_empty())
}
