//! Invalidating a transaction: a transaction of markers, one at the head of
//! every partition the invalidated transaction wrote to, and every key it
//! wrote pointed back at its latest event that is still valid.

use super::commit::{Committing, Write};
use super::draft::{TopicDraft, find_topic};
use super::{Writer, begin, now_ms};
use crate::domain::{InvalidateReply, TopicName};
use crate::error::{HubError, Result};
use crate::store::storage::WriteStorage;
use std::collections::BTreeSet;

impl<B: WriteStorage> Writer<B> {
    pub(super) async fn invalidate(
        &mut self,
        topic: &TopicName,
        transaction: u64,
        reason: &str,
    ) -> Result<InvalidateReply> {
        let mut tx = begin(&mut self.conn, &self.pool).await?;
        self.began = true;
        let Some(meta) = find_topic::<B>(&mut tx, &self.topics, topic.as_str()).await? else {
            return Err(HubError::topic_not_found(topic.as_str()));
        };
        let mut draft = TopicDraft::lock::<B>(&mut tx, &meta, false, &mut self.key_cache).await?;
        let last = draft.plan.last_txn;
        let not_found = || {
            HubError::NotFound(format!(
                "transaction {transaction} does not exist in topic {:?} (its transactions are 1 to {last})",
                topic.as_str()
            ))
        };
        if transaction == 0 || transaction > last {
            return Err(not_found());
        }
        if let Some(marker) = B::invalidation_of(&mut tx, meta.id, transaction).await? {
            return Ok(InvalidateReply {
                marker_transaction_id: marker,
                markers: B::positions_of(&mut tx, meta.id, marker).await?,
                already_invalidated: true,
            });
        }
        let events = B::events_of(&mut tx, meta.id, transaction).await?;
        if events.is_empty() {
            return Err(not_found());
        }
        if events.iter().any(|e| e.invalidates.is_some()) {
            return Err(HubError::invalid(format!(
                "transaction {transaction} is itself an invalidation; an invalidation cannot be invalidated"
            )));
        }
        let partitions: BTreeSet<u32> = events.iter().map(|e| e.partition).collect();
        let keys: BTreeSet<&str> = events.iter().filter_map(|e| e.key.as_deref()).collect();
        let now = now_ms();
        let (marker_txn, markers) = draft
            .plan
            .plan_invalidation(transaction, &partitions, reason);
        B::insert_invalidation(&mut tx, meta.id, transaction, marker_txn, reason).await?;
        draft.flush::<B>(&mut tx, now, None).await?;
        // Every key of the invalidated transaction falls back to its latest
        // event that is still valid.
        for key in keys {
            B::fall_back(&mut tx, meta.id, key, marker_txn).await?;
        }
        // The tails hold the invalidated events as valid.
        if let Some(state) = &draft.known {
            state.forget_tails();
        }
        let committing = Committing::start([&mut draft]);
        let outcome = tx.commit().await.map(|()| true).map_err(HubError::from);
        self.settle(committing, outcome, Write::Invalidation, false, now)
            .await?;
        Ok(InvalidateReply {
            marker_transaction_id: marker_txn,
            markers,
            already_invalidated: false,
        })
    }
}
