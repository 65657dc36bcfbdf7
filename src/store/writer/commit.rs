//! The one commit pipeline: tell the registry a commit is this process's
//! own, commit (or write in a statement that commits itself), find out
//! whether a commit whose connection was lost happened, and only then
//! publish. Every path of the writer commits through [`Writer::settle`].
//!
//! The order is in the types: the registry hands a commit's events and
//! heads to readers only given a [`Committed`] proof, which only
//! [`Committing::committed`] makes, and a [`Committing`] is made only by
//! telling the registry the commit is this process's own. So readers
//! cannot be handed events that are not known to be committed, nor before
//! the registry was told whose commit it is.

use super::Writer;
use super::draft::TopicDraft;
use super::key_cache::KeyCache;
use super::plan::PendingEvent;
use crate::domain::EventRow;
use crate::error::{HubError, Result};
use crate::store::storage::WriteStorage;
use crate::store::{Registry, TopicRow, registered};
use sqlx::Connection;

/// The drafts of a transaction on its way to commit. Made by
/// [`Committing::start`], which tells the registry the commit is this
/// process's own; resolved by [`Committing::committed`] (the only way to
/// publish the drafts) or by [`Committing::failed`]. Dropped unresolved
/// (an error in between), it counts as failed.
#[must_use = "a commit must be resolved: published when it happened, given up otherwise"]
pub(super) struct Committing<'d> {
    drafts: Vec<&'d mut TopicDraft>,
    resolved: bool,
}

/// Proof that a transaction of this process's writer committed: the
/// registry publishes a commit ([`TopicState::publish`]) only with one, and
/// only [`Committing::committed`] makes one.
///
/// [`TopicState::publish`]: crate::store::TopicState::publish
pub(crate) struct Committed {
    _made_by_committing: (),
}

#[cfg(test)]
impl Committed {
    /// For tests of the registry that play the writer's part.
    pub(crate) fn assumed() -> Self {
        Committed {
            _made_by_committing: (),
        }
    }
}

/// How a commit ended.
pub(super) enum Settled {
    /// Committed and published.
    Committed,
    /// A guarded write found that another process wrote first: nothing was
    /// written (plan again under the lock).
    Superseded,
}

impl<'d> Committing<'d> {
    /// Before commit: tells the registry which transaction of each topic
    /// the drafts write is this process's own (see
    /// `TopicState::committing`).
    pub(super) fn start(drafts: impl IntoIterator<Item = &'d mut TopicDraft>) -> Self {
        let drafts: Vec<&'d mut TopicDraft> = drafts.into_iter().collect();
        for d in &drafts {
            if let Some(state) = &d.known
                && !d.plan.rows.is_empty()
            {
                state.committing(d.plan.last_txn);
            }
        }
        Committing {
            drafts,
            resolved: false,
        }
    }

    /// The drafts, to write them.
    pub(super) fn drafts(&self) -> impl Iterator<Item = &TopicDraft> {
        self.drafts.iter().map(|d| &**d)
    }

    /// The first event the transaction writes, and its topic: a
    /// transaction is all or nothing, so that event tells whether it
    /// committed.
    fn first_event(&self) -> Option<(i64, &PendingEvent)> {
        self.drafts
            .iter()
            .find_map(|d| Some((d.plan.id, d.plan.rows.first()?)))
    }

    /// After commit: moves the drafts' key states, now committed, into the
    /// cache, and makes their effects visible to readers, handing their new
    /// events (committed at `now_ms`) to the partitions' tails before the
    /// heads move. Every partition's head is published, not only those the
    /// transaction moved: heads read from the database may include other
    /// processes' commits whose notifications have not arrived yet, and the
    /// next transaction takes its heads from the registry.
    fn committed(mut self, topics: &Registry, cache: &mut KeyCache, now_ms: i64) {
        self.resolved = true;
        let proof = Committed {
            _made_by_committing: (),
        };
        for d in self.drafts.iter_mut() {
            if d.abandoned() {
                continue;
            }
            if d.created {
                cache.created(d.plan.id);
            }
            let plan = &mut d.plan;
            cache.commit(plan.id, plan.last_txn, plan.keys.drain());
            if plan.rows.is_empty() {
                continue;
            }
            let row = TopicRow {
                id: plan.id,
                name: plan.name.clone(),
                partition_count: plan.partition_count,
                created_at_ms: plan.created_at_ms,
                last_transaction_id: plan.last_txn,
                heads: plan.all_heads(),
            };
            let state = registered(topics, &row);
            let rows = plan.rows.drain(..).map(|e| EventRow {
                partition: e.partition,
                sequence: e.sequence,
                transaction_id: e.transaction_id,
                key: e.key,
                key_version: e.key_version,
                event_id: e.event_id,
                content: e.content,
                committed_at_ms: now_ms,
                invalidates: e.invalidates,
                transaction_invalidated: false,
            });
            state.publish(&proof, row.last_transaction_id, &row.heads, rows);
        }
    }

    /// After a commit that failed or may have: whether or not it happened,
    /// it is not known as this process's own.
    fn failed(mut self) {
        self.give_up();
    }

    fn give_up(&mut self) {
        self.resolved = true;
        for d in &self.drafts {
            if let Some(state) = &d.known {
                state.give_up();
            }
        }
    }
}

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        if !self.resolved {
            self.give_up();
        }
    }
}

/// The answer to a write whose commit failed in a way that leaves it
/// unknown whether it happened (its connection was lost meanwhile, or
/// SQLite could not fsync it). `what` names the write.
pub(super) fn maybe_stored(what: Write, cause: &dyn std::fmt::Display) -> HubError {
    HubError::MaybeStored(match what {
        Write::Append => format!(
            "the hub's database is unavailable ({cause}); this happened while the append was \
             being committed, so it may or may not be stored. Read it back before appending it \
             again, or retry with the same event ids (always safe)"
        ),
        Write::Invalidation => format!(
            "the hub's database is unavailable ({cause}); this happened while the invalidation \
             was being committed, so it may or may not have happened. Invalidate again: \
             invalidating a transaction twice is safe"
        ),
    })
}

/// What a commit writes, for what it answers when its outcome is unknown.
#[derive(Debug, Clone, Copy)]
pub(super) enum Write {
    Append,
    Invalidation,
}

impl<B: WriteStorage> Writer<B> {
    /// Resolves `committing` by `outcome`, the result of committing its
    /// transaction (`Ok(false)`: a guarded write that wrote nothing). A
    /// failed commit is looked into ([`Writer::committed_anyway`]): if it
    /// happened after all, it is published like any other. `guarded` says
    /// the write was a statement of its own outside a transaction that held
    /// the topic's lock.
    pub(super) async fn settle(
        &mut self,
        committing: Committing<'_>,
        outcome: Result<bool>,
        what: Write,
        guarded: bool,
        now_ms: i64,
    ) -> Result<Settled> {
        let error = match outcome {
            Ok(true) => None,
            Ok(false) => {
                committing.failed();
                return Ok(Settled::Superseded);
            }
            Err(e) => Some(e),
        };
        if let Some(e) = error {
            match self.committed_anyway(&committing, &e, what, now_ms).await {
                Ok(true) => {}
                Ok(false) if guarded && !B::SOLE_WRITER && e.lost_connection() => {
                    // Unlike a transaction, which holds the topic's row from
                    // its first statement on, the guarded statement locks it
                    // only once it runs: a statement still on its way to
                    // the server when the connection broke may run after
                    // the check found nothing, and commit.
                    committing.failed();
                    return Err(maybe_stored(what, &e));
                }
                Ok(false) => {
                    committing.failed();
                    return Err(e);
                }
                Err(unknown) => {
                    committing.failed();
                    return Err(unknown);
                }
            }
        }
        committing.committed(&self.topics, &mut self.key_cache, now_ms);
        Ok(Settled::Committed)
    }

    /// After committing failed with `error`: whether the transaction
    /// committed all the same. When the connection is lost while the
    /// database commits, the commit may have happened; a new connection
    /// looks for the transaction's first event (position, transaction, key,
    /// version, event id, payload and commit time). `Ok(false)` when it is
    /// not there, or when the database answered with an error (it then
    /// rolled back). An error when the database cannot be asked: the
    /// caller then cannot say whether the write happened, and says so.
    async fn committed_anyway(
        &mut self,
        committing: &Committing<'_>,
        error: &HubError,
        what: Write,
        now_ms: i64,
    ) -> Result<bool> {
        if error.maybe_synced() {
            return Err(maybe_stored(what, error));
        }
        if !error.lost_connection() && !error.session_ended() {
            return Ok(false);
        }
        // The connection is not to be trusted any more.
        self.discard_conn();
        let Some((topic_id, first)) = committing.first_event() else {
            return Ok(false);
        };
        let unknown = |e: &dyn std::fmt::Display| {
            tracing::warn!(error = %e, "cannot tell whether a commit happened");
            maybe_stored(what, e)
        };
        let mut conn = self.pool.acquire().await.map_err(|e| unknown(&e))?;
        let mut tx = conn.begin().await.map_err(|e| unknown(&e))?;
        B::wait_for_lost_commit(&mut tx, topic_id, first)
            .await
            .map_err(|e| unknown(&e))?;
        let committed = B::stored_as_written(&mut tx, topic_id, first, now_ms)
            .await
            .map_err(|e| unknown(&e))?;
        let _ = tx.rollback().await;
        tracing::warn!(error = %error, committed, "the connection was lost while committing; checked whether the commit happened");
        Ok(committed)
    }
}
