//! eventhub: a gRPC event hub that keeps events in SQL.
//!
//! Producers append events to topics; consumers read partitions from
//! cursors they store themselves. See `proto/eventhub/v1/eventhub.proto` for
//! the API and `README.md` for the way in.
//!
//! # Layout
//!
//! - [`proto`]: the generated `eventhub.v1` messages, client and server (never edited).
//! - [`access`]: bearer tokens and their grants (`eventhub serve --tokens FILE`), and the one
//!   access check every call goes through ([`access::Gate`]).
//! - [`config`]: server configuration and request limits.
//! - [`error`]: [`error::HubError`], the one error type, and its mapping to gRPC statuses.
//! - [`domain`]: the domain types: checked requests ([`domain::NewEvent`], [`domain::TopicName`]) and
//!   what the store answers ([`domain::EventRow`], [`domain::AppendReply`], pages, positions).
//! - [`validate`]: checks at the edge (topic names, events, keys) and the partition hash.
//! - [`cursor`]: encoding and checking cursors.
//! - [`store`]: storage. `Store` is the handle the service uses; `store::registry` keeps the
//!   topics, their heads (readers wait on them) and tails; `store::storage` is the contract with
//!   a database, three traits: each backend writes its `Dialect` (`store/sqlite/`, with a
//!   background WAL checkpointer and long reads stepped through SQLite's API with `rusqlite`;
//!   `store/postgres/`, with the writer on a thread of its own, LISTEN/NOTIFY between hub
//!   processes and long reads through binary `COPY`), and every other statement is written once
//!   for both (`store/reads.rs`, `store/writer/sql.rs`). `store::writer` is the group-committing
//!   writer task: pure planning rules (`plan`), the key cache, the one commit pipeline whose
//!   guard type is the only way to publish a commit to readers (`commit`), invalidation.
//! - [`read`]: the read use cases without a transport: a partition read (long-poll, or followed
//!   with heartbeats, optionally type-filtered), surface paging and key paging, each handing
//!   plain pages to a [`read::Sink`]; unit-tested on a real SQLite store with paused time.
//! - [`service`]: the gRPC handlers of `EventHubService`, thin: decode, admit (the access rule
//!   of every call is one line of its `Guarded` table), call one use case, encode.
//! - [`server`]: [`server::run`] wires store, service, health and reflection onto a listener, and
//!   closes the store (every database connection) at shutdown; its connections can be ended
//!   from outside, so that none that stays silent or stuck holds shutting down up.
//! - `main.rs`: the `eventhub` command line (`eventhub serve`).
//!
//! The benchmark is a package of its own, `bench/` (`eventhub-bench`), built on this library's
//! public API, so that the hub depends on none of its peers.

pub mod access;
pub mod config;
pub mod cursor;
pub mod domain;
pub mod error;
pub mod read;
pub mod server;
pub mod service;
pub mod store;
pub mod validate;

/// The generated `eventhub.v1` API.
#[allow(clippy::all)]
pub mod proto {
    tonic::include_proto!("eventhub.v1");
    /// The encoded descriptors of the API, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("eventhub_descriptor");
}
