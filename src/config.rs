//! Server configuration and request limits.

use std::time::Duration;

/// Limits the hub enforces on requests. Those of requests are configurable
/// from the command line; the defaults are documented in the proto.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest single event: key + type + content type + event id + headers + payload.
    pub max_event_bytes: usize,
    /// Most events in one Append.
    pub max_events_per_append: usize,
    /// Largest gRPC request the server decodes (bounds a whole Append).
    pub max_request_bytes: usize,
    /// Most events in one page of a read.
    pub max_page_events: usize,
    /// Longest long-poll wait.
    pub max_wait: Duration,
    /// Default heartbeat interval of a followed stream.
    pub default_heartbeat: Duration,
    /// Most sequences a read with a types filter scans at once. A rare
    /// type over a long backlog is found stretch by stretch, and a stretch
    /// with none of it ends with an empty page carrying the cursor.
    pub filtered_scan: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 1 << 20,
            max_events_per_append: 10_000,
            max_request_bytes: 16 << 20,
            max_page_events: 10_000,
            max_wait: Duration::from_secs(300),
            default_heartbeat: Duration::from_secs(5),
            filtered_scan: 100_000,
        }
    }
}

/// Everything `run` needs besides the listener.
#[derive(Debug, Clone)]
pub struct Config {
    /// `sqlite://path` (created if missing) or `postgres://user:password@host:port/database`.
    pub database_url: String,
    /// Partition count of topics created by Append.
    pub default_partitions: u32,
    /// Whether Append creates unknown topics.
    pub auto_create_topics: bool,
    /// SQLite `synchronous` setting: FULL (durable across power loss) or NORMAL.
    pub sqlite_synchronous: SqliteSync,
    /// How long shutting down waits for calls in progress (a stream to a
    /// client that stopped reading never ends by itself) before closing
    /// their connections.
    pub shutdown_grace: Duration,
    /// HTTP/2 keepalive: how often the hub pings a connection it hears
    /// nothing from, and how long it waits for the answer before closing
    /// it, so that the streams of a client that vanished without closing
    /// its connection (a dropped NAT entry, a dead machine) end.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Bearer tokens and their grants; `None` serves every caller.
    pub tokens: Option<std::sync::Arc<crate::access::Tokens>>,
    pub limits: Limits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SqliteSync {
    /// fsync on every commit: an acknowledged append survives power loss.
    Full,
    /// fsync at checkpoints: survives a crash of the hub, not of the machine.
    Normal,
}

impl Config {
    pub fn new(database_url: impl Into<String>) -> Self {
        Config {
            database_url: database_url.into(),
            default_partitions: 16,
            auto_create_topics: true,
            sqlite_synchronous: SqliteSync::Full,
            shutdown_grace: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            tokens: None,
            limits: Limits::default(),
        }
    }
}
