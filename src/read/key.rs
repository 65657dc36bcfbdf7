//! Paging through one key's history, from a version up to the key's
//! version when the read starts.

use super::{Reader, Sink, next_page, read_size};
use crate::domain::EventRow;
use crate::error::Result;
use crate::store::{Store, TopicState};
use crate::validate;
use std::collections::VecDeque;
use std::sync::Arc;

/// What a key read asks for, as given (checked by [`Reader::key`]).
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub topic: String,
    pub key: String,
    /// The first version to read (0 or 1: from the start).
    pub from_version: u64,
    /// Events per page; 0 for the default.
    pub max_events: u32,
}

/// One page of a key read.
#[derive(Debug)]
pub struct Page {
    /// Events in version order; none when the key has none from the
    /// version asked.
    pub events: Vec<EventRow>,
    /// The key's version when the read started (0: never written).
    pub current_version: u64,
}

/// A checked key read, ready to run.
pub struct KeyRead {
    store: Store,
    pub topic: Arc<TopicState>,
    key: String,
    from_version: u64,
    page: usize,
}

impl Reader {
    /// Checks a key read: INVALID_ARGUMENT for a bad name or key,
    /// NOT_FOUND for a missing topic.
    pub async fn key(&self, req: Request) -> Result<KeyRead> {
        let (_, topic) = self.topic(&req.topic).await?;
        validate::check_key(&req.key, "key")?;
        Ok(KeyRead {
            store: self.store.clone(),
            topic,
            key: req.key,
            from_version: req.from_version,
            page: self.page_size(req.max_events),
        })
    }
}

impl KeyRead {
    /// Hands the key's events to `out` in pages (at least one, empty when
    /// there are none) until the version the key had at the start, or
    /// until `out` is gone.
    pub async fn run(self, out: impl Sink<Page>) -> Result<()> {
        let KeyRead {
            store,
            topic,
            key,
            from_version,
            page,
        } = self;
        let current = store.key_version(&topic, &key).await?;
        let mut from = from_version.max(1);
        loop {
            let rows = if from <= current {
                store
                    .read_key(&topic, &key, from, current, read_size(page))
                    .await?
            } else {
                Vec::new()
            };
            let invalid = store.invalidated_in(&topic, &rows).await?;
            let mut rows = VecDeque::from(rows);
            // The read's events go out in pages of the size asked.
            loop {
                let events = next_page(&mut rows, page, &invalid);
                let next = events.last().map(|last| last.key_version + 1);
                let page = Page {
                    events,
                    current_version: current,
                };
                if !out.send(page).await {
                    return Ok(());
                }
                match next {
                    Some(n) if n <= current => from = n,
                    _ => return Ok(()),
                }
                if rows.is_empty() {
                    break;
                }
            }
        }
    }
}
