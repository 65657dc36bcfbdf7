//! Paging through a topic's surface: the latest valid event of every key
//! (optionally of the keys with a prefix, after a key, at most a number of
//! them), as of one transaction, with every partition's position as of that
//! transaction to continue from.

use super::{Reader, Sink, fit};
use crate::domain::EventRow;
use crate::error::{HubError, Result};
use crate::store::{Store, TopicState};
use crate::validate;
use std::sync::Arc;

/// Keys per page.
const SURFACE_PAGE: usize = 1000;

/// What a surface read asks for, as given (checked by [`Reader::surface`]).
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub topic: String,
    /// Only keys starting with this.
    pub key_prefix: String,
    /// Only keys after this one (bytewise).
    pub after_key: String,
    /// Most keys; 0 for all.
    pub limit: u32,
    /// The transaction to read as of; 0 for the last one.
    pub as_of_transaction: u64,
}

/// One page of a surface read.
#[derive(Debug)]
pub struct Page {
    /// The latest valid event of each key of the page, in key order.
    pub events: Vec<EventRow>,
    /// Every partition's last sequence as of `as_of_transaction`, by
    /// partition: where to continue reading after the surface.
    pub positions: Arc<[u64]>,
    pub as_of_transaction: u64,
    /// Set on the last page of a read that stopped at its limit while
    /// more keys follow: the key to continue after.
    pub next_after_key: Option<String>,
}

/// A checked surface read, ready to run.
pub struct SurfaceRead {
    store: Store,
    pub topic: Arc<TopicState>,
    req: Request,
}

impl Reader {
    /// Checks a surface read: INVALID_ARGUMENT for a bad name or key,
    /// NOT_FOUND for a missing topic.
    pub async fn surface(&self, req: Request) -> Result<SurfaceRead> {
        let (_, topic) = self.topic(&req.topic).await?;
        validate::check_no_nul(&req.key_prefix, "key_prefix")?;
        validate::check_no_nul(&req.after_key, "after_key")?;
        Ok(SurfaceRead {
            store: self.store.clone(),
            topic,
            req,
        })
    }
}

impl SurfaceRead {
    /// Hands the surface's pages to `out` (at least one, the last one
    /// possibly empty) until the keys end, the limit is reached or `out`
    /// is gone.
    pub async fn run(self, out: impl Sink<Page>) -> Result<()> {
        let SurfaceRead { store, topic, req } = self;
        let snapshot = store.snapshot(&topic).await?;
        let as_of = match req.as_of_transaction {
            0 => snapshot.last_transaction_id,
            t if t > snapshot.last_transaction_id => {
                return Err(HubError::invalid(format!(
                    "as_of_transaction {t} is after the last transaction of topic {:?} ({})",
                    topic.name, snapshot.last_transaction_id
                )));
            }
            t => t,
        };
        let mut positions = Vec::with_capacity(topic.partition_count as usize);
        for p in 0..topic.partition_count {
            let head = snapshot.heads[p as usize];
            positions.push(if as_of == snapshot.last_transaction_id {
                head
            } else {
                store.head_as_of(&topic, p, as_of, head).await?
            });
        }
        let positions: Arc<[u64]> = positions.into();
        let prefix = req.key_prefix;
        let (mut from, mut inclusive) = if req.after_key.as_str() >= prefix.as_str() {
            (req.after_key, false)
        } else {
            (prefix.clone(), true)
        };
        let limit = if req.limit == 0 {
            usize::MAX
        } else {
            req.limit as usize
        };
        let mut returned = 0usize;
        let mut sent = false;
        loop {
            let want = SURFACE_PAGE.min(limit - returned);
            let (mut rows, next) = store
                .surface_page(&topic, as_of, &from, inclusive, want)
                .await?;
            // Keys are sorted bytewise, so the first key past the prefix ends the listing.
            rows.retain(|r| r.key.as_deref().is_some_and(|k| k.starts_with(&prefix)));
            let next = if fit(&mut rows) {
                rows.last().and_then(|r| r.key.clone())
            } else {
                next.filter(|k| k.starts_with(&prefix))
            };
            returned += rows.len();
            let done = next.is_none() || returned >= limit;
            let mut next_after_key = None;
            if returned >= limit
                && let Some(k) = rows.last().and_then(|r| r.key.clone())
            {
                // Say "there is more" only if a candidate key follows.
                let (probe, probe_next) = store.surface_page(&topic, as_of, &k, false, 1).await?;
                let more = probe
                    .iter()
                    .filter_map(|r| r.key.as_deref())
                    .chain(probe_next.as_deref());
                if more.into_iter().any(|pk| pk.starts_with(&prefix)) {
                    next_after_key = Some(k);
                }
            }
            let invalid = store.invalidated_in(&topic, &rows).await?;
            let events = super::mark(rows, &invalid);
            if !events.is_empty() || !sent || done {
                let page = Page {
                    events,
                    positions: positions.clone(),
                    as_of_transaction: as_of,
                    next_after_key,
                };
                if !out.send(page).await {
                    return Ok(());
                }
                sent = true;
            }
            if done {
                return Ok(());
            }
            from = next.expect("not done");
            inclusive = false;
        }
    }
}
