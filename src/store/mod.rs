//! Storage: the handle the service uses ([`Store`]), the topic registry
//! (`registry`), reads on a connection pool (`reads`), and one writer
//! task per hub process that group-commits appends (`writer`).
//!
//! What the store asks of a database is a contract of three traits
//! (`storage`): each backend, `sqlite` and `postgres`, writes its
//! dialect (locking, the one-round-trip write, the fast long read), and
//! every other statement is written once for both, with `$N` placeholders,
//! which both accept. The backend is chosen once, when the store opens.
//!
//! - `registry`: topics, partition heads and tails, as this process knows
//!   them; readers wait on the heads, which move only after a commit.
//! - `storage`: the contract (`storage::Dialect`, `storage::ReadStorage`,
//!   `storage::WriteStorage`) and the event column list.
//! - `reads`: every read, and the decoding of event rows.
//! - `writer`: the writer task (planning, key cache, commit pipeline,
//!   invalidation).
//! - `sqlite` (with a background WAL checkpointer; long partition reads
//!   stepped through SQLite's API with `rusqlite`) and `postgres` (the
//!   writer on a thread of its own, LISTEN/NOTIFY between hub processes,
//!   long partition reads through binary `COPY`).

mod postgres;
mod reads;
mod registry;
mod sqlite;
pub(crate) mod storage;
pub(crate) mod writer;

pub use registry::TopicState;
pub(crate) use registry::{Registry, adopt, registered};

use crate::config::Config;
use crate::domain::{
    AppendReply, EventRow, InvalidateReply, NewEvent, PartitionPage, Snapshot, TopicName,
};
use crate::error::{HubError, Result};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use storage::ReadStorage;
use tokio::sync::{mpsc, oneshot, watch};

/// The SQLite schema, as migrations (run at start-up; the bench's database
/// references run them too).
pub static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
/// The PostgreSQL schema, as migrations.
pub static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Closes every connection of `pool`, waiting for those in use. sqlx's
/// `Pool::close` can return with one connection left open: one that was
/// being opened when it was called (to keep `min_connections`, or for a
/// caller already waiting) and went to the idle queue after `close` had
/// emptied it. Closing again closes it; on SQLite a connection left open
/// would keep the `-wal` and `-shm` files beside the database at exit.
async fn close_pool<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) {
    pool.close().await;
    while pool.size() > 0 {
        tokio::task::yield_now().await;
        pool.close().await;
    }
}

/// Most bytes of events (as [`EventRow::size`] counts them) in one page of
/// a read: gRPC clients refuse messages over 4 MiB by default, and a page
/// always holds at least one event. Reads from the database stop at the
/// first event past it, so a page of large events is never loaded whole.
pub const PAGE_BYTES: usize = 3 << 20;

/// A request to the writer task.
pub(crate) enum WriteRequest {
    Append {
        topic: TopicName,
        events: Vec<NewEvent>,
        dedup_by_content: bool,
        reply: oneshot::Sender<Result<AppendReply>>,
    },
    CreateTopic {
        topic: TopicName,
        partitions: u32,
        reply: oneshot::Sender<Result<(Arc<TopicState>, bool)>>,
    },
    Invalidate {
        topic: TopicName,
        transaction_id: u64,
        reason: String,
        reply: oneshot::Sender<Result<InvalidateReply>>,
    },
}

/// A topic as stored: what the registry is loaded from.
#[derive(Debug, Clone)]
pub(crate) struct TopicRow {
    pub id: i64,
    pub name: String,
    pub partition_count: u32,
    pub created_at_ms: i64,
    pub last_transaction_id: u64,
    /// `(partition, head)` of every partition.
    pub heads: Vec<(u32, u64)>,
}

/// The storage handle shared by all request handlers.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    writer: mpsc::Sender<WriteRequest>,
    topics: Registry,
    /// Changes never; its sender is dropped once the writer has stopped
    /// and closed its connections.
    closed: watch::Receiver<()>,
}

/// The read side of one backend: the same methods on either.
#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

/// Calls the same method on whichever backend the store runs on.
macro_rules! reads {
    ($store:expr, $r:ident => $call:expr) => {
        match &$store.backend {
            Backend::Sqlite($r) => $call,
            Backend::Postgres($r) => $call,
        }
    };
}

impl Store {
    /// Connects to (creating if needed) the database named by
    /// `config.database_url`, runs migrations and starts the writer task.
    pub async fn open(config: &Config) -> Result<Store> {
        let url = &config.database_url;
        let topics: Registry = Arc::default();
        let (tx, rx) = mpsc::channel(4096);
        let (closing, closed) = watch::channel(());
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite(sqlite::open(config, rx, topics.clone(), closing).await?)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres(postgres::open(config, rx, topics.clone(), closing).await?)
        } else {
            return Err(HubError::invalid(format!(
                "database URL {url:?} is not supported; use sqlite://PATH (e.g. sqlite://eventhub.db) \
                 or postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            )));
        };
        Ok(Store {
            backend,
            writer: tx,
            topics,
            closed,
        })
    }

    /// Closes the read connections, then waits until the writer has
    /// stopped and closed its own, which it does once every clone of the
    /// store is dropped (this one is, before the wait). On SQLite, the last
    /// connection to close must be one that may write: only such a
    /// connection removes the `-wal` and `-shm` files beside the database.
    pub async fn close(self) {
        reads!(self, r => r.close().await);
        let Store {
            writer, mut closed, ..
        } = self;
        drop(writer);
        while closed.changed().await.is_ok() {}
    }

    /// The topic, if it exists (loaded from the database on first use, so a
    /// topic created by another hub process is found too).
    pub async fn topic(&self, name: &str) -> Result<Option<Arc<TopicState>>> {
        if let Some(t) = self.topics.read().unwrap().get(name).cloned() {
            return Ok(Some(t));
        }
        let Some(row) = reads!(self, r => r.topic_row(name).await)? else {
            return Ok(None);
        };
        let state = adopt(&self.topics, &row);
        // A commit between reading `row` and adopting it may have notified
        // before the topic was in the registry; read the heads once more.
        if let Some(row) = reads!(self, r => r.topic_row(name).await)? {
            state.advance(row.last_transaction_id, row.heads.iter().copied());
        }
        Ok(Some(state))
    }

    /// The topic, or NOT_FOUND.
    pub async fn require_topic(&self, name: &TopicName) -> Result<Arc<TopicState>> {
        self.topic(name.as_str())
            .await?
            .ok_or_else(|| HubError::topic_not_found(name.as_str()))
    }

    /// Topics sorted by name: names starting with `prefix`, after `after`.
    pub async fn list_topics(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Arc<TopicState>>> {
        let names = reads!(self, r => r.topic_names(prefix, after, limit).await)?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(t) = self.topic(&name).await? {
                out.push(t);
            }
        }
        Ok(out)
    }
    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> WriteRequest,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(make(tx))
            .await
            .map_err(|_| HubError::Unavailable("the hub is shutting down".into()))?;
        rx.await
            .map_err(|_| HubError::Unavailable("the hub's writer stopped; retry".into()))?
    }

    pub async fn append(
        &self,
        topic: TopicName,
        events: Vec<NewEvent>,
        dedup_by_content: bool,
    ) -> Result<AppendReply> {
        self.write(|reply| WriteRequest::Append {
            topic,
            events,
            dedup_by_content,
            reply,
        })
        .await
    }

    pub async fn create_topic(
        &self,
        topic: TopicName,
        partitions: u32,
    ) -> Result<(Arc<TopicState>, bool)> {
        self.write(|reply| WriteRequest::CreateTopic {
            topic,
            partitions,
            reply,
        })
        .await
    }

    pub async fn invalidate(
        &self,
        topic: TopicName,
        transaction_id: u64,
        reason: String,
    ) -> Result<InvalidateReply> {
        self.write(|reply| WriteRequest::Invalidate {
            topic,
            transaction_id,
            reason,
            reply,
        })
        .await
    }

    /// The transactions of `rows` that are invalidated.
    pub async fn invalidated_in(
        &self,
        topic: &TopicState,
        rows: &[EventRow],
    ) -> Result<HashSet<u64>> {
        let txns = rows.iter().map(|r| r.transaction_id);
        match (txns.clone().min(), txns.max()) {
            (Some(lo), Some(hi)) => reads!(self, r => r.invalidated_between(topic, lo, hi).await),
            _ => Ok(HashSet::new()),
        }
    }

    /// The transactions of a partition page's `rows` that are invalidated,
    /// as of the last transaction this process knows (which bounds the
    /// page, as it bounds the heads).
    ///
    /// Most topics never invalidate anything, so whether a topic has any
    /// invalidation is checked once per transaction known, not per page:
    /// a catch-up read then costs one query a page instead of two. The
    /// check remembers the last transaction known *before* it asked, so
    /// every invalidation it could have missed came later, and moving
    /// `last_transaction_id` past it makes the next call ask again.
    async fn invalidated_in_page(
        &self,
        topic: &TopicState,
        rows: &[EventRow],
    ) -> Result<HashSet<u64>> {
        if rows.is_empty() {
            return Ok(HashSet::new());
        }
        let known = topic.last_transaction();
        let checked = topic.invalidations_checked.load(Ordering::Acquire);
        let any = if known > 0 && checked >> 1 == known {
            checked & 1 == 1
        } else {
            let any = reads!(self, r => r.has_invalidations(topic).await)?;
            // A later check wins; of two at the same transaction, "some" does.
            topic
                .invalidations_checked
                .fetch_max(known << 1 | u64::from(any), Ordering::AcqRel);
            any
        };
        if !any {
            return Ok(HashSet::new());
        }
        self.invalidated_in(topic, rows).await
    }

    /// One page of a partition: its events with `after < sequence <= upto`,
    /// at most `limit`, only of `types` when not empty, with the page's
    /// invalidated transactions; served from the partition's tail in memory
    /// when it holds the event after `after`, else read from the database.
    pub async fn read_page(
        &self,
        topic: &TopicState,
        partition: u32,
        after: u64,
        upto: u64,
        limit: usize,
        types: &[String],
    ) -> Result<PartitionPage> {
        if let Some(page) = topic.tail_page(partition, after, upto, limit, types) {
            return Ok(page);
        }
        let rows =
            reads!(self, r => r.read_partition(topic, partition, after, upto, limit, types).await)?;
        // A page cut by its count or its bytes ends at its last event.
        let full =
            rows.len() == limit || rows.iter().map(EventRow::size).sum::<usize>() > PAGE_BYTES;
        let scanned = match rows.last() {
            Some(last) if full => last.sequence,
            _ => upto,
        };
        let invalidated = self.invalidated_in_page(topic, &rows).await?;
        Ok(PartitionPage {
            rows,
            invalidated,
            scanned,
        })
    }

    /// The topic's last transaction and partition heads, consistently.
    pub async fn snapshot(&self, topic: &TopicState) -> Result<Snapshot> {
        reads!(self, r => r.snapshot(topic).await)
    }

    /// The last sequence of a partition committed at or before `transaction`,
    /// given a `head` of the partition at or after it.
    pub async fn head_as_of(
        &self,
        topic: &TopicState,
        partition: u32,
        transaction: u64,
        head: u64,
    ) -> Result<u64> {
        reads!(self, r => r.head_as_of(topic, partition, transaction, head).await)
    }

    /// One page of the surface as of transaction `as_of`: keys from `from`
    /// (exclusive unless `inclusive`), each with its latest valid event as of
    /// then, tombstoned and not-yet-existing keys left out. Returns the page
    /// and the last key examined (to continue from), `None` at the end.
    pub async fn surface_page(
        &self,
        topic: &TopicState,
        as_of: u64,
        from: &str,
        inclusive: bool,
        limit: usize,
    ) -> Result<(Vec<EventRow>, Option<String>)> {
        reads!(self, r => r.surface_page(topic, as_of, from, inclusive, limit).await)
    }

    /// A key's current version (0 when never written).
    pub async fn key_version(&self, topic: &TopicState, key: &str) -> Result<u64> {
        reads!(self, r => r.key_version(topic, key).await)
    }

    /// Events of one key with `from <= key_version <= upto`, at most `limit`.
    pub async fn read_key(
        &self,
        topic: &TopicState,
        key: &str,
        from: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<EventRow>> {
        reads!(self, r => r.read_key(topic, key, from, upto, limit).await)
    }
}
