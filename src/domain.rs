//! The hub's domain types: what a request asks of the store once it is
//! checked, and what the store answers. No gRPC and no SQL here: the
//! service translates them from and to the API (`service`), and the store
//! from and to the database (`store`).

use crate::error::{HubError, Result};
use crate::validate::MAX_NAME;
use std::collections::HashSet;

/// A checked topic name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(String);

impl TopicName {
    pub fn parse(name: &str) -> Result<Self> {
        if name.is_empty() {
            return Err(HubError::invalid(
                "topic name is empty; give a name of 1–200 characters of [A-Za-z0-9._-]",
            ));
        }
        if name.len() > MAX_NAME {
            return Err(HubError::invalid(format!(
                "topic name is {} bytes long; the limit is {MAX_NAME}",
                name.len()
            )));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(HubError::invalid(format!(
                "topic name {name:?} contains {c:?}; use only letters, digits, '.', '_' and '-'"
            )));
        }
        if name.starts_with('.') {
            return Err(HubError::invalid(format!(
                "topic name {name:?} starts with '.'; that is not allowed"
            )));
        }
        Ok(TopicName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TopicName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an event expects of its key's version before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    Any,
    NoKey,
    Exists,
    Exact(u64),
}

impl Expected {
    pub fn holds(self, version: u64) -> bool {
        match self {
            Expected::Any => true,
            Expected::NoKey => version == 0,
            Expected::Exists => version > 0,
            Expected::Exact(v) => version == v,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Expected::Any => "expected any version".into(),
            Expected::NoKey => "expected no event yet (version 0)".into(),
            Expected::Exists => "expected at least one event".into(),
            Expected::Exact(v) => format!("expected version {v}"),
        }
    }
}

/// The content of an event that dedup-by-content compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub event_type: String,
    pub content_type: String,
    /// Headers encoded canonically (sorted), as stored; `None` when there are none.
    pub headers: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub tombstone: bool,
}

/// A checked event, ready for storage.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub key: String,
    pub event_id: Option<String>,
    pub expected: Expected,
    pub content: Content,
}

/// Where a stored event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredPos {
    pub partition: u32,
    pub sequence: u64,
    pub key_version: u64,
    pub transaction_id: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    Stored,
    DuplicateEventId,
    DuplicateContent,
}

#[derive(Debug)]
pub struct AppendReply {
    pub transaction_id: u64,
    pub results: Vec<(StoredPos, AppendOutcome)>,
}

#[derive(Debug)]
pub struct InvalidateReply {
    pub marker_transaction_id: u64,
    pub markers: Vec<StoredPos>,
    pub already_invalidated: bool,
}

/// One page of a partition, read by `Store::read_page`.
#[derive(Debug)]
pub struct PartitionPage {
    /// Events in sequence order.
    pub rows: Vec<EventRow>,
    /// The transactions of `rows` that are invalidated.
    pub invalidated: HashSet<u64>,
    /// Every event up to this sequence that the read asked for is in
    /// `rows` (or came before `after`).
    pub scanned: u64,
}

/// A stored event as read from the log.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub partition: u32,
    pub sequence: u64,
    pub transaction_id: u64,
    pub key: Option<String>,
    pub key_version: u64,
    pub event_id: Option<String>,
    pub content: Content,
    pub committed_at_ms: i64,
    /// For invalidation markers: the invalidated transaction.
    pub invalidates: Option<u64>,
    /// The event's transaction has been invalidated (by an Invalidate after
    /// it), as the read that returned the event found (`read` marks it; the
    /// store's rows come unmarked).
    pub transaction_invalidated: bool,
}

impl EventRow {
    /// Approximate encoded size, for bounding pages.
    pub fn size(&self) -> usize {
        let c = &self.content;
        64 + c.payload.len()
            + c.headers.as_ref().map_or(0, Vec::len)
            + c.event_type.len()
            + c.content_type.len()
            + self.key.as_ref().map_or(0, String::len)
            + self.event_id.as_ref().map_or(0, String::len)
    }
}

/// Partition heads and last transaction read together, in one snapshot.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub last_transaction_id: u64,
    pub heads: Vec<u64>,
}
