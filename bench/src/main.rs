//! The `eventhub-bench` command line: `cargo run --release -p eventhub-bench -- [OPTIONS]`.

/// The allocator of the `eventhub` binary, so that the in-process hub is
/// measured as it runs in production (see `src/main.rs`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use std::io::IsTerminal;

/// Measure the hub against its database, a no-op gRPC server and NATS
/// JetStream on loopback; prints a markdown table and writes JSON.
#[derive(Parser)]
#[command(name = "eventhub-bench", version)]
struct Cli {
    #[command(flatten)]
    args: eventhub_bench::BenchArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The in-process hubs would log every start and stop; the bench reports
    // through its progress lines instead.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EVENTHUB_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    tokio::runtime::Runtime::new()?.block_on(eventhub_bench::run(cli.args))
}
