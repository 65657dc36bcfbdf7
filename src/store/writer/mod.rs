//! The writer task of one hub process.
//!
//! Appends are group-committed: the task takes every Append waiting in its
//! queue (up to a bound), plans them one after another in memory against
//! the database state plus what the earlier appends of the batch did
//! ([`plan`]), writes all their rows with a few multi-row statements, and
//! commits once. A rejected append contributes nothing, so it stores
//! nothing. Heads are published to readers only after the commit, and only
//! then is any append acknowledged: acknowledged means durable. The order
//! is kept by the types of [`commit`]: readers can be handed a
//! transaction's events only through the guard that committing it yields.
//!
//! Sequence and transaction ids are assigned under a lock on the topic's row
//! ([`Dialect::LOCK_TOPIC`](super::storage::Dialect::LOCK_TOPIC)), taken
//! before the topic's heads are read and held until commit. Every writer of
//! a topic, in this process or another one on the same database, assigns
//! ids only while holding it, so ids follow commit order: a later sequence
//! never becomes visible before an earlier one, and a reader that reads up
//! to a head it has seen never skips an event. The one exception keeps that
//! order: on PostgreSQL, a writer whose own commit was the topic's last
//! assigns ids first and then writes them in one statement that takes the
//! lock and writes only if the topic's last transaction is still that
//! commit ([`append`]'s unlocked path); if it is not, nothing is written
//! and the batch is planned again under the lock. On SQLite, where the
//! writer task is the file's only writer, such a batch (of any size) is
//! written and committed with BEGIN and COMMIT in the same script: one
//! hand-off to sqlx's worker thread instead of three.
//!
//! The writer keeps the states of the keys it wrote or read lately in a
//! bounded cache ([`key_cache`]). When the topic's last transaction is one
//! this process committed (it then published every partition's head), the
//! writer takes the heads from the registry instead of reading them. Where
//! the writer task is the file's only writer (SQLite), it need not read the
//! topic's row at all.
//!
//! - [`plan`]: the planning rules, pure (unit-tested without a database).
//! - [`key_cache`]: committed key states kept between batches.
//! - [`draft`]: a topic's draft during a transaction: locking, loading what
//!   planning needs, writing.
//! - [`commit`]: the one commit pipeline (commit or check, then publish).
//! - [`append`]: batches of appends, under the lock or unlocked.
//! - [`invalidate`]: invalidating a transaction.
//! - [`sql`]: the writer's statements ([`WriteStorage`]), written once.

mod append;
mod commit;
pub(crate) use commit::Committed;
mod draft;
mod invalidate;
pub(crate) mod key_cache;
pub(crate) mod plan;
mod sql;

use super::storage::WriteStorage;
use super::{Registry, TopicState, WriteRequest, adopt};
use crate::config::Config;
use crate::domain::{AppendReply, NewEvent, TopicName};
use crate::error::{HubError, Result};
use draft::find_topic;
use key_cache::KeyCache;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, Pool, Transaction};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// Most appends, events and bytes (payloads, headers, keys, ids, types)
/// group-committed in one transaction. The bytes bound what one
/// PostgreSQL statement carries (its messages are limited to 1 GiB): an
/// Append may carry up to `max_request_bytes` (16 MiB by default), and a
/// group commit of many such would otherwise fail as a whole, every time.
const MAX_BATCH_APPENDS: usize = 1024;
const MAX_BATCH_EVENTS: usize = 20_000;
const MAX_BATCH_BYTES: usize = 64 << 20;

/// The bytes of `events` that [`MAX_BATCH_BYTES`] counts.
fn batch_bytes(events: &[NewEvent]) -> usize {
    events
        .iter()
        .map(|e| {
            let c = &e.content;
            e.key.len()
                + e.event_id.as_ref().map_or(0, String::len)
                + c.event_type.len()
                + c.content_type.len()
                + c.headers.as_ref().map_or(0, Vec::len)
                + c.payload.len()
        })
        .sum()
}

/// One Append waiting in a batch.
struct AppendReq {
    topic: TopicName,
    events: Vec<NewEvent>,
    dedup_by_content: bool,
    reply: oneshot::Sender<Result<AppendReply>>,
}

/// The writer task: runs until every sender of `rx` is gone. `pool` is the
/// writer's own; one connection is enough, since the task writes one
/// transaction at a time. `wrote`, when given, is marked after every
/// request the writer handled (SQLite's checkpointer waits on it).
pub(crate) async fn run<B: WriteStorage>(
    pool: Pool<B::Db>,
    rx: mpsc::Receiver<WriteRequest>,
    topics: Registry,
    config: Config,
    wrote: Option<watch::Sender<()>>,
) {
    Writer::<B> {
        pool,
        wrote,
        conn: None,
        kept: false,
        began: false,
        topics,
        config,
        key_cache: KeyCache::default(),
    }
    .run(rx)
    .await
}

/// Begins a transaction on the writer's kept connection, acquiring one if
/// it has none: no pool hand-off and no ping per transaction (see
/// `Writer::retry_begin` for a kept connection the database dropped).
async fn begin<'c, DB: sqlx::Database>(
    conn: &'c mut Option<PoolConnection<DB>>,
    pool: &Pool<DB>,
) -> Result<Transaction<'c, DB>> {
    if conn.is_none() {
        *conn = Some(pool.acquire().await?);
    }
    Ok(conn.as_mut().expect("acquired above").begin().await?)
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

struct Writer<B: WriteStorage> {
    pool: Pool<B::Db>,
    wrote: Option<watch::Sender<()>>,
    /// The connection the writer keeps between transactions (see `begin`).
    conn: Option<PoolConnection<B::Db>>,
    /// Whether the current request started on a kept connection, and
    /// whether its transaction got past BEGIN (see `retry_begin`).
    kept: bool,
    began: bool,
    topics: Registry,
    config: Config,
    key_cache: KeyCache,
}

impl<B: WriteStorage> Writer<B> {
    async fn run(mut self, mut rx: mpsc::Receiver<WriteRequest>) {
        let mut held: Option<WriteRequest> = None;
        loop {
            let first = match held.take() {
                Some(r) => r,
                None => match rx.recv().await {
                    Some(r) => r,
                    None => return,
                },
            };
            match first {
                WriteRequest::Append {
                    topic,
                    events,
                    dedup_by_content,
                    reply,
                } => {
                    let first = AppendReq {
                        topic,
                        events,
                        dedup_by_content,
                        reply,
                    };
                    let batch = take_batch(first, &mut rx, &mut held);
                    self.append_batch(batch).await;
                }
                WriteRequest::CreateTopic {
                    topic,
                    partitions,
                    reply,
                } => {
                    let r = loop {
                        let r = self.prepare().create_topic(&topic, partitions).await;
                        if !self.retry_begin(&r) {
                            break r;
                        }
                    };
                    let _ = reply.send(r);
                }
                WriteRequest::Invalidate {
                    topic,
                    transaction_id,
                    reason,
                    reply,
                } => {
                    let r = loop {
                        let r = self
                            .prepare()
                            .invalidate(&topic, transaction_id, &reason)
                            .await;
                        if !self.retry_begin(&r) {
                            break r;
                        }
                    };
                    // The invalidated transaction's keys fall back to
                    // earlier events.
                    self.key_cache.clear();
                    let _ = reply.send(r);
                }
            }
            if let Some(wrote) = &self.wrote {
                wrote.send_replace(());
            }
        }
    }

    /// After a write failed: closes the kept connection rather than
    /// returning it to the pool, since nothing says what state its
    /// transaction is in. (On SQLite, COMMIT failing with an I/O error may
    /// leave the transaction open while sqlx counts it as ended, or the
    /// reverse; the next transaction's COMMIT then only released a
    /// savepoint, and a later ROLLBACK undid an acknowledged append.)
    fn discard_conn(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.close_on_drop();
        }
    }

    /// Resets the per-request state before a request's transaction.
    fn prepare(&mut self) -> &mut Self {
        self.kept = self.conn.is_some();
        self.began = false;
        self
    }

    /// After a request: whether it failed on a connection kept from an
    /// earlier transaction, which the database dropped since (it
    /// restarted, say), either at BEGIN or with the database's word that
    /// it had ended the session (the write then did not happen: the
    /// commit check looked). The request may run again on a new
    /// connection; that one is not kept from before, so this happens at
    /// most once. A connection that saw a request fail is never kept
    /// (`discard_conn`).
    fn retry_begin<T>(&mut self, result: &Result<T>) -> bool {
        let Err(e) = result else {
            return false;
        };
        self.discard_conn();
        e.is_unavailable() && self.kept && (!self.began || e.session_ended())
    }

    async fn create_topic(
        &mut self,
        topic: &TopicName,
        partitions: u32,
    ) -> Result<(Arc<TopicState>, bool)> {
        let topics = &self.topics;
        let mut tx = begin(&mut self.conn, &self.pool).await?;
        self.began = true;
        let name = topic.as_str();
        let created = match find_topic::<B>(&mut tx, topics, name).await? {
            Some(_) => None,
            None => B::insert_topic(&mut tx, name, partitions, now_ms()).await?,
        };
        let id = match created {
            Some(id) => id,
            None => {
                let meta = find_topic::<B>(&mut tx, topics, name)
                    .await?
                    .ok_or_else(|| {
                        HubError::Unavailable(format!(
                            "topic {name:?} was removed while it was created; retry"
                        ))
                    })?;
                if meta.partition_count != partitions {
                    return Err(HubError::AlreadyExists(format!(
                        "topic {name:?} already exists with {} partitions (asked for {partitions}); the partition count cannot change",
                        meta.partition_count
                    )));
                }
                meta.id
            }
        };
        let row = B::topic_by_id(&mut tx, id).await?;
        tx.commit().await?;
        if created.is_some() {
            self.key_cache.created(id);
        }
        Ok((adopt(topics, &row), created.is_some()))
    }
}

/// A batch: `first` and the Appends queued behind it, up to the batch
/// bounds. A request of another kind ends the batch and is `held` for the
/// next turn.
fn take_batch(
    first: AppendReq,
    rx: &mut mpsc::Receiver<WriteRequest>,
    held: &mut Option<WriteRequest>,
) -> Vec<AppendReq> {
    let mut n = first.events.len();
    let mut bytes = batch_bytes(&first.events);
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH_APPENDS && n < MAX_BATCH_EVENTS && bytes < MAX_BATCH_BYTES {
        match rx.try_recv() {
            Ok(WriteRequest::Append {
                topic,
                events,
                dedup_by_content,
                reply,
            }) => {
                n += events.len();
                bytes += batch_bytes(&events);
                batch.push(AppendReq {
                    topic,
                    events,
                    dedup_by_content,
                    reply,
                });
            }
            Ok(other) => {
                *held = Some(other);
                break;
            }
            Err(_) => break,
        }
    }
    batch
}
