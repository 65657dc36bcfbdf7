//! The `eventhub` command line.

/// mimalloc for Rust's allocations and, through its `override` feature,
/// SQLite's: with glibc's malloc, a third of a catch-up read's CPU time
/// went to malloc and free.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Args, Parser, Subcommand};
use eventhub::config::{Config, Limits, SqliteSync};
use std::io::{IsTerminal, Write};
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "eventhub",
    version,
    about = "A gRPC event hub that keeps events in SQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub.
    Serve(ServeArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "EVENTHUB_LISTEN", default_value = "127.0.0.1:50051")]
    listen: String,
    /// Database URL: sqlite://PATH (created if missing) or
    /// postgres://USER:PASSWORD@HOST:PORT/DATABASE (tables created on start-up).
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://eventhub.db")]
    database: String,
    /// Partition count of topics created by Append or by CreateTopic without a count.
    #[arg(long, env = "EVENTHUB_DEFAULT_PARTITIONS", default_value_t = 16,
          value_parser = clap::builder::RangedU64ValueParser::<u32>::new().range(1..=1024))]
    default_partitions: u32,
    /// Refuse appends to unknown topics (NOT_FOUND) instead of creating them.
    #[arg(long, env = "EVENTHUB_NO_AUTO_CREATE", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    no_auto_create: bool,
    /// Seconds that shutting down (SIGTERM, Ctrl-C) waits for calls in progress, such as
    /// streams to clients that stopped reading, before closing their connections.
    #[arg(long, env = "EVENTHUB_SHUTDOWN_GRACE", default_value_t = 10)]
    shutdown_grace: u64,
    /// SQLite durability: full fsyncs every commit (survives power loss);
    /// normal survives a crash of the hub but may lose the last commits on power loss.
    #[arg(
        long,
        value_enum,
        env = "EVENTHUB_SQLITE_SYNCHRONOUS",
        default_value = "full"
    )]
    sqlite_synchronous: SqliteSync,
    /// Largest event in bytes (key, type, content type, event id, headers and payload).
    #[arg(long, default_value_t = Limits::default().max_event_bytes, value_parser = at_least_one())]
    max_event_bytes: usize,
    /// Most events in one Append.
    #[arg(long, default_value_t = Limits::default().max_events_per_append, value_parser = at_least_one())]
    max_events_per_append: usize,
    /// Largest request in bytes.
    #[arg(long, default_value_t = Limits::default().max_request_bytes, value_parser = at_least_one())]
    max_request_bytes: usize,
    /// Most events per page of a read.
    #[arg(long, default_value_t = Limits::default().max_page_events, value_parser = at_least_one())]
    max_page_events: usize,
    /// Longest long-poll wait in milliseconds.
    #[arg(long, default_value_t = 300_000)]
    max_wait_ms: u64,
    /// A file of bearer tokens and their grants (`TOKEN read:orders append:orders.* admin:*`,
    /// one token per line): calls then need `authorization: Bearer TOKEN`. Without it, every caller is served
    #[arg(long, env = "EVENTHUB_TOKENS", value_name = "FILE")]
    tokens: Option<std::path::PathBuf>,
}

/// A limit of 0 would refuse or page everything; clap says so at start-up.
fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}

fn main() -> anyhow::Result<()> {
    let Command::Serve(args) = Cli::parse().command;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EVENTHUB_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let tokens = match &args.tokens {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--tokens {}: {e}", path.display()))?;
            let tokens = eventhub::access::Tokens::parse(&text)
                .map_err(|e| anyhow::anyhow!("--tokens {}: {e}", path.display()))?;
            Some(std::sync::Arc::new(tokens))
        }
    };
    let config = Config {
        tokens,
        database_url: args.database,
        default_partitions: eventhub::validate::partition_count(args.default_partitions, 16)
            .map_err(|e| anyhow::anyhow!("--default-partitions: {e}"))?,
        auto_create_topics: !args.no_auto_create,
        sqlite_synchronous: args.sqlite_synchronous,
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace),
        limits: Limits {
            max_event_bytes: args.max_event_bytes,
            max_events_per_append: args.max_events_per_append,
            max_request_bytes: args.max_request_bytes,
            max_page_events: args.max_page_events,
            max_wait: Duration::from_millis(args.max_wait_ms),
            ..Limits::default()
        },
        ..Config::new("")
    };
    tokio::runtime::Runtime::new()?.block_on(async move {
        let listener = TcpListener::bind(&args.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        // One line on stdout, so scripts and tests can find a port-0 hub.
        println!("eventhub listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        eventhub::server::run(listener, config, shutdown_signal()).await
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
