// The writer task of one hub process, compiled once per backend: `super`
// is `store::sqlite` or `store::postgres`, which names the backend's sqlx
// types (`Db`, `DbConn`) and its `dialect`.
//
// Appends are group-committed: the task takes every Append waiting in its
// queue (up to a bound), plans them one after another in memory against
// the database state plus what the earlier appends of the batch did, writes
// all their rows with a few multi-row statements, and commits once. A
// rejected append contributes nothing, so it stores nothing. Heads are
// published to readers only after the commit, and only then is any append
// acknowledged: acknowledged means durable.
//
// Sequence and transaction ids are assigned under a lock on the topic's row
// (`dialect::LOCK_TOPIC`), taken before the topic's heads are read and held
// until commit. Every writer of a topic, in this process or another one on
// the same database, assigns ids only while holding it, so ids follow commit
// order: a later sequence never becomes visible before an earlier one, and
// a reader that reads up to a head it has seen never skips an event. The
// one exception keeps that order: on PostgreSQL, a writer whose own commit
// was the topic's last assigns ids first and then writes them in one
// statement that takes the lock and writes only if the topic's last
// transaction is still that commit (`Writer::try_append_unlocked`); if it
// is not, nothing is written and the batch is planned again under the lock.
// On SQLite, where the writer task is the file's only writer, such a batch
// (of any size) is written and committed with BEGIN and COMMIT in the same
// script: one hand-off to sqlx's worker thread instead of three.
//
// The writer keeps the states of the keys it wrote or read lately in a
// bounded cache (`KeyCache`), so that a batch reads from the database only
// the keys it has not seen. The cache of a topic is used only while the
// topic's last transaction in the database is the one this writer last
// committed there: if another hub process wrote to the topic meanwhile,
// the topic's entries are dropped. For a topic the writer created, the
// cache holds every key until it drops one to make room, and a key it does
// not hold is new, with nothing to read. When, moreover, that last transaction
// is one this process committed (it then published every partition's
// head), the writer takes the heads from the registry instead of reading
// them. Where the writer task
// is the file's only writer (`dialect::SOLE_WRITER`, SQLite), it need not
// read the topic's row at all.

use super::reads::TOPIC_SELECT;
use super::{Db, DbConn, dialect};
use crate::config::Config;
use crate::error::{HubError, Result};
use crate::store::{
    AppendOutcome, AppendReply, EventRow, InvalidateReply, Registry, StoredPos, TopicRow,
    TopicState, WriteRequest, adopt, registered,
};
use crate::validate::{Content, INVALIDATION_TYPE, NewEvent, TopicName, partition_for};
use hashlink::LruCache;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, Pool, QueryBuilder, Row, Transaction};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// The writer's hash maps (keys, event ids, positions): foldhash, seeded
/// per process like hashbrown's default (the key cache's `LruCache` uses it
/// too), hashes short keys several times faster than std's SipHash.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

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
/// Most events in a batch written without taking the topic's lock first
/// (`Writer::try_append_unlocked`). That saves about 0.1 ms of round trips,
/// which pays for small commits (64 single-event producers on PostgreSQL:
/// 2.85-3.03 -> 3.08-3.38 x one row per transaction); for 1,000 events the
/// guarded statement took 8.95-9.68 ms against 8.05 ms for the write plus
/// 0.7 ms for BEGIN, lock and COMMIT under the lock.
const UNLOCKED_MAX_EVENTS: usize = 256;
/// Rows per multi-row statement (SQLite allows 32,766 bound values).
pub(super) const CHUNK: usize = 1000;
/// Most key states the writer keeps in memory, over all topics (about 100
/// bytes each).
const KEY_CACHE_KEYS: usize = 1 << 18;

/// Committed key states, by topic and key, as of the last transaction this
/// writer committed to each topic.
#[derive(Default)]
struct KeyCache {
    topics: Map<i64, CachedTopic>,
    /// Entries over all topics.
    len: usize,
}

struct CachedTopic {
    /// Whether `entries` are current as of `last_txn`, the last transaction
    /// this writer committed to the topic.
    valid: bool,
    /// Whether `entries` also hold every key the topic has: this writer
    /// created the topic and has dropped none of its entries since. A key
    /// not in them is then new, and need not be looked for in the database.
    complete: bool,
    last_txn: u64,
    entries: LruCache<String, CachedKey>,
}

impl Default for CachedTopic {
    fn default() -> Self {
        CachedTopic {
            valid: false,
            complete: false,
            last_txn: 0,
            // Bounded over all topics by `KeyCache::commit`.
            entries: LruCache::new_unbounded(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct CachedKey {
    version: u64,
    live: Option<Live>,
}

impl KeyCache {
    /// Whether the topic's entries are current, now that its last
    /// transaction in the database is `last_txn`. If they are not (another
    /// process wrote to it, or this writer never did), they are dropped.
    fn check(&mut self, topic: i64, last_txn: u64) -> bool {
        let t = self.topics.entry(topic).or_default();
        if t.valid && t.last_txn == last_txn {
            return true;
        }
        t.valid = false;
        t.complete = false;
        self.len -= t.entries.len();
        t.entries.clear();
        false
    }

    /// Whether every key of the topic is in the cache, as of `last_txn`
    /// (see `CachedTopic::complete`).
    fn complete(&self, topic: i64, last_txn: u64) -> bool {
        self.topics
            .get(&topic)
            .is_some_and(|t| t.valid && t.complete && t.last_txn == last_txn)
    }

    /// After this writer committed the creation of a topic, which has no
    /// keys and no transaction yet.
    fn created(&mut self, topic: i64) {
        let t = self.topics.entry(topic).or_default();
        self.len -= t.entries.len();
        *t = CachedTopic {
            valid: true,
            complete: true,
            ..CachedTopic::default()
        };
    }

    /// Whether the topic's entries are current as of `last_txn`, without
    /// dropping them if not.
    fn current(&self, topic: i64, last_txn: u64) -> bool {
        self.topics
            .get(&topic)
            .is_some_and(|t| t.valid && t.last_txn == last_txn)
    }

    fn get(&mut self, topic: i64, key: &str) -> Option<KeyState> {
        let t = self.topics.get_mut(&topic).filter(|t| t.valid)?;
        let k = t.entries.get(key)?;
        Some(KeyState {
            version: k.version,
            live: k.live,
            changed: None,
        })
    }

    /// After a commit that left the topic's last transaction at `last_txn`:
    /// `keys` are the states of keys as of it. Beyond `KEY_CACHE_KEYS`, the
    /// topic's least recently used keys make room.
    fn commit(
        &mut self,
        topic: i64,
        last_txn: u64,
        keys: impl Iterator<Item = (String, KeyState)>,
    ) {
        let t = self.topics.entry(topic).or_default();
        t.valid = true;
        t.last_txn = last_txn;
        for (key, s) in keys {
            let k = CachedKey {
                version: s.version,
                live: s.live,
            };
            if t.entries.insert(key, k).is_none() {
                self.len += 1;
            }
            if self.len > KEY_CACHE_KEYS && t.entries.remove_lru().is_some() {
                self.len -= 1;
                t.complete = false;
            }
        }
    }

    fn clear(&mut self) {
        *self = KeyCache::default();
    }
}

/// Begins a transaction on the writer's kept connection, acquiring one if
/// it has none: no pool hand-off and no ping per transaction (see
/// `Writer::retry_begin` for a kept connection the database dropped).
async fn begin<'c>(
    conn: &'c mut Option<PoolConnection<Db>>,
    pool: &Pool<Db>,
) -> Result<Transaction<'c, Db>> {
    if conn.is_none() {
        *conn = Some(pool.acquire().await?);
    }
    Ok(conn.as_mut().expect("acquired above").begin().await?)
}

/// The writer task: runs until every sender of `rx` is gone. `pool` is the
/// writer's own; one connection is enough, since the task writes one
/// transaction at a time. `wrote`, when given, is marked after every
/// request the writer handled (SQLite's checkpointer waits on it).
pub(crate) async fn run(
    pool: Pool<Db>,
    rx: mpsc::Receiver<WriteRequest>,
    topics: Registry,
    config: Config,
    wrote: Option<watch::Sender<()>>,
) {
    Writer {
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

/// Whether a failed write lost its connection, rather than hearing the
/// database refuse it (then it rolled back).
fn lost_connection(error: &HubError) -> bool {
    error.is_unavailable() && !matches!(error, HubError::Storage(sqlx::Error::Database(_)))
}

/// Whether PostgreSQL answered that it ended the session (shutting down,
/// restarting after a crash, or an idle session timing out): the backend
/// is gone, so nothing it had not committed will be.
fn session_ended(error: &HubError) -> bool {
    let HubError::Storage(sqlx::Error::Database(db)) = error else {
        return false;
    };
    matches!(db.code().as_deref(), Some("57P01" | "57P02" | "57P05"))
}

/// The answer to an append whose commit failed in a way that leaves it
/// unknown whether it happened (its connection was lost meanwhile, or
/// SQLite could not fsync it).
fn maybe_stored(cause: &dyn std::fmt::Display) -> HubError {
    HubError::MaybeStored(format!(
        "the hub's database is unavailable ({cause}); this happened while the append was being \
         committed, so it may or may not be stored. Read it back before appending it again, or \
         retry with the same event ids (always safe)"
    ))
}

struct Writer {
    pool: Pool<Db>,
    wrote: Option<watch::Sender<()>>,
    /// The connection the writer keeps between transactions (see `begin`).
    conn: Option<PoolConnection<Db>>,
    /// Whether the current request started on a kept connection, and
    /// whether its transaction got past BEGIN (see `retry_begin`).
    kept: bool,
    began: bool,
    topics: Registry,
    config: Config,
    key_cache: KeyCache,
}

struct AppendReq {
    topic: TopicName,
    events: Vec<NewEvent>,
    dedup_by_content: bool,
    reply: oneshot::Sender<Result<AppendReply>>,
}

/// The latest valid event of a key.
#[derive(Debug, Clone, Copy)]
pub(super) struct Live {
    pub(super) partition: u32,
    pub(super) sequence: u64,
    pub(super) tombstone: bool,
}

#[derive(Debug, Clone, Default)]
pub(super) struct KeyState {
    pub(super) version: u64,
    pub(super) live: Option<Live>,
    /// The transaction of this batch that changed the key, if any.
    pub(super) changed: Option<u64>,
}

/// An event row waiting to be inserted.
pub(super) struct PendingEvent {
    pub(super) partition: u32,
    pub(super) sequence: u64,
    pub(super) transaction_id: u64,
    pub(super) key: Option<String>,
    pub(super) key_version: u64,
    pub(super) event_id: Option<String>,
    pub(super) content: Content,
    pub(super) invalidates: Option<u64>,
}

/// What a transaction writes to one topic, in one round trip to the
/// database (`write_topic` of each backend).
pub(super) struct TopicWrite<'a> {
    pub(super) topic_id: i64,
    /// Named in PostgreSQL's notification; SQLite has none.
    #[allow(dead_code)]
    pub(super) topic: &'a str,
    pub(super) last_txn: u64,
    pub(super) now_ms: i64,
    /// New events.
    pub(super) rows: &'a [PendingEvent],
    /// New states of the keys the transaction changed.
    pub(super) keys: &'a [(&'a String, &'a KeyState)],
    /// New heads of the partitions it appended to.
    pub(super) heads: &'a [(u32, u64)],
    /// For a write outside a transaction that holds the topic's lock: the
    /// topic's last transaction the write was planned against. The write
    /// then happens only if that is still the topic's last transaction in
    /// the database, and `write_topic` says whether it did. On SQLite,
    /// whose writer task is the only writer, the write always happens: it
    /// is then its own transaction, begun and committed in the same script
    /// (see `Writer::try_append_unlocked`).
    pub(super) planned_after: Option<u64>,
}

/// One topic's state during a batch: what the database holds plus what the
/// batch's accepted appends did.
struct TopicDraft {
    /// The registry's state of the topic, when it had one at the start.
    known: Option<Arc<TopicState>>,
    id: i64,
    /// Whether this transaction inserted the topic (an auto-created topic
    /// whose appends were all rejected is removed again before commit).
    created: bool,
    name: String,
    partition_count: u32,
    created_at_ms: i64,
    last_txn: u64,
    heads: Vec<u64>,
    dirty_heads: BTreeSet<u32>,
    keys: Map<String, KeyState>,
    ids: Map<String, StoredPos>,
    /// Contents of latest valid events, for dedup by content.
    contents: Map<(u32, u64), (Content, u64, u64)>,
    rows: Vec<PendingEvent>,
    /// Position in `rows` of each new event, to find its content.
    row_index: Map<(u32, u64), usize>,
}

impl TopicDraft {
    /// Locks the topic's row until the end of `conn`'s transaction and
    /// starts a draft from its stored last transaction and heads.
    /// `cache` learns whether its entries for the topic are still current.
    async fn lock(
        conn: &mut DbConn,
        meta: &TopicMeta,
        created: bool,
        cache: &mut KeyCache,
    ) -> Result<Self> {
        let registry_heads =
            |state: &TopicState| (0..meta.partition_count).map(|p| state.head(p)).collect();
        // After a commit whose outcome the writer does not know, the
        // database says where the topic is.
        let unsure = meta.known.as_ref().is_some_and(|s| s.take_unsure());
        let (last_txn, heads) = match &meta.known {
            // The sole writer published everything it committed.
            Some(state) if dialect::SOLE_WRITER && !unsure => {
                let last_txn = state.last_transaction();
                cache.check(meta.id, last_txn);
                (last_txn, registry_heads(state))
            }
            known => {
                let (last_txn,): (i64,) = sqlx::query_as(dialect::LOCK_TOPIC)
                    .bind(meta.id)
                    .fetch_one(&mut *conn)
                    .await?;
                let last_txn = last_txn as u64;
                let current = cache.check(meta.id, last_txn);
                match known {
                    // Nobody else wrote since this writer's last commit,
                    // whose heads it published. (The key cache alone does
                    // not say so: a transaction that only read, after
                    // another process's commit, leaves it current too,
                    // while the heads of that commit may not have reached
                    // the registry yet.)
                    Some(state) if !unsure && current && state.local_transaction() == last_txn => {
                        (last_txn, registry_heads(state))
                    }
                    _ => {
                        if let Some(state) = known {
                            // Another process committed since: it may have
                            // invalidated events the tails hold.
                            state.forget_tails();
                        }
                        let rows: Vec<(i64, i64)> = sqlx::query_as(
                            "SELECT partition, head_sequence FROM partitions WHERE topic_id = $1",
                        )
                        .bind(meta.id)
                        .fetch_all(&mut *conn)
                        .await?;
                        let mut heads = vec![0u64; meta.partition_count as usize];
                        for (p, h) in rows {
                            heads[p as usize] = h as u64;
                        }
                        if let Some(state) = known {
                            // What is committed may be read.
                            state.advance(
                                last_txn,
                                (0..meta.partition_count).zip(heads.iter().copied()),
                            );
                        }
                        (last_txn, heads)
                    }
                }
            }
        };
        Ok(TopicDraft::new(meta, created, last_txn, heads))
    }

    /// A draft extending `last_txn`, with the topic's `heads` as of it.
    fn new(meta: &TopicMeta, created: bool, last_txn: u64, heads: Vec<u64>) -> Self {
        TopicDraft {
            known: meta.known.clone(),
            id: meta.id,
            created,
            name: meta.name.clone(),
            partition_count: meta.partition_count,
            created_at_ms: meta.created_at_ms,
            last_txn,
            heads,
            dirty_heads: BTreeSet::new(),
            keys: Map::default(),
            ids: Map::default(),
            contents: Map::default(),
            rows: Vec::new(),
            row_index: Map::default(),
        }
    }

    fn content_of(&self, partition: u32, sequence: u64) -> Option<(&Content, u64, u64)> {
        if let Some(&i) = self.row_index.get(&(partition, sequence)) {
            let r = &self.rows[i];
            return Some((&r.content, r.key_version, r.transaction_id));
        }
        self.contents
            .get(&(partition, sequence))
            .map(|(c, v, t)| (c, *v, *t))
    }

    /// Plans one append against the draft. On success the draft includes its
    /// effects; on error the draft is unchanged.
    fn plan_append(&mut self, events: &[NewEvent], dedup: bool) -> Result<AppendReply> {
        let txn = self.last_txn + 1;
        let mut keys: Map<&str, KeyState> = Map::default();
        let mut heads: BTreeMap<u32, u64> = BTreeMap::new();
        let mut rows: Vec<PendingEvent> = Vec::new();
        // Position in `rows` of each event this append stores, for dedup.
        let mut row_index: Map<(u32, u64), usize> = Map::default();
        let mut results = Vec::with_capacity(events.len());
        for (i, ev) in events.iter().enumerate() {
            if let Some(pos) = ev.event_id.as_ref().and_then(|id| self.ids.get(id)) {
                results.push((*pos, AppendOutcome::DuplicateEventId));
                continue;
            }
            let ks = keys
                .get(ev.key.as_str())
                .or_else(|| self.keys.get(&ev.key))
                .cloned()
                .unwrap_or_default();
            if !ev.expected.holds(ks.version) {
                return Err(HubError::VersionConflict {
                    key: ev.key.clone(),
                    actual: ks.version,
                    expected: format!(
                        "but events[{i}] {}; nothing was stored",
                        ev.expected.describe()
                    ),
                });
            }
            if dedup && let Some(live) = ks.live {
                let local = row_index
                    .get(&(live.partition, live.sequence))
                    .map(|&i| &rows[i]);
                let stored = match local {
                    Some(r) => Some((&r.content, r.key_version, r.transaction_id)),
                    None => self.content_of(live.partition, live.sequence),
                };
                if let Some((content, key_version, transaction_id)) = stored
                    && *content == ev.content
                {
                    let pos = StoredPos {
                        partition: live.partition,
                        sequence: live.sequence,
                        key_version,
                        transaction_id,
                    };
                    results.push((pos, AppendOutcome::DuplicateContent));
                    continue;
                }
            }
            let partition = partition_for(&ev.key, self.partition_count);
            let head = heads
                .entry(partition)
                .or_insert(self.heads[partition as usize]);
            *head += 1;
            let pos = StoredPos {
                partition,
                sequence: *head,
                key_version: ks.version + 1,
                transaction_id: txn,
            };
            keys.insert(
                &ev.key,
                KeyState {
                    version: pos.key_version,
                    live: Some(Live {
                        partition,
                        sequence: pos.sequence,
                        tombstone: ev.content.tombstone,
                    }),
                    changed: Some(txn),
                },
            );
            row_index.insert((partition, pos.sequence), rows.len());
            rows.push(PendingEvent {
                partition,
                sequence: pos.sequence,
                transaction_id: txn,
                key: Some(ev.key.clone()),
                key_version: pos.key_version,
                event_id: ev.event_id.clone(),
                content: ev.content.clone(),
                invalidates: None,
            });
            results.push((pos, AppendOutcome::Stored));
        }
        if rows.is_empty() {
            return Ok(AppendReply {
                transaction_id: results[0].0.transaction_id,
                results,
            });
        }
        // Accepted: fold the effects into the draft.
        self.last_txn = txn;
        for (p, h) in heads {
            self.heads[p as usize] = h;
            self.dirty_heads.insert(p);
        }
        for (k, s) in keys {
            self.keys.insert(k.to_owned(), s);
        }
        for r in rows {
            if let Some(id) = &r.event_id {
                let pos = StoredPos {
                    partition: r.partition,
                    sequence: r.sequence,
                    key_version: r.key_version,
                    transaction_id: txn,
                };
                self.ids.insert(id.clone(), pos);
            }
            self.row_index
                .insert((r.partition, r.sequence), self.rows.len());
            self.rows.push(r);
        }
        Ok(AppendReply {
            transaction_id: txn,
            results,
        })
    }

    /// Loads what planning `reqs` needs to know from the database: key
    /// states, stored event ids and (for dedup) latest valid contents.
    async fn prefetch(
        &mut self,
        conn: &mut DbConn,
        reqs: &[&AppendReq],
        cache: &mut KeyCache,
    ) -> Result<()> {
        if self.created {
            return Ok(());
        }
        let id = self.id;
        let complete = cache.complete(id, self.last_txn);
        let mut want_keys: BTreeSet<&str> = BTreeSet::new();
        let mut want_ids: BTreeSet<&str> = BTreeSet::new();
        let mut dedup_keys: BTreeSet<&str> = BTreeSet::new();
        for r in reqs {
            for e in &r.events {
                if !self.keys.contains_key(&e.key) {
                    match cache.get(id, &e.key) {
                        Some(state) => {
                            self.keys.insert(e.key.clone(), state);
                        }
                        None if complete => {
                            self.keys.insert(e.key.clone(), KeyState::default());
                        }
                        None => {
                            want_keys.insert(&e.key);
                        }
                    }
                }
                if let Some(eid) = &e.event_id
                    && !self.ids.contains_key(eid)
                {
                    want_ids.insert(eid);
                }
                if r.dedup_by_content {
                    dedup_keys.insert(&e.key);
                }
            }
        }
        let want_keys: Vec<&str> = want_keys.into_iter().collect();
        for chunk in want_keys.chunks(CHUNK) {
            let mut qb = super::select_in(
                "SELECT key, version, live_partition, live_sequence, live_tombstone FROM keys",
                id,
                "key",
                chunk,
            );
            // Not a prepared statement: PostgreSQL would settle on a generic
            // plan made while the table was small (a scan of the whole table,
            // which grows with every key) and keep it.
            for row in qb.build().persistent(false).fetch_all(&mut *conn).await? {
                let key: String = row.try_get("key")?;
                let live = match (
                    row.try_get::<Option<i64>, _>("live_partition")?,
                    row.try_get::<Option<i64>, _>("live_sequence")?,
                ) {
                    (Some(p), Some(s)) => Some(Live {
                        partition: p as u32,
                        sequence: s as u64,
                        tombstone: row.try_get("live_tombstone")?,
                    }),
                    _ => None,
                };
                let version = row.try_get::<i64, _>("version")? as u64;
                self.keys.insert(
                    key,
                    KeyState {
                        version,
                        live,
                        changed: None,
                    },
                );
            }
            for k in chunk {
                self.keys.entry((*k).to_owned()).or_default();
            }
        }
        let want_ids: Vec<&str> = want_ids.into_iter().collect();
        for chunk in want_ids.chunks(CHUNK) {
            let mut qb = super::select_in(
                "SELECT event_id, partition, sequence, key_version, transaction_id FROM events",
                id,
                "event_id",
                chunk,
            );
            for row in qb.build().fetch_all(&mut *conn).await? {
                let pos = StoredPos {
                    partition: row.try_get::<i64, _>("partition")? as u32,
                    sequence: row.try_get::<i64, _>("sequence")? as u64,
                    key_version: row.try_get::<i64, _>("key_version")? as u64,
                    transaction_id: row.try_get::<i64, _>("transaction_id")? as u64,
                };
                self.ids.insert(row.try_get("event_id")?, pos);
            }
        }
        let lives: Vec<Live> = dedup_keys
            .iter()
            .filter_map(|k| self.keys.get(*k).and_then(|s| s.live))
            .filter(|l| {
                !self.contents.contains_key(&(l.partition, l.sequence))
                    && !self.row_index.contains_key(&(l.partition, l.sequence))
            })
            .collect();
        for chunk in lives.chunks(CHUNK) {
            let mut qb = QueryBuilder::<Db>::new(
                "SELECT partition, sequence, key_version, transaction_id, event_type, content_type, headers, payload, tombstone \
                 FROM events WHERE topic_id = ",
            );
            qb.push_bind(id)
                .push(" AND (partition, sequence) IN (VALUES ");
            let mut sep = qb.separated(", ");
            for l in chunk {
                sep.push("(")
                    .push_bind_unseparated(l.partition as i64)
                    .push_unseparated(", ")
                    .push_bind_unseparated(l.sequence as i64)
                    .push_unseparated(")");
            }
            qb.push(")");
            for row in qb.build().fetch_all(&mut *conn).await? {
                let content = Content {
                    event_type: row.try_get("event_type")?,
                    content_type: row.try_get("content_type")?,
                    headers: row.try_get("headers")?,
                    payload: row.try_get("payload")?,
                    tombstone: row.try_get("tombstone")?,
                };
                let key = (
                    row.try_get::<i64, _>("partition")? as u32,
                    row.try_get::<i64, _>("sequence")? as u64,
                );
                let version = row.try_get::<i64, _>("key_version")? as u64;
                let txn = row.try_get::<i64, _>("transaction_id")? as u64;
                self.contents.insert(key, (content, version, txn));
            }
        }
        Ok(())
    }

    /// Writes the draft's rows and state in the open transaction, or, with
    /// `planned_after`, in a statement of its own that writes only if the
    /// topic's last transaction is still that one. Returns whether it wrote.
    async fn flush(
        &mut self,
        conn: &mut DbConn,
        now_ms: i64,
        planned_after: Option<u64>,
    ) -> Result<bool> {
        if self.rows.is_empty() && self.dirty_heads.is_empty() {
            return Ok(true);
        }
        let keys: Vec<(&String, &KeyState)> = self
            .keys
            .iter()
            .filter(|(_, s)| s.changed.is_some())
            .collect();
        let heads: Vec<(u32, u64)> = self
            .dirty_heads
            .iter()
            .map(|&p| (p, self.heads[p as usize]))
            .collect();
        let write = TopicWrite {
            topic_id: self.id,
            topic: &self.name,
            last_txn: self.last_txn,
            now_ms,
            rows: &self.rows,
            keys: &keys,
            heads: &heads,
            planned_after,
        };
        super::write_topic(conn, &write).await
    }

    /// After commit: moves the draft's key states, now committed, into the
    /// cache.
    fn cache_keys(&mut self, cache: &mut KeyCache) {
        if self.created {
            cache.created(self.id);
        }
        cache.commit(self.id, self.last_txn, self.keys.drain());
    }

    /// Before commit: tells the registry which transaction is this
    /// process's own (see `TopicState::committing`).
    fn committing(&self) {
        if let Some(state) = &self.known {
            state.committing(self.last_txn);
        }
    }

    /// After a failed commit: whether or not it happened, it is not known
    /// as this process's own.
    fn not_committed(&self) {
        if let Some(state) = &self.known {
            state.give_up();
        }
    }

    /// After commit: makes the draft's effects visible to readers, handing
    /// its new events (committed at `now_ms`) to the partitions' tails
    /// before the heads move. Every partition's head is published, not
    /// only those this transaction moved: heads read from the database may
    /// include other processes' commits whose notifications have not
    /// arrived yet, and the next transaction takes its heads from the
    /// registry.
    fn publish(&mut self, topics: &Registry, now_ms: i64) {
        let row = TopicRow {
            id: self.id,
            name: self.name.clone(),
            partition_count: self.partition_count,
            created_at_ms: self.created_at_ms,
            last_transaction_id: self.last_txn,
            heads: (0..self.partition_count)
                .map(|p| (p, self.heads[p as usize]))
                .collect(),
        };
        let state = registered(topics, &row);
        state.committing(self.last_txn);
        state.remember(self.rows.drain(..).map(|e| EventRow {
            partition: e.partition,
            sequence: e.sequence,
            transaction_id: e.transaction_id,
            key: e.key,
            key_version: e.key_version,
            event_id: e.event_id,
            content: e.content,
            committed_at_ms: now_ms,
            invalidates: e.invalidates,
        }));
        state.advance(row.last_transaction_id, row.heads.iter().copied());
        state.published();
    }
}

/// What the writer needs to know of a stored topic before locking it.
struct TopicMeta {
    id: i64,
    name: String,
    partition_count: u32,
    created_at_ms: i64,
    /// The registry's state of the topic, when it has one.
    known: Option<Arc<TopicState>>,
}

impl From<&Arc<TopicState>> for TopicMeta {
    fn from(t: &Arc<TopicState>) -> Self {
        TopicMeta {
            id: t.id,
            name: t.name.clone(),
            partition_count: t.partition_count,
            created_at_ms: t.created_at_ms,
            known: Some(t.clone()),
        }
    }
}

/// The stored topic named `name`: from the registry, else from the database
/// (another hub process may have created it).
async fn find_topic(conn: &mut DbConn, topics: &Registry, name: &str) -> Result<Option<TopicMeta>> {
    if let Some(t) = topics.read().unwrap().get(name) {
        return Ok(Some(TopicMeta::from(t)));
    }
    let row: Option<(i64, i64, i64)> = sqlx::query_as(
        "SELECT topic_id, partition_count, created_at_ms FROM topics WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(id, count, created)| TopicMeta {
        id,
        name: name.to_owned(),
        partition_count: count as u32,
        created_at_ms: created,
        known: None,
    }))
}

/// The stored topic with its heads, as the registry wants it.
async fn topic_row(conn: &mut DbConn, id: i64) -> Result<TopicRow> {
    let rows = sqlx::query(&format!(
        "{TOPIC_SELECT} WHERE t.topic_id = $1 ORDER BY p.partition"
    ))
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    super::reads::topic_rows(&rows)?
        .pop()
        .ok_or_else(|| HubError::Unavailable("a topic disappeared while it was read; retry".into()))
}

/// Inserts a topic and its partitions, unless a topic of that name exists
/// (then `None`; on PostgreSQL this waits for a concurrent creator's commit).
async fn insert_topic(
    conn: &mut DbConn,
    name: &str,
    partitions: u32,
    created_at_ms: i64,
) -> Result<Option<i64>> {
    let row: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO topics (name, partition_count, created_at_ms, last_transaction_id) VALUES ($1, $2, $3, 0) \
         ON CONFLICT (name) DO NOTHING RETURNING topic_id",
    )
    .bind(name)
    .bind(partitions as i64)
    .bind(created_at_ms)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((id,)) = row else { return Ok(None) };
    let parts: Vec<i64> = (0..partitions as i64).collect();
    let mut qb =
        QueryBuilder::<Db>::new("INSERT INTO partitions (topic_id, partition, head_sequence) ");
    qb.push_values(&parts, |mut b, p| {
        b.push_bind(id).push_bind(*p).push_bind(0i64);
    });
    qb.build().execute(&mut *conn).await?;
    Ok(Some(id))
}

/// Deletes a topic inserted earlier in the same transaction.
async fn remove_topic(conn: &mut DbConn, id: i64) -> Result<()> {
    sqlx::query("DELETE FROM partitions WHERE topic_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM topics WHERE topic_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Writer {
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
                    let mut n = events.len();
                    let mut bytes = batch_bytes(&events);
                    let mut batch = vec![AppendReq {
                        topic,
                        events,
                        dedup_by_content,
                        reply,
                    }];
                    while batch.len() < MAX_BATCH_APPENDS
                        && n < MAX_BATCH_EVENTS
                        && bytes < MAX_BATCH_BYTES
                    {
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
                                held = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
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
    /// it had ended the session (the write then did not happen:
    /// `committed_anyway` looked). The request may run again on a new
    /// connection; that one is not kept from before, so this happens at
    /// most once. A connection that saw a request fail is never kept
    /// (`discard_conn`).
    fn retry_begin<T>(&mut self, result: &Result<T>) -> bool {
        let Err(e) = result else {
            return false;
        };
        self.discard_conn();
        e.is_unavailable() && self.kept && (!self.began || session_ended(e))
    }

    /// After committing failed with `error`: whether the transaction
    /// committed all the same. When the connection is lost while the
    /// database commits, the commit may have happened; a new connection
    /// looks for the transaction's first event (position, transaction, key,
    /// version, event id, payload and commit time). `Ok(false)` when it is
    /// not there, or when the database answered with an error (it then
    /// rolled back). An error when the database cannot be asked: the
    /// caller then cannot say whether the appends were stored, and says so.
    async fn committed_anyway<'d>(
        &mut self,
        error: &HubError,
        mut drafts: impl Iterator<Item = &'d TopicDraft>,
        now: i64,
    ) -> Result<bool> {
        if !dialect::synced_nothing(error) {
            return Err(maybe_stored(error));
        }
        if !lost_connection(error) && !session_ended(error) {
            return Ok(false);
        }
        // The connection is not to be trusted any more.
        self.discard_conn();
        // A transaction is all or nothing: its first event tells.
        let Some((topic_id, first)) = drafts.find_map(|d| Some((d.id, d.rows.first()?))) else {
            return Ok(false);
        };
        let unknown = |e: &dyn std::fmt::Display| {
            tracing::warn!(error = %e, "cannot tell whether a commit happened");
            maybe_stored(e)
        };
        let mut conn = self.pool.acquire().await.map_err(|e| unknown(&e))?;
        let mut tx = conn.begin().await.map_err(|e| unknown(&e))?;
        if !dialect::SOLE_WRITER {
            // The lost session may still be committing, or still waiting
            // for the topic's row to write (it locks that row until its
            // transaction ends): wait behind it.
            sqlx::query("SET LOCAL lock_timeout = '5s'")
                .execute(&mut *tx)
                .await
                .map_err(|e| unknown(&e))?;
            sqlx::query("SELECT 1 FROM topics WHERE topic_id = $1 FOR SHARE")
                .bind(topic_id)
                .execute(&mut *tx)
                .await
                .map_err(|e| unknown(&e))?;
            // A topic the lost transaction created is invisible to that
            // lock until it commits; an insert at the first event's place
            // waits for whoever is inserting there (rolled back below).
            sqlx::query(
                "INSERT INTO events (topic_id, partition, sequence, transaction_id, key_version, \
                 event_type, content_type, payload, tombstone, committed_at_ms) \
                 VALUES ($1, $2, $3, 0, 0, '', '', $4, false, 0) ON CONFLICT DO NOTHING",
            )
            .bind(topic_id)
            .bind(first.partition as i64)
            .bind(first.sequence as i64)
            .bind(Vec::<u8>::new())
            .execute(&mut *tx)
            .await
            .map_err(|e| unknown(&e))?;
        }
        // transaction_id, key, key_version, event_id, payload, committed_at_ms
        type Found = (i64, Option<String>, i64, Option<String>, Vec<u8>, i64);
        let row: Option<Found> = sqlx::query_as(
            "SELECT transaction_id, key, key_version, event_id, payload, committed_at_ms FROM events \
             WHERE topic_id = $1 AND partition = $2 AND sequence = $3",
        )
        .bind(topic_id)
        .bind(first.partition as i64)
        .bind(first.sequence as i64)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| unknown(&e))?;
        let _ = tx.rollback().await;
        let committed = row.is_some_and(|(t, key, v, id, payload, at)| {
            t as u64 == first.transaction_id
                && key == first.key
                && v as u64 == first.key_version
                && id == first.event_id
                && payload == first.content.payload
                && at == now
        });
        tracing::warn!(error = %error, committed, "the connection was lost while committing; checked whether the commit happened");
        Ok(committed)
    }

    async fn append_batch(&mut self, batch: Vec<AppendReq>) {
        let result = loop {
            let r = self.prepare().try_append_batch(&batch).await;
            if !self.retry_begin(&r) {
                break r;
            }
        };
        if result.is_err() {
            // Whatever happened to the transaction, trust only the database.
            self.key_cache.clear();
        }
        match result {
            Ok(replies) => {
                for (req, r) in batch.into_iter().zip(replies) {
                    let _ = req.reply.send(r);
                }
            }
            Err(e) if batch.len() > 1 && !e.is_unavailable() => {
                // Do not let one bad append fail its neighbours: retry alone.
                tracing::warn!(error = %e, appends = batch.len(), "group commit failed; retrying appends one by one");
                for req in batch {
                    let r = match self.try_append_batch(std::slice::from_ref(&req)).await {
                        Ok(mut r) => r.remove(0),
                        Err(e) => {
                            self.discard_conn();
                            self.key_cache.clear();
                            Err(HubError::not_stored(&e))
                        }
                    };
                    let _ = req.reply.send(r);
                }
            }
            Err(e) => {
                for req in batch {
                    let _ = req.reply.send(Err(HubError::not_stored(&e)));
                }
            }
        }
    }

    /// Plans, writes and commits a batch. The outer error means nothing was
    /// committed; inner errors are per-append rejections.
    async fn try_append_batch(&mut self, batch: &[AppendReq]) -> Result<Vec<Result<AppendReply>>> {
        let now = now_ms();
        if let Some(replies) = self.try_append_unlocked(batch, now).await? {
            return Ok(replies);
        }
        let mut tx = begin(&mut self.conn, &self.pool).await?;
        self.began = true;
        // Topics are locked in name order, so that two hub processes
        // appending to the same topics cannot deadlock.
        let names: BTreeSet<&str> = batch.iter().map(|r| r.topic.as_str()).collect();
        let mut drafts: HashMap<&str, TopicDraft> = HashMap::new();
        for name in names {
            let mut meta = find_topic(&mut tx, &self.topics, name).await?;
            let mut created = false;
            if meta.is_none() && self.config.auto_create_topics {
                let n = self.config.default_partitions;
                if let Some(id) = insert_topic(&mut tx, name, n, now).await? {
                    created = true;
                    meta = Some(TopicMeta {
                        id,
                        name: name.to_owned(),
                        partition_count: n,
                        created_at_ms: now,
                        known: None,
                    });
                } else {
                    // Created meanwhile by another hub process.
                    meta = find_topic(&mut tx, &self.topics, name).await?;
                }
            }
            if let Some(meta) = meta {
                let draft = TopicDraft::lock(&mut tx, &meta, created, &mut self.key_cache).await?;
                drafts.insert(name, draft);
            }
        }
        for (name, draft) in drafts.iter_mut() {
            let reqs: Vec<&AppendReq> =
                batch.iter().filter(|r| r.topic.as_str() == *name).collect();
            draft.prefetch(&mut tx, &reqs, &mut self.key_cache).await?;
        }
        let mut replies = Vec::with_capacity(batch.len());
        for req in batch {
            let r = match drafts.get_mut(req.topic.as_str()) {
                Some(draft) => draft.plan_append(&req.events, req.dedup_by_content),
                None => Err(HubError::NotFound(format!(
                    "topic {:?} does not exist and this hub does not create topics on append; create it with CreateTopic",
                    req.topic.as_str()
                ))),
            };
            replies.push(r);
        }
        for draft in drafts.values_mut() {
            if draft.created && draft.rows.is_empty() {
                // Every append to the new topic was rejected: it changes nothing.
                remove_topic(&mut tx, draft.id).await?;
            } else {
                draft.flush(&mut tx, now, None).await?;
            }
        }
        for draft in drafts.values() {
            if !draft.rows.is_empty() {
                draft.committing();
            }
        }
        if let Err(e) = tx.commit().await {
            let e = HubError::from(e);
            match self.committed_anyway(&e, drafts.values(), now).await {
                Ok(true) => {}
                Ok(false) => {
                    drafts.values().for_each(TopicDraft::not_committed);
                    return Err(e);
                }
                Err(unknown) => {
                    drafts.values().for_each(TopicDraft::not_committed);
                    return Err(unknown);
                }
            }
        }
        for draft in drafts.values_mut() {
            if !(draft.created && draft.rows.is_empty()) {
                draft.cache_keys(&mut self.key_cache);
            }
            if !draft.rows.is_empty() {
                draft.publish(&self.topics, now);
            }
        }
        Ok(replies)
    }

    /// In the steady state of a topic this writer appends to: a batch for
    /// that one topic (on PostgreSQL, of at most `UNLOCKED_MAX_EVENTS`
    /// events), whose
    /// last transaction is, as far as this process knows, the one this
    /// writer committed last, is planned against what the writer kept of
    /// it (the registry's heads, the key cache) and written by one
    /// statement outside any transaction, which writes only if that is
    /// still the topic's last transaction (`TopicWrite::planned_after`).
    /// That saves the round trips of BEGIN, the topic's lock and COMMIT.
    /// On SQLite the batch is written in a transaction of its own, begun and
    /// committed by the same script, so that BEGIN and COMMIT are not
    /// hand-offs of their own to sqlx's worker thread (64 single-event
    /// producers: 23,480 / 26,020 -> 27,059 / 28,388 events/s, alternated).
    /// `None` when the batch does not qualify, or when another process
    /// wrote to the topic meanwhile and nothing was written: the batch is
    /// then planned again under the topic's lock.
    async fn try_append_unlocked(
        &mut self,
        batch: &[AppendReq],
        now: i64,
    ) -> Result<Option<Vec<Result<AppendReply>>>> {
        let Some(first) = batch.first() else {
            return Ok(None);
        };
        let name = first.topic.as_str();
        if batch.iter().any(|r| r.topic.as_str() != name)
            || (!dialect::SOLE_WRITER
                && batch.iter().map(|r| r.events.len()).sum::<usize>() > UNLOCKED_MAX_EVENTS)
        {
            return Ok(None);
        }
        let Some(state) = self.topics.read().unwrap().get(name).cloned() else {
            return Ok(None);
        };
        let last_txn = state.local_transaction();
        if last_txn == 0
            || state.last_transaction() != last_txn
            || !self.key_cache.current(state.id, last_txn)
        {
            return Ok(None);
        }
        let heads = (0..state.partition_count).map(|p| state.head(p)).collect();
        let mut draft = TopicDraft::new(&TopicMeta::from(&state), false, last_txn, heads);
        if self.conn.is_none() {
            self.conn = Some(self.pool.acquire().await?);
        }
        let conn = self.conn.as_mut().expect("acquired above");
        let reqs: Vec<&AppendReq> = batch.iter().collect();
        draft.prefetch(conn, &reqs, &mut self.key_cache).await?;
        let replies: Vec<Result<AppendReply>> = batch
            .iter()
            .map(|r| draft.plan_append(&r.events, r.dedup_by_content))
            .collect();
        if draft.rows.is_empty() {
            // Nothing to write, so nothing would check the state these
            // replies were decided on.
            return Ok(None);
        }
        draft.committing();
        // From here on the request may have written: never run it again.
        self.began = true;
        match draft.flush(conn, now, Some(last_txn)).await {
            Ok(true) => {}
            Ok(false) => {
                draft.not_committed();
                return Ok(None);
            }
            Err(e) => match self
                .committed_anyway(&e, std::iter::once(&draft), now)
                .await
            {
                Ok(true) => {}
                Ok(false) if !dialect::SOLE_WRITER && lost_connection(&e) => {
                    // Unlike a transaction, which holds the topic's row from
                    // its first statement on, the guarded statement locks it
                    // only once it runs: a statement still on its way to
                    // the server when the connection broke may run after
                    // the check found nothing, and commit.
                    draft.not_committed();
                    return Err(maybe_stored(&e));
                }
                Ok(false) => {
                    draft.not_committed();
                    return Err(e);
                }
                Err(unknown) => {
                    draft.not_committed();
                    return Err(unknown);
                }
            },
        }
        draft.cache_keys(&mut self.key_cache);
        draft.publish(&self.topics, now);
        Ok(Some(replies))
    }

    async fn create_topic(
        &mut self,
        topic: &TopicName,
        partitions: u32,
    ) -> Result<(Arc<TopicState>, bool)> {
        let mut tx = begin(&mut self.conn, &self.pool).await?;
        self.began = true;
        let name = topic.as_str();
        let created = match find_topic(&mut tx, &self.topics, name).await? {
            Some(_) => None,
            None => insert_topic(&mut tx, name, partitions, now_ms()).await?,
        };
        let id = match created {
            Some(id) => id,
            None => {
                let meta = find_topic(&mut tx, &self.topics, name)
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
        let row = topic_row(&mut tx, id).await?;
        tx.commit().await?;
        if created.is_some() {
            self.key_cache.created(id);
        }
        Ok((adopt(&self.topics, &row), created.is_some()))
    }

    async fn invalidate(
        &mut self,
        topic: &TopicName,
        transaction: u64,
        reason: &str,
    ) -> Result<InvalidateReply> {
        let mut tx = begin(&mut self.conn, &self.pool).await?;
        self.began = true;
        let Some(state) = find_topic(&mut tx, &self.topics, topic.as_str()).await? else {
            return Err(HubError::topic_not_found(topic.as_str()));
        };
        let mut draft = TopicDraft::lock(&mut tx, &state, false, &mut self.key_cache).await?;
        let last = draft.last_txn;
        let not_found = || {
            HubError::NotFound(format!(
                "transaction {transaction} does not exist in topic {:?} (its transactions are 1 to {last})",
                topic.as_str()
            ))
        };
        if transaction == 0 || transaction > last {
            return Err(not_found());
        }
        let prior: Option<(i64,)> = sqlx::query_as(
            "SELECT marker_transaction_id FROM invalidations WHERE topic_id = $1 AND transaction_id = $2",
        )
        .bind(state.id)
        .bind(transaction as i64)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((marker,)) = prior {
            let rows = sqlx::query(
                "SELECT partition, sequence FROM events WHERE topic_id = $1 AND transaction_id = $2 \
                 ORDER BY partition",
            )
            .bind(state.id)
            .bind(marker)
            .fetch_all(&mut *tx)
            .await?;
            let markers = rows
                .iter()
                .map(|r| {
                    Ok(StoredPos {
                        partition: r.try_get::<i64, _>("partition")? as u32,
                        sequence: r.try_get::<i64, _>("sequence")? as u64,
                        key_version: 0,
                        transaction_id: marker as u64,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            return Ok(InvalidateReply {
                marker_transaction_id: marker as u64,
                markers,
                already_invalidated: true,
            });
        }
        let rows = sqlx::query(
            "SELECT partition, key, invalidates FROM events WHERE topic_id = $1 AND transaction_id = $2",
        )
        .bind(state.id)
        .bind(transaction as i64)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Err(not_found());
        }
        let mut parts = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for r in &rows {
            if r.try_get::<Option<i64>, _>("invalidates")?.is_some() {
                return Err(HubError::invalid(format!(
                    "transaction {transaction} is itself an invalidation; an invalidation cannot be invalidated"
                )));
            }
            parts.insert(r.try_get::<i64, _>("partition")? as u32);
            if let Some(k) = r.try_get::<Option<String>, _>("key")? {
                keys.insert(k);
            }
        }
        let now = now_ms();
        let marker_txn = last + 1;
        draft.last_txn = marker_txn;
        let mut markers = Vec::new();
        for p in parts {
            let seq = draft.heads[p as usize] + 1;
            draft.heads[p as usize] = seq;
            draft.dirty_heads.insert(p);
            draft.rows.push(PendingEvent {
                partition: p,
                sequence: seq,
                transaction_id: marker_txn,
                key: None,
                key_version: 0,
                event_id: None,
                content: Content {
                    event_type: INVALIDATION_TYPE.to_owned(),
                    content_type: "text/plain; charset=utf-8".to_owned(),
                    headers: None,
                    payload: reason.as_bytes().to_vec(),
                    tombstone: false,
                },
                invalidates: Some(transaction),
            });
            markers.push(StoredPos {
                partition: p,
                sequence: seq,
                key_version: 0,
                transaction_id: marker_txn,
            });
        }
        sqlx::query("INSERT INTO invalidations (topic_id, transaction_id, marker_transaction_id, reason) VALUES ($1, $2, $3, $4)")
            .bind(state.id)
            .bind(transaction as i64)
            .bind(marker_txn as i64)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        draft.flush(&mut tx, now, None).await?;
        // Every key of the invalidated transaction falls back to its latest
        // event that is still valid.
        for key in keys {
            let live = sqlx::query(
                "SELECT partition, sequence, tombstone FROM events e WHERE e.topic_id = $1 AND e.key = $2 \
                 AND NOT EXISTS (SELECT 1 FROM invalidations i WHERE i.topic_id = $1 AND i.transaction_id = e.transaction_id) \
                 ORDER BY e.key_version DESC LIMIT 1",
            )
            .bind(state.id)
            .bind(&key)
            .fetch_optional(&mut *tx)
            .await?;
            let (p, s, t) = match &live {
                Some(r) => (
                    Some(r.try_get::<i64, _>("partition")?),
                    Some(r.try_get::<i64, _>("sequence")?),
                    r.try_get::<bool, _>("tombstone")?,
                ),
                None => (None, None, false),
            };
            sqlx::query(
                "UPDATE keys SET live_partition = $1, live_sequence = $2, live_tombstone = $3, changed_transaction_id = $4 \
                 WHERE topic_id = $5 AND key = $6",
            )
            .bind(p)
            .bind(s)
            .bind(t)
            .bind(marker_txn as i64)
            .bind(state.id)
            .bind(&key)
            .execute(&mut *tx)
            .await?;
        }
        draft.committing();
        if let Err(e) = tx.commit().await {
            draft.not_committed();
            return Err(e.into());
        }
        // The tails hold the invalidated events as valid.
        if let Some(state) = &draft.known {
            state.forget_tails();
        }
        draft.publish(&self.topics, now);
        Ok(InvalidateReply {
            marker_transaction_id: marker_txn,
            markers,
            already_invalidated: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(version: u64) -> KeyState {
        KeyState {
            version,
            live: None,
            changed: Some(version),
        }
    }

    /// Only a topic this writer created, as of its last commit there, and
    /// only until one of its keys is dropped, counts a key the cache does
    /// not hold as new.
    #[test]
    fn a_created_topic_knows_its_keys_until_it_drops_one() {
        let mut cache = KeyCache::default();
        assert!(!cache.complete(1, 0), "a topic never seen");
        cache.created(1);
        assert!(cache.complete(1, 0));
        cache.commit(1, 1, [("a".to_owned(), changed(1))].into_iter());
        assert!(cache.complete(1, 1));
        assert!(!cache.complete(1, 0), "only as of the last commit");
        // Another process committed: the entries go, and with them the
        // knowledge that they were all.
        assert!(!cache.check(1, 2));
        cache.commit(1, 3, [("b".to_owned(), changed(1))].into_iter());
        assert!(cache.current(1, 3));
        assert!(!cache.complete(1, 3));
        // A topic whose entries make room for others' is no longer complete.
        cache.created(2);
        cache.commit(
            2,
            1,
            (0..KEY_CACHE_KEYS).map(|i| (format!("k{i}"), changed(1))),
        );
        assert!(!cache.complete(2, 1));
        assert_eq!(cache.len, KEY_CACHE_KEYS);
        cache.created(3);
        cache.clear();
        assert!(!cache.complete(3, 0));
    }
}
