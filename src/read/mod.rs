//! The read use cases, without a transport: reading a partition (a
//! long-poll, or a followed stream with heartbeats, with or without a type
//! filter), paging through a topic's surface, and paging through one key's
//! history. Each starts in two steps: `Reader::partition`, `Reader::surface`
//! or `Reader::key` checks the request and finds the topic (an error there is
//! the call's answer), and the returned read's `run` hands plain pages to a
//! [`Sink`] until it is done, the reader goes away, or the hub shuts down.
//!
//! The gRPC handlers (`service`) turn the pages into API messages; any other
//! transport can do the same. The unit tests (`tests.rs`) run them on a real
//! SQLite store with paused time.

pub mod key;
pub mod partition;
pub mod surface;

#[cfg(test)]
mod tests;

use crate::config::Limits;
use crate::domain::{EventRow, TopicName};
use crate::error::Result;
use crate::store::{PAGE_BYTES, Store, TopicState};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// Default page size of reads.
const DEFAULT_PAGE: usize = 100;
/// Fewest events a partition or key read takes from the database at once (the
/// next multiple of the page size asked); it sends them in pages of that
/// size. Reading the 100 events of a default page costs nearly as much as
/// reading 1,000. Each read is also bounded by [`PAGE_BYTES`].
const READ_AHEAD: usize = 1000;

/// Where a read's pages go: a gRPC stream, a test's channel, any transport.
pub trait Sink<P>: Send + Sync {
    /// Hands `page` to the reader (waiting while it is behind, which is
    /// backpressure); false once the reader has gone.
    fn send(&self, page: P) -> impl Future<Output = bool> + Send;
    /// Resolves once the reader has gone.
    fn closed(&self) -> impl Future<Output = ()> + Send;
}

/// A channel of plain pages is a sink.
impl<P: Send> Sink<P> for mpsc::Sender<P> {
    async fn send(&self, page: P) -> bool {
        mpsc::Sender::send(self, page).await.is_ok()
    }

    async fn closed(&self) {
        mpsc::Sender::closed(self).await
    }
}

/// The read use cases of one hub.
#[derive(Clone)]
pub struct Reader {
    store: Store,
    limits: Limits,
    /// Flips to true at shutdown, so that open reads end cleanly.
    shutdown: watch::Receiver<bool>,
}

impl Reader {
    pub fn new(store: Store, limits: Limits, shutdown: watch::Receiver<bool>) -> Self {
        Reader {
            store,
            limits,
            shutdown,
        }
    }

    /// The page size of a read that asked for `asked` events a page (0: the
    /// default), within the limit and at least one.
    fn page_size(&self, asked: u32) -> usize {
        let asked = match asked as usize {
            0 => DEFAULT_PAGE,
            n => n,
        };
        asked.min(self.limits.max_page_events).max(1)
    }

    /// The topic named `name`: INVALID_ARGUMENT for a bad name, NOT_FOUND
    /// for a missing topic.
    async fn topic(&self, name: &str) -> Result<(TopicName, Arc<TopicState>)> {
        let name = TopicName::parse(name)?;
        let t = self.store.require_topic(&name).await?;
        Ok((name, t))
    }
}

/// Marks the events of `rows` whose transaction is in `invalid`.
fn mark(mut rows: Vec<EventRow>, invalid: &HashSet<u64>) -> Vec<EventRow> {
    if !invalid.is_empty() {
        for r in &mut rows {
            r.transaction_invalidated = invalid.contains(&r.transaction_id);
        }
    }
    rows
}

/// How many events a read takes from the database for pages of `page`.
fn read_size(page: usize) -> usize {
    page * READ_AHEAD.div_ceil(page)
}

/// Takes the next page from the front of a read's `rows`: at most `page`
/// events, within [`PAGE_BYTES`] (at least one, if any).
fn next_page(rows: &mut VecDeque<EventRow>, page: usize, invalid: &HashSet<u64>) -> Vec<EventRow> {
    let n = fitting(rows.iter().take(page));
    // A read that makes one page (a catch-up in large pages) hands its
    // buffer on rather than copying it.
    let taken = if n == rows.len() {
        Vec::from(std::mem::take(rows))
    } else {
        rows.drain(..n).collect()
    };
    mark(taken, invalid)
}

/// Cuts `rows` to the longest prefix (at least one row) within
/// [`PAGE_BYTES`]; true when it cut.
fn fit(rows: &mut Vec<EventRow>) -> bool {
    let n = fitting(rows.iter());
    let cut = n < rows.len();
    rows.truncate(n);
    cut
}

/// How many of `rows` (at least one, if any) fit in a page of
/// [`PAGE_BYTES`].
fn fitting<'a>(rows: impl Iterator<Item = &'a EventRow>) -> usize {
    let mut total = 0;
    let mut n = 0;
    for r in rows {
        total += r.size();
        if total > PAGE_BYTES && n > 0 {
            break;
        }
        n += 1;
    }
    n
}
