//! eventhub: a gRPC event hub that keeps events in SQL.
//!
//! Producers append events to topics; consumers read partitions from
//! cursors they store themselves. See `proto/eventhub/v1/eventhub.proto` for
//! the API and `README.md` for the way in.
//!
//! # Layout
//!
//! - [`proto`]: the generated `eventhub.v1` messages, client and server (never edited).
//! - [`access`]: bearer tokens and their grants (`eventhub serve --tokens FILE`).
//! - [`config`]: server configuration and request limits.
//! - [`error`]: [`error::HubError`], the one error type, and its mapping to gRPC statuses.
//! - [`validate`]: checks at the edge (topic names, events, keys) and the partition hash.
//! - [`cursor`]: encoding and checking cursors.
//! - [`store`]: storage: topic registry (heads, and the latest events of followed partitions),
//!   reads, and the group-committing writer task,
//!   written once in `store/backend/` and compiled for SQLite (`store/sqlite.rs`, with a background WAL checkpointer;
//!   long partition reads stepped through SQLite's API with `rusqlite` in `store/sqlite_rows.rs`)
//!   and PostgreSQL (`store/postgres.rs`, with the writer on a thread of its own and LISTEN/NOTIFY
//!   between hub processes; long partition reads go through binary `COPY`, parsed in
//!   `store/pg_copy.rs`).
//! - [`service`]: the gRPC handlers of `EventHubService`.
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
pub mod error;
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
