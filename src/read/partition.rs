//! Reading a partition from a cursor: a long-poll (pages until caught up,
//! or one empty page once the wait is over) or a followed stream (pages as
//! events are committed, and heartbeats while there are none), optionally
//! of some event types only.

use super::{Reader, Sink, next_page, read_size};
use crate::cursor::{self, Start};
use crate::domain::EventRow;
use crate::error::{HubError, Result};
use crate::store::{Store, TopicState};
use crate::validate;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Smallest heartbeat interval a follower may ask for.
const MIN_HEARTBEAT: Duration = Duration::from_millis(50);

/// What a partition read asks for, as given (checked by [`Reader::partition`]).
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub topic: String,
    pub partition: u32,
    /// A cursor, `"_first"` (or empty) or `"_last"`.
    pub cursor: String,
    /// Events per page; 0 for the default.
    pub max_events: u32,
    /// How long a long-poll waits for an event (capped by the limits).
    pub wait: Duration,
    pub follow: bool,
    /// Heartbeat interval of a followed read; `None` for the default.
    pub heartbeat: Option<Duration>,
    /// Event types to read; empty for all.
    pub types: Vec<String>,
}

/// One page of a partition read.
#[derive(Debug)]
pub struct Page {
    /// Events in sequence order; none in a heartbeat, in the answer of a
    /// long-poll whose wait is over, or after a filtered stretch without
    /// the types asked.
    pub events: Vec<EventRow>,
    /// The sequence to continue after (the page's cursor).
    pub position: u64,
    /// The page reaches the partition's head as this hub knew it.
    pub caught_up: bool,
}

/// A checked partition read, ready to run.
pub struct PartitionRead {
    store: Store,
    shutdown: watch::Receiver<bool>,
    filtered_scan: u64,
    pub topic: Arc<TopicState>,
    pub partition: u32,
    position: u64,
    page: usize,
    wait: Duration,
    follow: bool,
    heartbeat: Duration,
    types: Vec<String>,
}

impl Reader {
    /// Checks a partition read and finds where it starts: INVALID_ARGUMENT
    /// for a bad name, partition, filter or cursor, NOT_FOUND for a missing
    /// topic, OUT_OF_RANGE for a cursor past the partition's end.
    pub async fn partition(&self, req: Request) -> Result<PartitionRead> {
        let (name, topic) = self.topic(&req.topic).await?;
        if req.partition >= topic.partition_count {
            return Err(HubError::invalid(format!(
                "partition {} is out of range; topic {:?} has partitions 0 to {}",
                req.partition,
                name.as_str(),
                topic.partition_count - 1
            )));
        }
        validate::check_type_filter(&req.types)?;
        let position = match cursor::decode(name.as_str(), req.partition, &req.cursor)? {
            Start::After(s) if s > topic.head(req.partition) => {
                self.check_not_past_head(&topic, req.partition, s, &req.cursor)
                    .await?;
                s
            }
            Start::After(s) => s,
            Start::Last => topic.head(req.partition),
        };
        Ok(PartitionRead {
            store: self.store.clone(),
            shutdown: self.shutdown.clone(),
            filtered_scan: self.limits.filtered_scan,
            partition: req.partition,
            position,
            page: self.page_size(req.max_events),
            wait: req.wait.min(self.limits.max_wait),
            follow: req.follow,
            heartbeat: req
                .heartbeat
                .map_or(self.limits.default_heartbeat, |h| h.max(MIN_HEARTBEAT)),
            types: req.types,
            topic,
        })
    }

    /// Refuses a cursor after the partition's last stored event. This
    /// process may not have heard of the latest commits of another one, so
    /// the database decides. Waiting there would skip every event stored
    /// up to the cursor's sequence from now on: the database has lost
    /// events since it handed out the cursor (restored from an older copy,
    /// or commits lost to a power failure under `synchronous=NORMAL`).
    async fn check_not_past_head(
        &self,
        topic: &TopicState,
        partition: u32,
        sequence: u64,
        given: &str,
    ) -> Result<()> {
        let head = self.store.snapshot(topic).await?.heads[partition as usize];
        if sequence > head {
            return Err(HubError::OutOfRange(format!(
                "cursor {given:?} is after event {sequence} of partition {partition}, but the \
                 partition ends at event {head}: the hub's database has lost events since it gave \
                 out this cursor (restored from an older copy?). Reading on from it would skip the \
                 events stored there next; decide how to reconcile, then read from a cursor at or \
                 before the end, \"_first\" or \"_last\""
            )));
        }
        Ok(())
    }
}

impl PartitionRead {
    /// Hands the read's pages to `out` until it is done (a long-poll that
    /// caught up or waited long enough), `out` is gone, or the hub shuts
    /// down.
    pub async fn run(self, out: impl Sink<Page>) -> Result<()> {
        let a = self;
        let mut heads = a.topic.heads[a.partition as usize].subscribe();
        let mut shutdown = a.shutdown.clone();
        let mut pos = a.position;
        let mut sent_any = false;
        let wait_until = Instant::now() + a.wait;
        let mut last_sent = Instant::now();
        let page = |events: Vec<EventRow>, position: u64, caught_up: bool| Page {
            events,
            position,
            caught_up,
        };
        loop {
            let head = *heads.borrow_and_update();
            if head > pos {
                let upto = if a.types.is_empty() {
                    head
                } else {
                    head.min(pos.saturating_add(a.filtered_scan))
                };
                let read = a
                    .store
                    .read_page(
                        &a.topic,
                        a.partition,
                        pos,
                        upto,
                        read_size(a.page),
                        &a.types,
                    )
                    .await?;
                let mut rows = VecDeque::from(read.rows);
                // The read's events go out in pages of the size asked; the
                // last page's cursor is where the read ended.
                loop {
                    let events = next_page(&mut rows, a.page, &read.invalidated);
                    pos = match events.last() {
                        Some(last) if !rows.is_empty() => last.sequence,
                        _ => read.scanned,
                    };
                    let caught_up = pos >= a.topic.head(a.partition);
                    if events.is_empty() {
                        // The read skipped events of other types only (a
                        // filter is the only way a read finds none). A
                        // stretch cut at `filtered_scan` ends with a page
                        // saying where the scan got to; otherwise that
                        // goes with the next page or heartbeat (due here
                        // too: under a steady run of commits of other
                        // types the loop may never wait), and a long-poll
                        // answers once its wait is over.
                        let answer = !a.follow && caught_up && Instant::now() >= wait_until;
                        let heartbeat = a.follow && last_sent.elapsed() >= a.heartbeat;
                        if answer || heartbeat || upto < head {
                            if !out.send(page(events, pos, caught_up)).await {
                                return Ok(());
                            }
                            last_sent = Instant::now();
                            if answer {
                                return Ok(());
                            }
                        }
                        break;
                    }
                    if !out.send(page(events, pos, caught_up)).await {
                        return Ok(());
                    }
                    sent_any = true;
                    last_sent = Instant::now();
                    if rows.is_empty() {
                        if caught_up && !a.follow {
                            return Ok(());
                        }
                        break;
                    }
                }
                continue;
            }
            if !a.follow {
                if sent_any {
                    return Ok(());
                }
                tokio::select! {
                    changed = heads.changed() => { if changed.is_ok() { continue; } }
                    _ = tokio::time::sleep_until(wait_until) => {}
                    _ = shutdown.changed() => {}
                    _ = out.closed() => return Ok(()),
                }
                out.send(page(Vec::new(), pos, true)).await;
                return Ok(());
            }
            tokio::select! {
                changed = heads.changed() => { if changed.is_err() { return Ok(()); } }
                _ = tokio::time::sleep_until(last_sent + a.heartbeat) => {
                    if !out.send(page(Vec::new(), pos, true)).await {
                        return Ok(());
                    }
                    last_sent = Instant::now();
                }
                _ = out.closed() => return Ok(()),
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }
}
