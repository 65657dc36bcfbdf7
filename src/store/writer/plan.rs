//! Planning: what a batch of appends (or an invalidation) does to a topic,
//! decided in memory against what the database holds plus what the
//! batch's earlier appends did. Pure logic, no I/O: the writer loads what
//! a [`Draft`] asks for ([`Draft::wanted`], [`Draft::contents_wanted`]),
//! plans every append of the batch, and writes the draft's rows and state.
//!
//! The rules, in the order an event meets them:
//! 1. an event id already stored (or stored by an earlier append of the
//!    batch) makes the event a duplicate:
//!    nothing is stored for it, and the reply points at the stored event;
//! 2. an expected key version that does not hold rejects the whole append:
//!    the draft is left as it was, so the append stores nothing;
//! 3. with dedup by content, an event whose content equals its key's latest
//!    valid event (stored, or planned earlier in the batch) is a duplicate:
//!    A, B, A stores all three, A, A stores one;
//! 4. otherwise the event is stored: the next sequence of the key's
//!    partition and the key's next version, in the append's transaction,
//!    which is the topic's last transaction plus one. An append that
//!    stores nothing takes no transaction id.

use super::key_cache::KeyCache;
use crate::domain::{AppendOutcome, AppendReply, Content, NewEvent, StoredPos};
use crate::error::{HubError, Result};
use crate::validate::{INVALIDATION_TYPE, partition_for};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The writer's hash maps (keys, event ids, positions): foldhash, seeded
/// per process like hashbrown's default (the key cache's `LruCache` uses it
/// too), hashes short keys several times faster than std's SipHash.
pub(crate) type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The latest valid event of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Live {
    pub(crate) partition: u32,
    pub(crate) sequence: u64,
    pub(crate) tombstone: bool,
}

/// A key as of the draft: its version and its latest valid event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyState {
    pub(crate) version: u64,
    pub(crate) live: Option<Live>,
    /// The transaction of this batch that changed the key, if any.
    pub(crate) changed: Option<u64>,
}

/// An event row waiting to be inserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingEvent {
    pub(crate) partition: u32,
    pub(crate) sequence: u64,
    pub(crate) transaction_id: u64,
    pub(crate) key: Option<String>,
    pub(crate) key_version: u64,
    pub(crate) event_id: Option<String>,
    pub(crate) content: Content,
    pub(crate) invalidates: Option<u64>,
}

/// The content, key version and transaction of a stored event, for dedup
/// by content.
pub(crate) type StoredContent = (Content, u64, u64);

/// What planning a batch needs loaded from the database, beyond what the
/// key cache held (see [`Draft::wanted`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Wanted<'a> {
    /// Keys whose states to load (sorted); a key not found has none.
    pub(crate) keys: Vec<&'a str>,
    /// Event ids to look up (sorted).
    pub(crate) ids: Vec<&'a str>,
    /// Keys appended to with dedup by content: once their states are
    /// loaded, their latest valid contents are wanted too
    /// ([`Draft::contents_wanted`]).
    pub(crate) dedup_keys: BTreeSet<&'a str>,
}

/// One topic's state during a batch: what the database holds plus what the
/// batch's accepted appends did.
#[derive(Debug)]
pub(crate) struct Draft {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) partition_count: u32,
    pub(crate) created_at_ms: i64,
    /// The topic's last transaction, with the draft's.
    pub(crate) last_txn: u64,
    /// Every partition's head, with the draft's events.
    pub(crate) heads: Vec<u64>,
    /// Partitions whose heads the draft moved.
    pub(crate) dirty_heads: BTreeSet<u32>,
    /// Key states, loaded or planned.
    pub(crate) keys: Map<String, KeyState>,
    /// Positions of event ids, loaded or planned.
    pub(crate) ids: Map<String, StoredPos>,
    /// Contents of latest valid events, loaded for dedup by content.
    pub(crate) contents: Map<(u32, u64), StoredContent>,
    /// The draft's new events, in the order they were planned.
    pub(crate) rows: Vec<PendingEvent>,
    /// Position in `rows` of each new event, to find its content.
    row_index: Map<(u32, u64), usize>,
}

impl Draft {
    /// A draft extending `last_txn`, with the topic's `heads` as of it.
    pub(crate) fn new(
        id: i64,
        name: String,
        partition_count: u32,
        created_at_ms: i64,
        last_txn: u64,
        heads: Vec<u64>,
    ) -> Self {
        debug_assert_eq!(heads.len(), partition_count as usize);
        Draft {
            id,
            name,
            partition_count,
            created_at_ms,
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

    /// Whether the draft has nothing to write.
    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.dirty_heads.is_empty()
    }

    /// The keys the draft changed, with their new states.
    pub(crate) fn changed_keys(&self) -> Vec<(&String, &KeyState)> {
        self.keys
            .iter()
            .filter(|(_, s)| s.changed.is_some())
            .collect()
    }

    /// The heads the draft moved, as `(partition, head)`.
    pub(crate) fn moved_heads(&self) -> Vec<(u32, u64)> {
        self.dirty_heads
            .iter()
            .map(|&p| (p, self.heads[p as usize]))
            .collect()
    }

    /// Every partition's head, as `(partition, head)`.
    pub(crate) fn all_heads(&self) -> Vec<(u32, u64)> {
        (0..self.partition_count)
            .map(|p| (p, self.heads[p as usize]))
            .collect()
    }

    /// What planning `appends` (each: its events, and whether it dedups by
    /// content) needs loaded. Key states the cache holds are taken from it;
    /// where the cache holds every key of the topic, a key it does not
    /// hold is new and is not looked for either.
    pub(crate) fn wanted<'a>(
        &mut self,
        appends: impl IntoIterator<Item = (&'a [NewEvent], bool)>,
        cache: &mut KeyCache,
    ) -> Wanted<'a> {
        let complete = cache.complete(self.id, self.last_txn);
        let mut keys = BTreeSet::new();
        let mut ids = BTreeSet::new();
        let mut dedup_keys = BTreeSet::new();
        for (events, dedup) in appends {
            for e in events {
                if !self.keys.contains_key(&e.key) {
                    match cache.get(self.id, &e.key) {
                        Some(state) => {
                            self.keys.insert(e.key.clone(), state);
                        }
                        None if complete => {
                            self.keys.insert(e.key.clone(), KeyState::default());
                        }
                        None => {
                            keys.insert(e.key.as_str());
                        }
                    }
                }
                if let Some(id) = &e.event_id
                    && !self.ids.contains_key(id)
                {
                    ids.insert(id.as_str());
                }
                if dedup {
                    dedup_keys.insert(e.key.as_str());
                }
            }
        }
        Wanted {
            keys: keys.into_iter().collect(),
            ids: ids.into_iter().collect(),
            dedup_keys,
        }
    }

    /// After the key states are loaded: the latest valid events of
    /// `dedup_keys` whose contents the draft does not know yet.
    pub(crate) fn contents_wanted(&self, dedup_keys: &BTreeSet<&str>) -> Vec<Live> {
        dedup_keys
            .iter()
            .filter_map(|k| self.keys.get(*k).and_then(|s| s.live))
            .filter(|l| {
                !self.contents.contains_key(&(l.partition, l.sequence))
                    && !self.row_index.contains_key(&(l.partition, l.sequence))
            })
            .collect()
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

    /// Plans one append against the draft (see the module's rules). On
    /// success the draft includes its effects; on error the draft is
    /// unchanged.
    pub(crate) fn plan_append(&mut self, events: &[NewEvent], dedup: bool) -> Result<AppendReply> {
        let txn = self.last_txn + 1;
        let mut keys: Map<&str, KeyState> = Map::default();
        let mut heads: BTreeMap<u32, u64> = BTreeMap::new();
        let mut rows: Vec<PendingEvent> = Vec::new();
        // Position in `rows` of each event this append stores, for dedup.
        let mut row_index: Map<(u32, u64), usize> = Map::default();
        let mut results = Vec::with_capacity(events.len());
        for (i, ev) in events.iter().enumerate() {
            // (An Append never repeats an event id: that is refused at the edge.)
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

    /// Plans the invalidation of `transaction`, whose events are in
    /// `partitions`: a transaction of its own that puts one marker event
    /// (type [`INVALIDATION_TYPE`], the reason as its payload) at the head
    /// of each of those partitions. Returns the markers' transaction and
    /// positions.
    pub(crate) fn plan_invalidation(
        &mut self,
        transaction: u64,
        partitions: &BTreeSet<u32>,
        reason: &str,
    ) -> (u64, Vec<StoredPos>) {
        let marker_txn = self.last_txn + 1;
        self.last_txn = marker_txn;
        let mut markers = Vec::with_capacity(partitions.len());
        for &p in partitions {
            let seq = self.heads[p as usize] + 1;
            self.heads[p as usize] = seq;
            self.dirty_heads.insert(p);
            self.row_index.insert((p, seq), self.rows.len());
            self.rows.push(PendingEvent {
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
        (marker_txn, markers)
    }
}

#[cfg(test)]
mod tests;
