//! The integration tests: real hubs over real gRPC on real databases, one
//! test binary with a module per feature.
//!
//! The conformance suite (`access`, `api`, `bad_input`, `concurrency`,
//! `crash`) runs on SQLite, and on PostgreSQL with
//! `EVENTHUB_TEST_BACKEND=postgres`; `postgres` runs several hub processes on
//! one database, and `postgres_restart` stops and starts the server under a
//! running hub (it waits until no other test uses the server; see
//! [`common::postgres_server_alone`]). `common` holds the harness.

mod common;

mod access;
mod api;
mod bad_input;
mod concurrency;
mod crash;
mod postgres;
mod postgres_restart;
