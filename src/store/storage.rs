//! The storage contract: what the store asks of a database, as three
//! traits that each backend ([`super::sqlite`], [`super::postgres`])
//! provides. The backend is chosen once, when the store opens.
//!
//! - [`Dialect`] is what a backend writes itself: its sqlx database, how it
//!   locks a topic, the one-round-trip write of a transaction's rows, the
//!   fast path of long partition reads, and what it does before looking
//!   for a commit whose outcome a lost connection hid.
//! - [`ReadStorage`] (every read: topics, partitions, invalidations, the
//!   surface, keys) and [`WriteStorage`] (the writer task's statements)
//!   are written once, in `reads.rs` and `writer/sql.rs`, for every
//!   dialect whose sqlx database decodes the schema's types. Their SQL uses
//!   `$N` placeholders, which both databases accept.
//!
//! Every SQL statement of the hub is in one of these three places; an
//! event's columns are listed once ([`EVENT_COLUMNS`]) and decoded once
//! (`reads::event_from_row`, and each backend's long-read parser).

use super::writer::plan::{KeyState, Live, PendingEvent, StoredContent};
use super::{Registry, TopicRow, TopicState};
use crate::domain::{EventRow, Snapshot, StoredPos};
use crate::error::Result;
use sqlx::Pool;
use std::collections::HashSet;
use std::future::Future;

/// An event's columns, in the order every read of events takes them.
pub(crate) const EVENT_COLUMNS: &str = "partition, sequence, transaction_id, key, key_version, event_id, \
     event_type, content_type, headers, payload, tombstone, committed_at_ms, invalidates";

/// The connection type of a backend's database.
pub(crate) type Conn<B> = <<B as Dialect>::Db as sqlx::Database>::Connection;

/// What a transaction writes to one topic, in one round trip to the
/// database ([`Dialect::write_topic`]).
pub(crate) struct TopicWrite<'a> {
    pub(crate) topic_id: i64,
    /// Named in PostgreSQL's notification; SQLite has none.
    pub(crate) topic: &'a str,
    pub(crate) last_txn: u64,
    pub(crate) now_ms: i64,
    /// New events.
    pub(crate) rows: &'a [PendingEvent],
    /// New states of the keys the transaction changed.
    pub(crate) keys: Vec<(&'a String, &'a KeyState)>,
    /// New heads of the partitions it appended to.
    pub(crate) heads: Vec<(u32, u64)>,
    /// For a write outside a transaction that holds the topic's lock: the
    /// topic's last transaction the write was planned against. The write
    /// then happens only if that is still the topic's last transaction in
    /// the database, and `write_topic` says whether it did. On SQLite,
    /// whose writer task is the only writer, the write always happens: it
    /// is then its own transaction, begun and committed in the same script
    /// (see the writer's unlocked path).
    pub(crate) planned_after: Option<u64>,
}

/// What a backend writes itself.
pub(crate) trait Dialect: Clone + Send + Sync + Sized + 'static {
    /// The sqlx database.
    type Db: sqlx::Database;

    /// Reads the topic's last transaction (`$1`: topic id) and, where other
    /// processes may write, locks the topic's row until commit: every
    /// writer of the topic queues there before reading the heads it extends.
    const LOCK_TOPIC: &'static str;

    /// Whether the writer task is the database's only writer: what it
    /// committed and published is then all there is.
    const SOLE_WRITER: bool;

    /// Rows per multi-row statement or lookup (SQLite allows 32,766 bound
    /// values in one statement).
    const CHUNK: usize = 1000;

    /// The pool that reads use.
    fn pool(&self) -> &Pool<Self::Db>;

    /// The rows of `<select> WHERE topic_id = <id> AND <column> IN
    /// <values>`, prepared (and cached) as a statement or not.
    fn select_in(
        conn: &mut Conn<Self>,
        select: &str,
        id: i64,
        column: &str,
        values: &[&str],
        prepared: bool,
    ) -> impl Future<Output = Result<Vec<<Self::Db as sqlx::Database>::Row>>> + Send;

    /// Writes a topic's events, keys, heads and last transaction; returns
    /// whether it wrote, which only a guarded write
    /// ([`TopicWrite::planned_after`]) may not have.
    fn write_topic(
        conn: &mut Conn<Self>,
        write: &TopicWrite<'_>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// A long read of a partition by the backend's fastest means, or `None`
    /// to leave it to [`ReadStorage::read_partition`]'s `SELECT`. Same
    /// arguments and page limits as that.
    fn bulk_read(
        &self,
        topic_id: i64,
        partition: u32,
        after: u64,
        upto: u64,
        limit: usize,
        types: &[String],
    ) -> impl Future<Output = Result<Option<Vec<EventRow>>>> + Send;

    /// Before looking, on a new connection in a transaction of its own,
    /// for the first event of a commit whose connection was lost: waits
    /// until a session that may still be committing it is done. A backend
    /// whose writer is the only writer has nothing to wait for.
    fn wait_for_lost_commit(
        conn: &mut Conn<Self>,
        topic_id: i64,
        first: &PendingEvent,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// Every read of the store, on the backend's pool.
pub(crate) trait ReadStorage: Dialect {
    /// The stored topic named `name`, with its heads.
    fn topic_row(&self, name: &str) -> impl Future<Output = Result<Option<TopicRow>>> + Send;

    /// Loads every stored topic into the registry, advancing the heads of
    /// those already there.
    fn adopt_all(&self, topics: &Registry) -> impl Future<Output = Result<()>> + Send;

    /// Names of topics starting with `prefix` and sorting after `after`.
    fn topic_names(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Closes the pool's connections, waiting for those in use.
    fn close(&self) -> impl Future<Output = ()> + Send;

    /// The events of a partition with `after < sequence <= upto`, in order:
    /// at most `limit`, only of `types` unless it is empty, and none after
    /// the first that takes the page past [`super::PAGE_BYTES`].
    fn read_partition(
        &self,
        topic: &TopicState,
        partition: u32,
        after: u64,
        upto: u64,
        limit: usize,
        types: &[String],
    ) -> impl Future<Output = Result<Vec<EventRow>>> + Send;

    /// Whether any transaction of the topic is invalidated.
    fn has_invalidations(&self, topic: &TopicState) -> impl Future<Output = Result<bool>> + Send;

    /// The invalidated transactions of the topic from `min` to `max`.
    fn invalidated_between(
        &self,
        topic: &TopicState,
        min: u64,
        max: u64,
    ) -> impl Future<Output = Result<HashSet<u64>>> + Send;

    /// The topic's last transaction and heads, in one snapshot.
    fn snapshot(&self, topic: &TopicState) -> impl Future<Output = Result<Snapshot>> + Send;

    /// The last sequence of a partition committed at or before
    /// `transaction`, given a `head` at or after it.
    fn head_as_of(
        &self,
        topic: &TopicState,
        partition: u32,
        transaction: u64,
        head: u64,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// One page of the surface as of `as_of`, and the last key examined
    /// when there may be more (see `Store::surface_page`).
    fn surface_page(
        &self,
        topic: &TopicState,
        as_of: u64,
        from: &str,
        inclusive: bool,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<EventRow>, Option<String>)>> + Send;

    /// The latest event of `key` committed at or before `as_of` whose
    /// transaction was not invalidated at or before `as_of`.
    fn key_as_of(
        &self,
        topic: &TopicState,
        key: &str,
        as_of: u64,
    ) -> impl Future<Output = Result<Option<EventRow>>> + Send;

    /// A key's current version (0 when never written).
    fn key_version(
        &self,
        topic: &TopicState,
        key: &str,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Events of one key with `from <= key_version <= upto`, at most `limit`.
    fn read_key(
        &self,
        topic: &TopicState,
        key: &str,
        from: u64,
        upto: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<EventRow>>> + Send;
}

/// A stored topic as the writer first finds it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FoundTopic {
    pub(crate) id: i64,
    pub(crate) partition_count: u32,
    pub(crate) created_at_ms: i64,
}

/// An event of a transaction about to be invalidated.
#[derive(Debug)]
pub(crate) struct TransactionEvent {
    pub(crate) partition: u32,
    pub(crate) key: Option<String>,
    /// Set when the event is itself an invalidation marker.
    pub(crate) invalidates: Option<u64>,
}

/// The writer task's statements, on its connection (in its transaction).
pub(crate) trait WriteStorage: Dialect {
    /// The topic named `name`, if stored.
    fn find_topic(
        conn: &mut Conn<Self>,
        name: &str,
    ) -> impl Future<Output = Result<Option<FoundTopic>>> + Send;

    /// The stored topic with its heads, as the registry wants it.
    fn topic_by_id(conn: &mut Conn<Self>, id: i64)
    -> impl Future<Output = Result<TopicRow>> + Send;

    /// Inserts a topic and its partitions, unless a topic of that name
    /// exists (then `None`; on PostgreSQL this waits for a concurrent
    /// creator's commit).
    fn insert_topic(
        conn: &mut Conn<Self>,
        name: &str,
        partitions: u32,
        created_at_ms: i64,
    ) -> impl Future<Output = Result<Option<i64>>> + Send;

    /// Deletes a topic inserted earlier in the same transaction.
    fn remove_topic(conn: &mut Conn<Self>, id: i64) -> impl Future<Output = Result<()>> + Send;

    /// The topic's last transaction, read with [`Dialect::LOCK_TOPIC`].
    fn lock_topic(conn: &mut Conn<Self>, id: i64) -> impl Future<Output = Result<u64>> + Send;

    /// Every partition's head.
    fn heads(
        conn: &mut Conn<Self>,
        id: i64,
        partition_count: u32,
    ) -> impl Future<Output = Result<Vec<u64>>> + Send;

    /// The states of those of `keys` that are stored (a key never written
    /// is not in the answer).
    fn load_keys(
        conn: &mut Conn<Self>,
        id: i64,
        keys: &[&str],
    ) -> impl Future<Output = Result<Vec<(String, KeyState)>>> + Send;

    /// Where the stored events with these ids are.
    fn load_event_ids(
        conn: &mut Conn<Self>,
        id: i64,
        ids: &[&str],
    ) -> impl Future<Output = Result<Vec<(String, StoredPos)>>> + Send;

    /// The contents of the events at `lives`, by position.
    fn load_contents(
        conn: &mut Conn<Self>,
        id: i64,
        lives: &[Live],
    ) -> impl Future<Output = Result<Vec<((u32, u64), StoredContent)>>> + Send;

    /// Whether `first`, the first event of a transaction committed at
    /// `now_ms`, is stored as written (position, transaction, key,
    /// version, event id, payload and commit time).
    fn stored_as_written(
        conn: &mut Conn<Self>,
        topic_id: i64,
        first: &PendingEvent,
        now_ms: i64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The marker transaction of `transaction`'s invalidation, if it has one.
    fn invalidation_of(
        conn: &mut Conn<Self>,
        id: i64,
        transaction: u64,
    ) -> impl Future<Output = Result<Option<u64>>> + Send;

    /// The positions of a transaction's events, by partition.
    fn positions_of(
        conn: &mut Conn<Self>,
        id: i64,
        transaction: u64,
    ) -> impl Future<Output = Result<Vec<StoredPos>>> + Send;

    /// The events of a transaction.
    fn events_of(
        conn: &mut Conn<Self>,
        id: i64,
        transaction: u64,
    ) -> impl Future<Output = Result<Vec<TransactionEvent>>> + Send;

    /// Records that `marker` invalidates `transaction`.
    fn insert_invalidation(
        conn: &mut Conn<Self>,
        id: i64,
        transaction: u64,
        marker: u64,
        reason: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Points `key` back at its latest event that is still valid (or at
    /// none), as changed by `marker`.
    fn fall_back(
        conn: &mut Conn<Self>,
        id: i64,
        key: &str,
        marker: u64,
    ) -> impl Future<Output = Result<()>> + Send;
}
