//! The writer's cache of committed key states, so that a batch reads from
//! the database only the keys it has not seen.
//!
//! The cache of a topic is used only while the topic's last transaction in
//! the database is the one this writer last committed there: if another
//! hub process wrote to the topic meanwhile, the topic's entries are
//! dropped. For a topic the writer created, the cache holds every key until
//! it drops one to make room, and a key it does not hold is new, with
//! nothing to read.

use super::plan::{KeyState, Live, Map};
use hashlink::LruCache;

/// Most key states the writer keeps in memory, over all topics (about 100
/// bytes each).
const KEY_CACHE_KEYS: usize = 1 << 18;

/// Committed key states, by topic and key, as of the last transaction this
/// writer committed to each topic.
#[derive(Default)]
pub(crate) struct KeyCache {
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
    pub(crate) fn check(&mut self, topic: i64, last_txn: u64) -> bool {
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
    pub(crate) fn complete(&self, topic: i64, last_txn: u64) -> bool {
        self.topics
            .get(&topic)
            .is_some_and(|t| t.valid && t.complete && t.last_txn == last_txn)
    }

    /// After this writer committed the creation of a topic, which has no
    /// keys and no transaction yet.
    pub(crate) fn created(&mut self, topic: i64) {
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
    pub(crate) fn current(&self, topic: i64, last_txn: u64) -> bool {
        self.topics
            .get(&topic)
            .is_some_and(|t| t.valid && t.last_txn == last_txn)
    }

    pub(crate) fn get(&mut self, topic: i64, key: &str) -> Option<KeyState> {
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
    pub(crate) fn commit(
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

    pub(crate) fn clear(&mut self) {
        *self = KeyCache::default();
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
