//! The topic registry: every topic this process knows, with its partition
//! heads in `watch` channels and, for partitions someone is reading, the
//! latest events this process committed (the tails).
//!
//! Heads only move forward and only after the commit that made them, so a
//! reader that sees a head can read every event up to it, and a waiting
//! reader is woken by the commit itself rather than by polling. The local
//! writer publishes its own commits (through its commit guard); on
//! PostgreSQL, commits of other hub processes arrive by LISTEN/NOTIFY.
//!
//! A tail holds only events this process committed, one contiguous run per
//! partition, put there by the writer before it moves the heads, so that a
//! follower woken by a commit gets the new events without a query. It is
//! dropped whenever the topic learns of a transaction committed elsewhere
//! (which may have invalidated one of them) and when a transaction is
//! invalidated here.

use super::TopicRow;
use super::writer::Committed;
use crate::domain::{EventRow, PartitionPage};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::watch;

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
    pub(super) invalidations_checked: AtomicU64,
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

impl TopicState {
    pub fn head(&self, partition: u32) -> u64 {
        *self.heads[partition as usize].borrow()
    }
}

pub(crate) type Registry = Arc<RwLock<HashMap<String, Arc<TopicState>>>>;

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
    pub(super) fn new(id: i64, name: String, partition_count: u32, created_at_ms: i64) -> Self {
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

    /// Makes a commit of this process's writer visible to readers, which
    /// only the commit's guard can ask for (`committed` proves the commit
    /// happened): hands its new events to the tails of partitions that
    /// have readers, then moves the last transaction and the heads, then
    /// drops a notification of the commit that came first (see
    /// [`TopicState::defer_own`]).
    pub(crate) fn publish(
        &self,
        committed: &Committed,
        last_transaction: u64,
        heads: &[(u32, u64)],
        rows: impl IntoIterator<Item = EventRow>,
    ) {
        let _ = committed;
        self.committing(last_transaction);
        self.remember(rows);
        self.advance(last_transaction, heads.iter().copied());
        self.deferred.lock().unwrap().take();
    }

    /// Keeps the new events of partitions that have readers.
    fn remember(&self, rows: impl IntoIterator<Item = EventRow>) {
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
    pub(super) fn tail_page(
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
