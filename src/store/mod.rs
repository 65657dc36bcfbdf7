//! Storage: the topic registry, reads on a connection pool, and one writer
//! task per hub process that group-commits appends (see `backend/writer.rs`).
//!
//! Two backends share one implementation: `backend/reads.rs` and
//! `backend/writer.rs` are compiled once per backend, in [`sqlite`] and
//! [`postgres`], against that backend's concrete sqlx types, with the few
//! SQL differences in each backend's `dialect` module. The SQL is written
//! once, with `$N` placeholders, which both backends accept.
//!
//! The registry keeps every topic's partition heads in `watch` channels.
//! Heads only move forward and only after the commit that made them, so a
//! reader that sees a head can read every event up to it, and a waiting
//! reader is woken by the commit itself rather than by polling. The local
//! writer publishes its own commits; on PostgreSQL, commits of other hub
//! processes arrive by LISTEN/NOTIFY (see [`postgres`]).
//!
//! Partitions that someone is reading also keep their latest committed
//! events in memory ([`TopicState`]'s tails), put there by the local writer
//! before it moves the heads, so that a follower woken by a commit gets the
//! new events without a query. A tail holds only events this process
//! committed, one contiguous run per partition; it is dropped whenever the
//! topic learns of a transaction committed elsewhere (which may have
//! invalidated one of them) and when a transaction is invalidated here.

mod pg_copy;
mod postgres;
mod sqlite;
mod sqlite_rows;

use crate::config::Config;
use crate::error::{HubError, Result};
use crate::validate::{Content, NewEvent, TopicName};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
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

/// An event's columns, in the order the long reads (`pg_copy`,
/// `sqlite_rows`) take them; `reads::EVENT_COLUMNS` is the same list
/// qualified by the table, for queries that join.
const EVENT_COLUMNS: &str = "partition, sequence, transaction_id, key, key_version, event_id, \
     event_type, content_type, headers, payload, tombstone, committed_at_ms, invalidates";

/// Where a stored event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredPos {
    pub partition: u32,
    pub sequence: u64,
    pub key_version: u64,
    pub transaction_id: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    Stored,
    DuplicateEventId,
    DuplicateContent,
}

#[derive(Debug)]
pub struct AppendReply {
    pub transaction_id: u64,
    pub results: Vec<(StoredPos, AppendOutcome)>,
}

#[derive(Debug)]
pub struct InvalidateReply {
    pub marker_transaction_id: u64,
    pub markers: Vec<StoredPos>,
    pub already_invalidated: bool,
}

/// A topic as the running hub knows it.
#[derive(Debug)]
pub struct TopicState {
    pub id: i64,
    pub name: String,
    pub partition_count: u32,
    pub created_at_ms: i64,
    /// Last committed transaction id known to this process; only grows.
    pub last_transaction_id: AtomicU64,
    /// Per partition, the last committed sequence known to this process;
    /// only grows, and readers subscribe to wait for it.
    pub heads: Vec<watch::Sender<u64>>,
    /// The transaction this process's writer is committing or committed
    /// last: a head notification bringing it is not news from elsewhere.
    local_transaction_id: AtomicU64,
    /// Per partition, the latest events this process committed, while the
    /// partition has readers.
    tails: Vec<Mutex<Tail>>,
    /// Whether the topic has invalidated transactions, as last checked:
    /// `(last transaction known before the check << 1) | any`, 0 if never
    /// checked. See [`Store::invalidated_in_page`].
    invalidations_checked: AtomicU64,
    /// The last transaction and heads of this process's own commit, when
    /// its notification came before the writer published the commit
    /// itself (see [`TopicState::defer_own`]).
    deferred: Mutex<Option<Heads>>,
    /// Set when this process's writer does not know whether its last
    /// commit to the topic happened: its next transaction reads the topic's
    /// last transaction and heads from the database, even where the writer
    /// is the database's only writer.
    unsure: AtomicBool,
}

/// A last transaction and the `(partition, head)` pairs it brought.
type Heads = (u64, Vec<(u32, u64)>);

/// Most events a partition's tail keeps.
const TAIL_EVENTS: usize = 1024;
/// Most bytes (as [`EventRow::size`] counts them) a partition's tail keeps.
const TAIL_BYTES: usize = 256 << 10;

/// A contiguous run of a partition's latest committed events: `events[i]`
/// has sequence `first + i`.
#[derive(Debug, Default)]
struct Tail {
    first: u64,
    events: VecDeque<EventRow>,
    bytes: usize,
}

impl Tail {
    fn clear(&mut self) {
        self.events.clear();
        self.bytes = 0;
    }

    fn push(&mut self, row: EventRow) {
        if self.first + self.events.len() as u64 != row.sequence {
            self.clear();
            self.first = row.sequence;
        }
        self.bytes += row.size();
        self.events.push_back(row);
        while self.events.len() > TAIL_EVENTS || self.bytes > TAIL_BYTES {
            let old = self
                .events
                .pop_front()
                .expect("not empty while over a bound");
            self.bytes -= old.size();
            self.first += 1;
        }
    }
}

/// One page of a partition, read by [`Store::read_page`].
#[derive(Debug)]
pub struct PartitionPage {
    /// Events in sequence order.
    pub rows: Vec<EventRow>,
    /// The transactions of `rows` that are invalidated.
    pub invalidated: HashSet<u64>,
    /// Every event up to this sequence that the read asked for is in
    /// `rows` (or came before `after`).
    pub scanned: u64,
}

impl TopicState {
    pub fn head(&self, partition: u32) -> u64 {
        *self.heads[partition as usize].borrow()
    }
}

pub(crate) type Registry = Arc<RwLock<HashMap<String, Arc<TopicState>>>>;

/// A stored event as read from the log.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub partition: u32,
    pub sequence: u64,
    pub transaction_id: u64,
    pub key: Option<String>,
    pub key_version: u64,
    pub event_id: Option<String>,
    pub content: Content,
    pub committed_at_ms: i64,
    /// For invalidation markers: the invalidated transaction.
    pub invalidates: Option<u64>,
}

impl EventRow {
    /// Approximate encoded size, for bounding pages.
    pub fn size(&self) -> usize {
        let c = &self.content;
        64 + c.payload.len()
            + c.headers.as_ref().map_or(0, Vec::len)
            + c.event_type.len()
            + c.content_type.len()
            + self.key.as_ref().map_or(0, String::len)
            + self.event_id.as_ref().map_or(0, String::len)
    }
}

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

/// Partition heads and last transaction read together, in one snapshot.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub last_transaction_id: u64,
    pub heads: Vec<u64>,
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
    Sqlite(sqlite::Reads),
    Postgres(postgres::Reads),
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

/// The registry's state for `row`: the one already there, or a new one.
/// Either way it is advanced to the heads in `row`.
pub(crate) fn adopt(topics: &Registry, row: &TopicRow) -> Arc<TopicState> {
    let state = registered(topics, row);
    state.advance(row.last_transaction_id, row.heads.iter().copied());
    state
}

/// The registry's state for `row`'s topic: the one already there, or a
/// new one at no heads.
pub(crate) fn registered(topics: &Registry, row: &TopicRow) -> Arc<TopicState> {
    if let Some(state) = topics.read().unwrap().get(&row.name) {
        return state.clone();
    }
    let mut map = topics.write().unwrap();
    map.entry(row.name.clone())
        .or_insert_with(|| {
            Arc::new(TopicState::new(
                row.id,
                row.name.clone(),
                row.partition_count,
                row.created_at_ms,
            ))
        })
        .clone()
}

impl TopicState {
    fn new(id: i64, name: String, partition_count: u32, created_at_ms: i64) -> Self {
        TopicState {
            id,
            name,
            partition_count,
            created_at_ms,
            last_transaction_id: AtomicU64::new(0),
            heads: (0..partition_count).map(|_| watch::channel(0).0).collect(),
            local_transaction_id: AtomicU64::new(0),
            tails: (0..partition_count).map(|_| Mutex::default()).collect(),
            invalidations_checked: AtomicU64::new(0),
            deferred: Mutex::default(),
            unsure: AtomicBool::new(false),
        }
    }

    pub fn last_transaction(&self) -> u64 {
        self.last_transaction_id.load(Ordering::Acquire)
    }

    /// The last transaction this process's writer committed to the topic
    /// (0 if none, or if its last commit failed).
    pub fn local_transaction(&self) -> u64 {
        self.local_transaction_id.load(Ordering::Acquire)
    }

    /// Moves the last transaction and the given partition heads forward
    /// (never back), waking the readers of every partition that moved. When
    /// this brings a transaction that this process's writer did not commit,
    /// the tails are dropped first: that transaction may have invalidated
    /// one of theirs.
    pub(crate) fn advance(
        &self,
        last_transaction: u64,
        heads: impl IntoIterator<Item = (u32, u64)>,
    ) {
        if last_transaction > self.last_transaction()
            && last_transaction != self.local_transaction()
        {
            self.forget_tails();
        }
        self.last_transaction_id
            .fetch_max(last_transaction, Ordering::AcqRel);
        for (p, h) in heads {
            if let Some(tx) = self.heads.get(p as usize) {
                tx.send_if_modified(|cur| {
                    let moved = h > *cur;
                    if moved {
                        *cur = h;
                    }
                    moved
                });
            }
        }
    }
}

impl TopicState {
    /// Called by this process's writer before it commits `transaction`, so
    /// that its own head notification is not taken for news from elsewhere.
    pub(crate) fn committing(&self, transaction: u64) {
        self.local_transaction_id
            .store(transaction, Ordering::Release);
    }

    /// Called by this process's writer after it committed `transaction`
    /// (announced with [`TopicState::committing`]) and before it advances
    /// the heads: keeps the new events of partitions that have readers.
    pub(crate) fn remember(&self, rows: impl IntoIterator<Item = EventRow>) {
        for row in rows {
            let p = row.partition as usize;
            let (Some(tail), Some(head)) = (self.tails.get(p), self.heads.get(p)) else {
                continue;
            };
            let mut tail = tail.lock().unwrap();
            if head.receiver_count() == 0 {
                tail.clear();
            } else {
                tail.push(row);
            }
        }
    }

    /// A notification of `last`, sent by this process's own commit, that
    /// came before the writer published that commit: moving the heads now
    /// would send the readers to the database for events the writer is
    /// about to hand to the tails. Keeps the heads for the writer instead
    /// and returns true, unless the writer already published `last` or
    /// gave it up ([`TopicState::give_up`]).
    pub(crate) fn defer_own(&self, last: u64, heads: Vec<(u32, u64)>) -> bool {
        let mut deferred = self.deferred.lock().unwrap();
        if last > self.last_transaction() && last == self.local_transaction() {
            match deferred.as_mut() {
                // A commit of many partitions is notified in several parts.
                Some((kept, kept_heads)) if *kept == last => kept_heads.extend(heads),
                _ => *deferred = Some((last, heads)),
            }
            return true;
        }
        false
    }

    /// Called by this process's writer after it published its commit.
    pub(crate) fn published(&self) {
        self.deferred.lock().unwrap().take();
    }

    /// Called by this process's writer when it does not know whether its
    /// commit happened: the commit is no longer its own, and if its
    /// notification came meanwhile (so it did happen), the heads move.
    pub(crate) fn give_up(&self) {
        self.unsure.store(true, Ordering::Release);
        let deferred = {
            let mut deferred = self.deferred.lock().unwrap();
            self.committing(0);
            deferred.take()
        };
        self.forget_tails();
        if let Some((last, heads)) = deferred {
            self.advance(last, heads);
        }
    }

    /// Whether a commit of this process's writer may have happened without
    /// the registry knowing (see [`TopicState::give_up`]); clears the mark.
    pub(crate) fn take_unsure(&self) -> bool {
        self.unsure.swap(false, Ordering::AcqRel)
    }

    /// Drops every partition's tail (the next reads go to the database).
    pub(crate) fn forget_tails(&self) {
        for tail in &self.tails {
            tail.lock().unwrap().clear();
        }
    }

    /// The events with `after < sequence <= upto` (at most `limit`, only of
    /// `types` when not empty) from the partition's tail, if it holds the
    /// event after `after`.
    fn tail_page(
        &self,
        partition: u32,
        after: u64,
        upto: u64,
        limit: usize,
        types: &[String],
    ) -> Option<PartitionPage> {
        let tail = self.tails.get(partition as usize)?.lock().unwrap();
        let skip = after.checked_add(1)?.checked_sub(tail.first)? as usize;
        if skip >= tail.events.len() {
            return None;
        }
        let last = tail.first + tail.events.len() as u64 - 1;
        let mut scanned = upto.min(last);
        let mut rows = Vec::new();
        for row in tail.events.iter().skip(skip) {
            if row.sequence > scanned {
                break;
            }
            if types.is_empty() || types.contains(&row.content.event_type) {
                rows.push(row.clone());
                if rows.len() == limit {
                    scanned = row.sequence;
                    break;
                }
            }
        }
        Some(PartitionPage {
            rows,
            invalidated: HashSet::new(),
            scanned,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::TopicState;

    /// A commit of 400 partitions is notified in two parts; both arrive
    /// before its writer gives the commit up, and every head moves.
    #[test]
    fn a_deferred_commit_keeps_every_part_of_its_notification() {
        let state = TopicState::new(1, "t".into(), 400, 0);
        state.committing(1);
        assert!(state.defer_own(1, (0..200).map(|p| (p, 1)).collect()));
        assert!(state.defer_own(1, (200..400).map(|p| (p, 1)).collect()));
        assert_eq!(state.head(399), 0, "deferred, not yet published");
        state.give_up();
        assert!((0..400).all(|p| state.head(p) == 1));
        assert_eq!(state.last_transaction(), 1);
    }
}
