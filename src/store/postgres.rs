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

// The shared implementation, compiled here against PostgreSQL's types (and
// again in the other backend's module, on purpose).
#[allow(clippy::duplicate_mod)]
#[path = "backend/reads.rs"]
mod reads;
#[allow(clippy::duplicate_mod)]
#[path = "backend/writer.rs"]
mod writer;

pub(crate) use reads::Reads;

// Long partition reads go through binary `COPY`.
use super::pg_copy::bulk_read;

use crate::config::Config;
use crate::error::Result;
use crate::store::{Registry, WriteRequest};
use sqlx::ConnectOptions;
use sqlx::QueryBuilder;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use writer::{PendingEvent, TopicWrite};

type Db = sqlx::Postgres;
type DbConn = sqlx::PgConnection;
type DbRow = PgRow;

/// The notification channel for new heads.
const CHANNEL: &str = "eventhub_heads";

/// Where PostgreSQL's SQL differs from SQLite's.
mod dialect {
    /// Locks the topic's row until commit: every writer of the topic, in
    /// any hub process, queues here before reading the heads it extends.
    pub const LOCK_TOPIC: &str =
        "SELECT last_transaction_id FROM topics WHERE topic_id = $1 FOR UPDATE";
    /// Other hub processes may write the same database.
    pub const SOLE_WRITER: bool = false;
    /// A failed COMMIT that PostgreSQL answered did not commit; a lost
    /// connection is looked into instead (`Writer::committed_anyway`).
    pub fn synced_nothing(_: &crate::error::HubError) -> bool {
        true
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
) -> Result<Reads> {
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
    let reads = Reads { pool };
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
                writer::run(write.clone(), rx, topics, config, None).await;
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

async fn listen_heads(pool: &PgPool) -> Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Report a lost connection at once instead of reconnecting silently:
    // notifications may have been missed, so heads must be read again.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Applies every head notification to the registry, for as long as the
/// hub runs; on connection loss, reconnects and resynchronises.
async fn follow_heads(listener: PgListener, pool: PgPool, reads: Reads, topics: Registry) {
    let mut listener = Some(listener);
    loop {
        let Some(l) = listener.as_mut() else {
            listener = Some(reconnect(&pool).await);
            match reads.adopt_all(&topics).await {
                Ok(()) => tracing::info!("listening for new heads again"),
                // The database answered the listener a moment ago; should
                // it fail now, each topic's next notification still brings
                // its heads.
                Err(e) => tracing::warn!(error = %e, "could not resynchronise heads"),
            }
            continue;
        };
        match l.try_recv().await {
            Ok(Some(n)) => apply(&topics, n.payload()),
            Ok(None) | Err(_) => {
                tracing::warn!("lost the connection that listens for new heads; reconnecting");
                listener = None;
            }
        }
    }
}

/// A listening connection, retried with backoff until the database answers.
async fn reconnect(pool: &PgPool) -> PgListener {
    let mut delay = Duration::from_millis(50);
    loop {
        match listen_heads(pool).await {
            Ok(l) => return l,
            Err(e) => {
                tracing::debug!(error = %e, "listener reconnect failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// This process, in the notifications its writer sends: random, so that
/// processes sharing a database tell their own commits from the others'.
static ORIGIN: LazyLock<String> = LazyLock::new(|| {
    use std::hash::BuildHasher;
    let seed = std::hash::RandomState::new().hash_one(std::process::id());
    format!("@{seed:016x}")
});

/// Applies a payload `<topic> <last transaction> @<origin> <partition>:<head> ...`
/// (the origin may be missing).
fn apply(topics: &Registry, payload: &str) {
    let mut parts = payload.split(' ').peekable();
    let (Some(name), Some(Ok(last))) = (parts.next(), parts.next().map(str::parse::<u64>)) else {
        tracing::warn!(payload, "ignoring a malformed heads notification");
        return;
    };
    let origin = parts.next_if(|p| p.starts_with('@'));
    // A topic this process has not loaded yet reads its heads when it is.
    let Some(state) = topics.read().unwrap().get(name).cloned() else {
        return;
    };
    // Another process's commit may have invalidated events the tails hold.
    // `advance` drops them for any new transaction but the one this
    // process's writer is trying, which another process may have taken
    // (the writer's guarded write then writes nothing): only the origin
    // tells that one apart.
    if origin != Some(ORIGIN.as_str())
        && last > state.last_transaction()
        && last == state.local_transaction()
    {
        state.forget_tails();
    }
    let heads: Vec<(u32, u64)> = parts
        .filter_map(|ph| {
            let (p, h) = ph.split_once(':')?;
            Some((p.parse().ok()?, h.parse().ok()?))
        })
        .collect();
    if origin == Some(ORIGIN.as_str()) && state.defer_own(last, heads.clone()) {
        return;
    }
    state.advance(last, heads);
}

/// `<select> WHERE topic_id = <id> AND <column> = ANY(<values>)`: one
/// statement text whatever the number of values.
fn select_in<'a>(select: &str, id: i64, column: &str, values: &[&'a str]) -> QueryBuilder<'a, Db> {
    let mut qb = QueryBuilder::<Db>::new(select);
    qb.push(" WHERE topic_id = ")
        .push_bind(id)
        .push(format!(" AND {column} = ANY("))
        .push_bind(values.to_vec())
        .push(")");
    qb
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
async fn write_topic(conn: &mut DbConn, w: &TopicWrite<'_>) -> Result<bool> {
    let (rows, keys, heads) = (w.rows, w.keys, w.heads);
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

/// Notification payloads announcing new heads: `<topic> <last transaction>
/// @<origin> <partition>:<head> ...`, split to stay far below PostgreSQL's
/// 8,000-byte payload limit.
fn heads_payloads(topic: &str, last_txn: u64, heads: &[(u32, u64)]) -> Vec<String> {
    heads
        .chunks(200)
        .map(|chunk| {
            let mut s = format!("{topic} {last_txn} {}", *ORIGIN);
            for (p, h) in chunk {
                s.push_str(&format!(" {p}:{h}"));
            }
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EventRow, TopicRow, TopicState, registered};
    use crate::validate::Content;
    use std::sync::Arc;

    fn row(sequence: u64, transaction_id: u64) -> EventRow {
        EventRow {
            partition: 0,
            sequence,
            transaction_id,
            key: Some("k".into()),
            key_version: sequence,
            event_id: None,
            content: Content {
                event_type: "T".into(),
                content_type: String::new(),
                headers: None,
                payload: Vec::new(),
                tombstone: false,
            },
            committed_at_ms: 0,
            invalidates: None,
        }
    }

    /// A registry holding one new topic.
    fn topic(name: &str, partitions: u32) -> (Registry, Arc<TopicState>) {
        let topics = Registry::default();
        let row = TopicRow {
            id: 1,
            name: name.into(),
            partition_count: partitions,
            created_at_ms: 0,
            last_transaction_id: 0,
            heads: (0..partitions).map(|p| (p, 0)).collect(),
        };
        let state = registered(&topics, &row);
        (topics, state)
    }

    /// The writer committed transaction 1 and is trying 2 when a
    /// notification of transaction 2 arrives: the tails are kept if the
    /// writer sent it (which then moves the heads itself), dropped if
    /// another process did (which moves the heads at once).
    #[test]
    fn a_commit_elsewhere_drops_the_tails_even_with_the_writers_transaction_id() {
        for (origin, own) in [(ORIGIN.as_str(), true), ("@0123456789abcdef", false)] {
            let (topics, state) = topic("t", 1);
            let _reader = state.heads[0].subscribe();
            state.committing(1);
            state.remember([row(1, 1)]);
            state.advance(1, [(0, 1)]);
            state.committing(2);
            apply(&topics, &format!("t 2 {origin} 0:2"));
            assert_eq!(state.head(0), if own { 1 } else { 2 }, "origin {origin}");
            let tail = state.tail_page(0, 0, 2, 10, &[]);
            assert_eq!(tail.is_some(), own, "origin {origin}");
        }
    }

    /// A notification of the writer's own commit that comes before the
    /// writer published it leaves the heads to the writer, which hands the
    /// commit's events to the tails first. If the writer gives the commit
    /// up instead (it cannot tell whether it happened), the notification's
    /// heads apply, since it proves the commit.
    #[test]
    fn an_own_notification_waits_for_the_writer() {
        let (topics, state) = topic("t", 1);
        let _reader = state.heads[0].subscribe();
        let own = |last: u64, head: u64| format!("t {last} {} 0:{head}", *ORIGIN);

        state.committing(1);
        apply(&topics, &own(1, 3));
        assert_eq!((state.last_transaction(), state.head(0)), (0, 0));
        state.remember([row(1, 1), row(2, 1), row(3, 1)]);
        state.advance(1, [(0, 3)]);
        state.published();
        assert_eq!((state.last_transaction(), state.head(0)), (1, 3));
        assert_eq!(state.tail_page(0, 0, 3, 10, &[]).unwrap().rows.len(), 3);
        // A notification after the writer published changes nothing.
        apply(&topics, &own(1, 3));
        assert_eq!(state.head(0), 3);

        state.committing(2);
        apply(&topics, &own(2, 5));
        assert_eq!(state.head(0), 3);
        state.give_up();
        assert_eq!((state.last_transaction(), state.head(0)), (2, 5));
        assert!(state.tail_page(0, 3, 5, 10, &[]).is_none());

        // Given up before its notification came: applied when it comes.
        state.committing(3);
        state.give_up();
        apply(&topics, &own(3, 6));
        assert_eq!((state.last_transaction(), state.head(0)), (3, 6));
    }

    /// Payloads of processes that send no origin are applied as commits
    /// from elsewhere.
    #[test]
    fn a_payload_without_origin_is_applied() {
        let (topics, state) = topic("t", 2);
        apply(&topics, "t 3 0:2 1:5");
        assert_eq!(
            (state.last_transaction(), state.head(0), state.head(1)),
            (3, 2, 5)
        );
        let payloads = heads_payloads("t", 4, &[(1, 6)]);
        assert_eq!(payloads, [format!("t 4 {} 1:6", *ORIGIN)]);
        apply(&topics, &payloads[0]);
        assert_eq!((state.last_transaction(), state.head(1)), (4, 6));
    }
}
