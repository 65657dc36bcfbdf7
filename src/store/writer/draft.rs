//! A topic's draft during a transaction: a [`Draft`] to plan against,
//! started from the topic's row (locked until commit) or from what this
//! process already knows of it, filled with what planning needs from the
//! database, and written in one round trip.

use super::key_cache::KeyCache;
use super::plan::Draft;
use crate::error::Result;
use crate::store::storage::{Conn, TopicWrite, WriteStorage};
use crate::store::{Registry, TopicState};
use std::sync::Arc;

/// What the writer needs to know of a stored topic before locking it.
pub(super) struct TopicMeta {
    pub(super) id: i64,
    pub(super) name: String,
    pub(super) partition_count: u32,
    pub(super) created_at_ms: i64,
    /// The registry's state of the topic, when it has one.
    pub(super) known: Option<Arc<TopicState>>,
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
pub(super) async fn find_topic<B: WriteStorage>(
    conn: &mut Conn<B>,
    topics: &Registry,
    name: &str,
) -> Result<Option<TopicMeta>> {
    if let Some(t) = topics.read().unwrap().get(name) {
        return Ok(Some(TopicMeta::from(t)));
    }
    Ok(B::find_topic(conn, name).await?.map(|t| TopicMeta {
        id: t.id,
        name: name.to_owned(),
        partition_count: t.partition_count,
        created_at_ms: t.created_at_ms,
        known: None,
    }))
}

/// One topic's state during a transaction.
pub(super) struct TopicDraft {
    /// The registry's state of the topic, when it had one at the start.
    pub(super) known: Option<Arc<TopicState>>,
    /// Whether this transaction inserted the topic (an auto-created topic
    /// whose appends were all rejected is removed again before commit).
    pub(super) created: bool,
    pub(super) plan: Draft,
}

impl TopicDraft {
    /// A draft extending `last_txn`, with the topic's `heads` as of it.
    pub(super) fn new(meta: &TopicMeta, created: bool, last_txn: u64, heads: Vec<u64>) -> Self {
        TopicDraft {
            known: meta.known.clone(),
            created,
            plan: Draft::new(
                meta.id,
                meta.name.clone(),
                meta.partition_count,
                meta.created_at_ms,
                last_txn,
                heads,
            ),
        }
    }

    /// Whether the transaction inserted the topic and then stored nothing
    /// in it, so that it removes the topic again.
    pub(super) fn abandoned(&self) -> bool {
        self.created && self.plan.rows.is_empty()
    }

    /// Locks the topic's row until the end of `conn`'s transaction and
    /// starts a draft from its stored last transaction and heads.
    /// `cache` learns whether its entries for the topic are still current.
    pub(super) async fn lock<B: WriteStorage>(
        conn: &mut Conn<B>,
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
            Some(state) if B::SOLE_WRITER && !unsure => {
                let last_txn = state.last_transaction();
                cache.check(meta.id, last_txn);
                (last_txn, registry_heads(state))
            }
            known => {
                let last_txn = B::lock_topic(conn, meta.id).await?;
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
                        let heads = B::heads(conn, meta.id, meta.partition_count).await?;
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

    /// Loads what planning `appends` needs to know from the database: key
    /// states, stored event ids and (for dedup) latest valid contents.
    pub(super) async fn prefetch<'a, B: WriteStorage>(
        &mut self,
        conn: &mut Conn<B>,
        appends: impl IntoIterator<Item = (&'a [crate::domain::NewEvent], bool)>,
        cache: &mut KeyCache,
    ) -> Result<()> {
        if self.created {
            return Ok(());
        }
        let draft = &mut self.plan;
        let wanted = draft.wanted(appends, cache);
        if !wanted.keys.is_empty() {
            draft
                .keys
                .extend(B::load_keys(conn, draft.id, &wanted.keys).await?);
            // Keys never written: version 0, no event.
            for k in &wanted.keys {
                draft.keys.entry((*k).to_owned()).or_default();
            }
        }
        if !wanted.ids.is_empty() {
            draft
                .ids
                .extend(B::load_event_ids(conn, draft.id, &wanted.ids).await?);
        }
        let lives = draft.contents_wanted(&wanted.dedup_keys);
        if !lives.is_empty() {
            draft
                .contents
                .extend(B::load_contents(conn, draft.id, &lives).await?);
        }
        Ok(())
    }

    /// Writes the draft's rows and state in the open transaction, or, with
    /// `planned_after`, in a statement of its own that writes only if the
    /// topic's last transaction is still that one. Returns whether it wrote.
    pub(super) async fn flush<B: WriteStorage>(
        &self,
        conn: &mut Conn<B>,
        now_ms: i64,
        planned_after: Option<u64>,
    ) -> Result<bool> {
        let draft = &self.plan;
        if draft.is_empty() {
            return Ok(true);
        }
        let write = TopicWrite {
            topic_id: draft.id,
            topic: &draft.name,
            last_txn: draft.last_txn,
            now_ms,
            rows: &draft.rows,
            keys: draft.changed_keys(),
            heads: draft.moved_heads(),
            planned_after,
        };
        B::write_topic(conn, &write).await
    }
}
