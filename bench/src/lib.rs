//! `eventhub-bench`: the hub measured against what it is built on and
//! against a peer, everything on loopback and in one process except the
//! peer's server.
//!
//! Each workload runs, round after round, against the hub and against its
//! references, alternating (hub, references, peer, then the next round), on
//! fresh databases; the table reports medians and the JSON file keeps every
//! round. `docs/benchmarks.md` describes the method and the latest figures.
//!
//! - [`events`]: the events and the sizes of every workload.
//! - [`hub`]: the hub in-process on a fresh database, and the gRPC client
//!   side of every workload.
//! - [`direct`]: the database references (sqlx straight to SQLite or
//!   PostgreSQL) and fresh databases.
//! - [`noop`]: the transport ceiling, a gRPC server whose Append does nothing.
//! - [`nats`]: the peer, NATS JetStream.
//! - [`latency`]: the paced producer and latency collection of workload 4.
//! - [`report`]: series, medians, the table and the JSON file.

mod direct;
mod events;
mod hub;
mod latency;
mod nats;
mod noop;
mod report;

use anyhow::{Context, Result};
use direct::{Backend, Db, FreshDb, PgServer};
use events::{Planner, Sizes, TOPIC};
use hub::RunningHub;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use report::{
    EVENTS_PER_S, Key, MS, Report, Round, backend as be, key, system as sys, workload as wl,
};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The workloads `--only` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// 1: 1,000 events per Append, one producer.
    BatchedAppend,
    /// 2: one event per Append, 64 concurrent producers.
    SingleAppend,
    /// 3: read 1,000,000 stored events of one partition.
    CatchUp,
    /// 4: delivery latency from Append to a following reader.
    Latency,
    /// 5: Surface and ReadKey against the full read.
    Surface,
}

/// `eventhub-bench` options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Rounds of every workload; the table shows medians [default: 3, 1 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: Option<u32>,
    /// Small sizes (20,000 events, 2 s latency run, 1 round), to check the
    /// harness rather than to measure.
    #[arg(long)]
    pub quick: bool,
    /// Where to write every figure as JSON.
    #[arg(long, default_value = "bench.json")]
    pub json: PathBuf,
    /// Run only these workloads (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Workload>,
    /// A PostgreSQL server URL whose user may CREATE DATABASE; the bench
    /// creates and drops its own databases there. Also read from
    /// EVENTHUB_TEST_POSTGRES_URL. Without it, PostgreSQL is skipped.
    #[arg(long, env = "EVENTHUB_BENCH_POSTGRES_URL")]
    pub postgres: Option<String>,
    /// The nats-server binary [default: nats-server on PATH or in /usr/sbin].
    #[arg(long, env = "EVENTHUB_BENCH_NATS_SERVER")]
    pub nats_server: Option<PathBuf>,
}

const NO_POSTGRES: &str =
    "skipped: no PostgreSQL (pass --postgres or run under scripts/with-postgres.sh)";

/// Runs the bench; prints the table on stdout and writes the JSON file.
/// Fails when a run failed (after printing what did run).
pub async fn run(args: BenchArgs) -> Result<()> {
    let postgres_url = args
        .postgres
        .clone()
        .or_else(|| std::env::var("EVENTHUB_TEST_POSTGRES_URL").ok())
        .filter(|u| !u.is_empty());
    let pg = match &postgres_url {
        Some(url) => Some(PgServer::connect(url).await?),
        None => None,
    };
    let outcome = tokio::select! {
        r = bench(&args, pg.clone()) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Some(pg) = pg {
        pg.drop_all().await;
    }
    outcome
}

/// The options and environment of a run, as the JSON file records them.
#[derive(Serialize)]
struct Settings {
    quick: bool,
    rounds: u32,
    workloads: Vec<Workload>,
    sizes: Sizes,
    sqlite: String,
    postgres: Option<String>,
    nats_server: Option<String>,
}

#[derive(Serialize)]
struct Output<'a> {
    eventhub_version: &'static str,
    date: String,
    git_revision: Option<String>,
    machine: report::Machine,
    settings: &'a Settings,
    rows: &'a [report::Row],
    series: &'a [report::Series],
}

async fn bench(args: &BenchArgs, pg: Option<Arc<PgServer>>) -> Result<()> {
    let sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 3 });
    let workloads: Vec<Workload> = if args.only.is_empty() {
        vec![
            Workload::BatchedAppend,
            Workload::SingleAppend,
            Workload::CatchUp,
            Workload::Latency,
            Workload::Surface,
        ]
    } else {
        args.only.clone()
    };
    let mut backends = vec![Backend::Sqlite];
    if let Some(pg) = &pg {
        backends.push(Backend::Postgres(pg.clone()));
    }
    let progress = Progress::new();
    let uses_nats = workloads.iter().any(|w| {
        matches!(
            w,
            Workload::BatchedAppend | Workload::CatchUp | Workload::Latency
        )
    });
    let nats = match nats::find(args.nats_server.as_deref()) {
        _ if !uses_nats => Nats::Skipped("not run".to_owned()),
        None => Nats::Skipped(nats::NOT_FOUND.to_owned()),
        Some(bin) => match nats::Peer::start(&bin).await {
            Ok(peer) => Nats::Ready(Box::new(peer), bin),
            Err(e) => Nats::Failed(format!("failed: {e:#}")),
        },
    };
    let settings = Settings {
        quick: args.quick,
        rounds,
        workloads: workloads.clone(),
        sizes: sizes.clone(),
        sqlite: format!("{} (WAL, synchronous=FULL)", sqlx_sqlite_version().await),
        postgres: match &pg {
            Some(pg) => Some(pg.version().await?),
            None => None,
        },
        nats_server: match &nats {
            Nats::Ready(peer, bin) => Some(format!("{} ({})", peer.version(), bin.display())),
            _ => None,
        },
    };
    let payload = events::payload(sizes.payload_bytes);
    let mut bench = Bench {
        sizes,
        rounds,
        backends,
        nats,
        progress,
        report: Report::default(),
        epoch: Instant::now(),
        payload,
    };
    let has = |w| workloads.contains(&w);
    if has(Workload::BatchedAppend) {
        bench.batched_append().await;
    }
    if has(Workload::SingleAppend) {
        bench.single_append().await;
    }
    if has(Workload::CatchUp) || has(Workload::Surface) {
        bench
            .reads(has(Workload::CatchUp), has(Workload::Surface))
            .await;
    }
    if has(Workload::Latency) {
        bench.delivery_latency().await;
    }
    if let Nats::Ready(peer, _) = std::mem::replace(&mut bench.nats, Nats::Skipped(String::new())) {
        peer.stop().await;
    }
    bench.report.compute_medians();
    let rows = report::Table::new(&bench.report).build(&bench.sizes, &[be::SQLITE, be::POSTGRES]);
    let table = report::markdown(&rows);
    bench.progress.clear();
    println!("{table}");
    let output = Output {
        eventhub_version: env!("CARGO_PKG_VERSION"),
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        git_revision: report::git_revision(),
        machine: report::Machine::probe(),
        settings: &settings,
        rows: &rows,
        series: &bench.report.series,
    };
    let json = serde_json::to_string_pretty(&output)?;
    std::fs::write(&args.json, json + "\n")
        .with_context(|| format!("cannot write {}", args.json.display()))?;
    eprintln!("figures written to {}", args.json.display());
    if bench.report.any_failed() {
        anyhow::bail!("some runs failed; see the table");
    }
    Ok(())
}

async fn sqlx_sqlite_version() -> String {
    async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect("sqlite::memory:").await?;
        let v: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&mut c)
            .await?;
        anyhow::Ok(format!("SQLite {v}"))
    }
    .await
    .unwrap_or_else(|_| "SQLite".into())
}

enum Nats {
    Ready(Box<nats::Peer>, PathBuf),
    Skipped(String),
    Failed(String),
}

/// Progress bars on stderr, one per run; a line per finished run either way
/// (bars are hidden when stderr is not a terminal).
struct Progress {
    multi: MultiProgress,
}

impl Progress {
    fn new() -> Self {
        Progress {
            multi: MultiProgress::new(),
        }
    }

    fn bar(&self, label: &str, len: u64, time: bool) -> ProgressBar {
        let template = if time {
            "{prefix:48} [{bar:30}] {elapsed}"
        } else {
            "{prefix:48} [{bar:30}] {human_pos}/{human_len} ({per_sec})"
        };
        let pb = self.multi.add(ProgressBar::new(len));
        pb.set_style(
            ProgressStyle::with_template(template)
                .expect("progress template")
                .progress_chars("=> "),
        );
        pb.set_prefix(label.to_owned());
        pb
    }

    fn done(&self, pb: ProgressBar, summary: &str) {
        let label = pb.prefix();
        pb.finish_and_clear();
        self.multi.remove(&pb);
        self.multi.suspend(|| eprintln!("{label:48} {summary}"));
    }

    fn clear(&self) {
        let _ = self.multi.clear();
    }
}

struct Bench {
    sizes: Sizes,
    rounds: u32,
    backends: Vec<Backend>,
    nats: Nats,
    progress: Progress,
    report: Report,
    /// Latency stamps count from here.
    epoch: Instant,
    payload: Vec<u8>,
}

impl Bench {
    fn label(&self, round: u32, backend: &str, what: &str) -> String {
        format!("[{round}/{}] {backend:8} {what}", self.rounds)
    }

    /// Records a round and prints its line.
    fn finish(&mut self, pb: ProgressBar, k: Key, unit: &'static str, round: Result<Round>) {
        let summary = self.report.record(k, unit, round);
        self.progress.done(pb, &summary);
    }

    /// Records every peer series of `workload` as skipped (or failed) when
    /// there is no NATS to run; true when there is.
    fn nats_ready(&mut self, workload: &'static str, unit: &'static str) -> bool {
        let k = key(workload, be::NATS, sys::JETSTREAM);
        match &self.nats {
            Nats::Ready(..) => true,
            Nats::Skipped(note) => {
                let note = note.clone();
                self.report.skip(k, unit, &note);
                false
            }
            Nats::Failed(note) => {
                let e = anyhow::anyhow!("{}", note.trim_start_matches("failed: "));
                self.report.fail(k, unit, &e);
                false
            }
        }
    }

    /// Records the PostgreSQL series of a workload as skipped when there is
    /// no PostgreSQL to run.
    fn skip_postgres(&mut self, series: &[(&'static str, &'static str, &'static str)]) {
        if !self
            .backends
            .iter()
            .any(|b| matches!(b, Backend::Postgres(_)))
        {
            for &(workload, system, unit) in series {
                self.report
                    .skip(key(workload, be::POSTGRES, system), unit, NO_POSTGRES);
            }
        }
    }

    /// Workload 1: 1,000 events per Append from one producer, against
    /// multi-row INSERTs of the same rows and against NATS.
    async fn batched_append(&mut self) {
        let w = wl::BATCHED_APPEND;
        self.skip_postgres(&[
            (w, sys::HUB, EVENTS_PER_S),
            (w, sys::DIRECT_INSERT, EVENTS_PER_S),
        ]);
        let nats = self.nats_ready(w, EVENTS_PER_S);
        let s = self.sizes.clone();
        let what = format!(
            "batched append, {} events",
            report::thousands(s.batched_events as u64)
        );
        for round in 1..=self.rounds {
            flush_writes().await;
            let batches = events::batches(s.batched_events, s.append_batch, s.keys, &self.payload);
            for backend in self.backends.clone() {
                let name = backend.name();
                let k = key(w, name, sys::HUB);
                if self.report.wants(k) {
                    let pb = self.progress.bar(
                        &self.label(round, name, &format!("{what} · hub")),
                        s.batched_events as u64,
                        false,
                    );
                    let r = self.hub_batched(&backend, &batches, &pb).await;
                    self.finish(pb, k, EVENTS_PER_S, r);
                }
                let k = key(w, name, sys::DIRECT_INSERT);
                if self.report.wants(k) {
                    let pb = self.progress.bar(
                        &self.label(round, name, &format!("{what} · direct INSERT")),
                        s.batched_events as u64,
                        false,
                    );
                    let r = direct_batched(&backend, &batches, s.partitions, &pb).await;
                    self.finish(pb, k, EVENTS_PER_S, r);
                }
            }
            let k = key(w, be::NATS, sys::JETSTREAM);
            if nats && self.report.wants(k) {
                let pb = self.progress.bar(
                    &self.label(round, be::NATS, &format!("{what} · JetStream")),
                    s.batched_events as u64,
                    false,
                );
                let r = match &self.nats {
                    Nats::Ready(peer, _) => peer
                        .batched(&batches, s.partitions, &pb)
                        .await
                        .map(|(t, n)| Round::rate(t, n, n)),
                    _ => unreachable!(),
                };
                self.finish(pb, k, EVENTS_PER_S, r);
            }
        }
    }

    async fn hub_batched(
        &self,
        backend: &Backend,
        batches: &[Vec<(String, Vec<u8>)>],
        pb: &ProgressBar,
    ) -> Result<Round> {
        let requests = batches
            .iter()
            .map(|b| {
                b.iter()
                    .map(|(k, p)| events::append_event(k.clone(), p.clone()))
                    .collect()
            })
            .collect();
        let fresh = FreshDb::new(backend).await?;
        let result = async {
            let hub = RunningHub::start(fresh.url(), self.sizes.partitions).await?;
            let (elapsed, acked) = hub::append_batches(&mut hub.client(), requests, pb).await?;
            let stored = hub.event_count().await?;
            hub.stop().await?;
            anyhow::Ok(Round::rate(elapsed, acked, stored))
        }
        .await;
        fresh.dispose().await?;
        result
    }

    /// Workload 2: one event per Append from 64 producers, against a no-op
    /// gRPC server and against one-row transactions.
    async fn single_append(&mut self) {
        let w = wl::SINGLE_APPEND;
        self.skip_postgres(&[
            (w, sys::HUB, EVENTS_PER_S),
            (w, sys::ONE_ROW_TX, EVENTS_PER_S),
        ]);
        let s = self.sizes.clone();
        let ms = s.single_ms;
        let what = format!("single-event append, {} producers", s.producers);
        for round in 1..=self.rounds {
            flush_writes().await;
            for backend in self.backends.clone() {
                let name = backend.name();
                let k = key(w, name, sys::HUB);
                if self.report.wants(k) {
                    let pb = self.progress.bar(
                        &self.label(round, name, &format!("{what} · hub")),
                        ms,
                        true,
                    );
                    let r = self.hub_singles(&backend, &pb).await;
                    self.finish(pb, k, EVENTS_PER_S, r);
                }
                let k = key(w, name, sys::ONE_ROW_TX);
                if self.report.wants(k) {
                    let writers = match backend {
                        Backend::Sqlite => 1,
                        Backend::Postgres(_) => s.postgres_row_writers,
                    };
                    let pb = self.progress.bar(
                        &self.label(
                            round,
                            name,
                            &format!("one row per transaction, {writers} writer(s)"),
                        ),
                        ms,
                        true,
                    );
                    let r = one_row_transactions(&backend, writers, &s, &self.payload, &pb).await;
                    self.finish(pb, k, EVENTS_PER_S, r);
                }
            }
            let k = key(w, be::NONE, sys::NOOP_GRPC);
            if self.report.wants(k) {
                let pb = self.progress.bar(
                    &self.label(round, "grpc", &format!("{what} · no-op server")),
                    ms,
                    true,
                );
                let r = async {
                    let server = noop::NoopServer::start().await?;
                    let channel = hub::connect(server.addr).await?;
                    let (t, n) = hub::append_singles(channel, &s, &self.payload, &pb).await?;
                    server.stop().await?;
                    anyhow::Ok(Round::rate(t, n, n))
                }
                .await;
                self.finish(pb, k, EVENTS_PER_S, r);
            }
        }
    }

    async fn hub_singles(&self, backend: &Backend, pb: &ProgressBar) -> Result<Round> {
        let fresh = FreshDb::new(backend).await?;
        let result = async {
            let hub = RunningHub::start(fresh.url(), self.sizes.partitions).await?;
            let (elapsed, acked) =
                hub::append_singles(hub.channel(), &self.sizes, &self.payload, pb).await?;
            let stored = hub.event_count().await?;
            hub.stop().await?;
            anyhow::Ok(Round::rate(elapsed, acked, stored))
        }
        .await;
        fresh.dispose().await?;
        result
    }

    /// Workloads 3 and 5 on one dataset per backend: `read_events` events in
    /// one partition over `read_keys` keys, loaded once through the hub.
    async fn reads(&mut self, catch_up: bool, surface: bool) {
        let s = self.sizes.clone();
        let n = s.read_events as u64;
        let units = [
            (wl::CATCH_UP_READ, sys::HUB, EVENTS_PER_S, catch_up),
            (wl::CATCH_UP_READ, sys::DIRECT_READ, EVENTS_PER_S, catch_up),
            (
                wl::CATCH_UP_READ,
                sys::HUB_CONSUMER_PAGES,
                EVENTS_PER_S,
                catch_up,
            ),
            (wl::SURFACE, sys::SURFACE, MS, surface),
            (wl::SURFACE, sys::READ_KEY, MS, surface),
            (wl::SURFACE, sys::FULL_READ, MS, surface),
        ];
        let run: Vec<_> = units
            .iter()
            .filter(|u| u.3)
            .map(|&(w, system, unit, _)| (w, system, unit))
            .collect();
        self.skip_postgres(&run);
        let nats = catch_up && self.nats_ready(wl::CATCH_UP_READ, EVENTS_PER_S);
        let keys = events::keys_in_partition(0, s.partitions, s.read_keys());
        // Load every backend's dataset (and the peer's) before the rounds.
        let mut datasets = Vec::new();
        for backend in self.backends.clone() {
            let name = backend.name();
            let pb = self.progress.bar(
                &format!(
                    "load {name}: {} events into partition 0",
                    report::thousands(n)
                ),
                n,
                false,
            );
            match Dataset::load(&backend, &s, &keys, &self.payload, &pb).await {
                Ok(d) => {
                    self.progress
                        .done(pb, &format!("loaded in {:.1?}", d.load_time));
                    datasets.push(d);
                }
                Err(e) => {
                    self.progress.done(pb, &format!("failed: {e:#}"));
                    for (w, system, unit, on) in units {
                        if on {
                            self.report.fail(key(w, name, system), unit, &e);
                        }
                    }
                }
            }
        }
        let mut nats_loaded = false;
        if nats {
            let pb = self.progress.bar(
                &format!(
                    "load nats: {} messages into one subject",
                    report::thousands(n)
                ),
                n,
                false,
            );
            let started = Instant::now();
            let r = match &self.nats {
                Nats::Ready(peer, _) => {
                    peer.load(s.read_events, s.append_batch, &self.payload, &pb)
                        .await
                }
                _ => unreachable!(),
            };
            match r {
                Ok(stored) if stored == n => {
                    nats_loaded = true;
                    self.progress
                        .done(pb, &format!("loaded in {:.1?}", started.elapsed()));
                }
                Ok(stored) => {
                    let e = anyhow::anyhow!("stream holds {stored} messages after loading {n}");
                    self.progress.done(pb, &format!("failed: {e}"));
                    self.report.fail(
                        key(wl::CATCH_UP_READ, be::NATS, sys::JETSTREAM),
                        EVENTS_PER_S,
                        &e,
                    );
                }
                Err(e) => {
                    self.progress.done(pb, &format!("failed: {e:#}"));
                    self.report.fail(
                        key(wl::CATCH_UP_READ, be::NATS, sys::JETSTREAM),
                        EVENTS_PER_S,
                        &e,
                    );
                }
            }
        }
        let probe_key = keys[42 % keys.len()].clone();
        for round in 1..=self.rounds {
            for d in &datasets {
                let name = d.backend;
                let pb =
                    self.progress
                        .bar(&self.label(round, name, "catch-up read · hub"), n, false);
                let r = hub::read_partition(&mut d.hub.client(), 0, hub::PAGE_EVENTS, &pb).await;
                let full = r
                    .as_ref()
                    .map(|&(t, got)| (t, got))
                    .map_err(|e| anyhow::anyhow!("{e:#}"));
                let summary = if catch_up {
                    self.report.record(
                        key(wl::CATCH_UP_READ, name, sys::HUB),
                        EVENTS_PER_S,
                        r.map(|(t, got)| Round::rate(t, got, n)),
                    )
                } else {
                    String::new()
                };
                if surface {
                    let s2 = self.report.record(
                        key(wl::SURFACE, name, sys::FULL_READ),
                        MS,
                        full.map(|(t, got)| Round::duration(t, got, n)),
                    );
                    let summary = if catch_up { summary.clone() } else { s2 };
                    self.progress.done(pb, &summary);
                } else {
                    self.progress.done(pb, &summary);
                }
                if catch_up {
                    let k = key(wl::CATCH_UP_READ, name, sys::DIRECT_READ);
                    if self.report.wants(k) {
                        let pb = self.progress.bar(
                            &self.label(round, name, "catch-up read · direct SELECT"),
                            n,
                            false,
                        );
                        let r = d
                            .direct
                            .read_partition(TOPIC, 0, &pb)
                            .await
                            .map(|(t, got)| Round::rate(t, got, n));
                        self.finish(pb, k, EVENTS_PER_S, r);
                    }
                    let k = key(wl::CATCH_UP_READ, name, sys::HUB_CONSUMER_PAGES);
                    if self.report.wants(k) {
                        let pb = self.progress.bar(
                            &self.label(round, name, "catch-up read · hub, pages of 100"),
                            n,
                            false,
                        );
                        let r = hub::read_partition(
                            &mut d.hub.client(),
                            0,
                            hub::CONSUMER_PAGE_EVENTS,
                            &pb,
                        )
                        .await
                        .map(|(t, got)| Round::rate(t, got, n));
                        self.finish(pb, k, EVENTS_PER_S, r);
                    }
                }
                if surface {
                    let k = key(wl::SURFACE, name, sys::SURFACE);
                    if self.report.wants(k) {
                        let pb = self.progress.bar(
                            &self.label(round, name, "Surface of every key · hub"),
                            0,
                            true,
                        );
                        let r = hub::surface(&mut d.hub.client())
                            .await
                            .map(|(t, got)| Round::duration(t, got, s.read_keys() as u64));
                        self.finish(pb, k, MS, r);
                    }
                    let k = key(wl::SURFACE, name, sys::READ_KEY);
                    if self.report.wants(k) {
                        let pb = self.progress.bar(
                            &self.label(round, name, "ReadKey of one key · hub"),
                            0,
                            true,
                        );
                        let r = hub::read_key(&mut d.hub.client(), &probe_key)
                            .await
                            .map(|(t, got)| Round::duration(t, got, s.events_per_key as u64));
                        self.finish(pb, k, MS, r);
                    }
                }
            }
            let k = key(wl::CATCH_UP_READ, be::NATS, sys::JETSTREAM);
            if nats_loaded && self.report.wants(k) {
                let pb = self.progress.bar(
                    &self.label(
                        round,
                        be::NATS,
                        "catch-up read · JetStream ordered consumer",
                    ),
                    n,
                    false,
                );
                let r = match &self.nats {
                    Nats::Ready(peer, _) => peer
                        .ordered_read(n, &pb)
                        .await
                        .map(|(t, got)| Round::rate(t, got, n)),
                    _ => unreachable!(),
                };
                self.finish(pb, k, EVENTS_PER_S, r);
            }
        }
        for d in datasets {
            d.close().await;
        }
    }

    /// Workload 4: a paced producer and a follower per partition.
    async fn delivery_latency(&mut self) {
        let w = wl::DELIVERY_LATENCY;
        self.skip_postgres(&[(w, sys::HUB, MS)]);
        let nats = self.nats_ready(w, MS);
        let s = self.sizes.clone();
        let what = format!(
            "delivery latency, {} events/s for {} s",
            report::thousands(s.latency_rate),
            s.latency_ms / 1000
        );
        for round in 1..=self.rounds {
            flush_writes().await;
            for backend in self.backends.clone() {
                let name = backend.name();
                let k = key(w, name, sys::HUB);
                if self.report.wants(k) {
                    let pb = self.progress.bar(
                        &self.label(round, name, &format!("{what} · hub")),
                        s.latency_ms,
                        true,
                    );
                    let r = self.hub_delivery(&backend, &pb).await;
                    self.finish(pb, k, MS, r);
                }
            }
            let k = key(w, be::NATS, sys::JETSTREAM);
            if nats && self.report.wants(k) {
                let pb = self.progress.bar(
                    &self.label(round, be::NATS, &format!("{what} · JetStream")),
                    s.latency_ms,
                    true,
                );
                let r = match &self.nats {
                    Nats::Ready(peer, _) => peer
                        .delivery(&s, self.epoch, &self.payload, &pb)
                        .await
                        .map(|run| {
                            Round::latency(&run.histogram, run.elapsed, run.received, run.acked)
                        }),
                    _ => unreachable!(),
                };
                self.finish(pb, k, MS, r);
            }
        }
    }

    async fn hub_delivery(&self, backend: &Backend, pb: &ProgressBar) -> Result<Round> {
        let fresh = FreshDb::new(backend).await?;
        let result = async {
            let hub = RunningHub::start(fresh.url(), self.sizes.partitions).await?;
            let run = hub::delivery(&hub, &self.sizes, self.epoch, &self.payload, pb).await;
            let stored = hub.event_count().await;
            hub.stop().await?;
            let run = run?;
            let stored = stored?;
            if stored != run.acked {
                anyhow::bail!(
                    "the hub stores {stored} events after {} acknowledged",
                    run.acked
                );
            }
            anyhow::Ok(Round::latency(
                &run.histogram,
                run.elapsed,
                run.received,
                run.acked,
            ))
        }
        .await;
        fresh.dispose().await?;
        result
    }
}

/// Writes back every dirty page of the machine (`sync`), before a round of
/// a workload whose commits wait for the disk, so that the writes of what
/// ran before (a loaded dataset, a dropped database) are not flushed during
/// its timed runs. Delivery latency right after the read workloads
/// dropped their datasets (`--only catch-up,latency`, twice each,
/// alternated) had a p99.9 of 21.2 / 22.6 and 4.53 / 46.6 ms (SQLite /
/// PostgreSQL) without it, and 4.22 / 6.16 and 4.04 / 11.0 ms with it.
async fn flush_writes() {
    if let Err(e) = tokio::process::Command::new("sync").status().await {
        tracing::debug!(error = %e, "sync did not run");
    }
}

/// Workload 1's reference: the same rows, planned as the hub would number
/// them, inserted 1,000 per transaction into a fresh database.
async fn direct_batched(
    backend: &Backend,
    batches: &[Vec<(String, Vec<u8>)>],
    partitions: u32,
    pb: &ProgressBar,
) -> Result<Round> {
    let mut planner = Planner::new(partitions);
    let rows: Vec<_> = batches
        .iter()
        .map(|b| planner.plan(b.iter().cloned()))
        .collect();
    let fresh = FreshDb::new(backend).await?;
    let result = async {
        let db = Db::create(&fresh, 1).await?;
        let started = Instant::now();
        let mut n = 0u64;
        for batch in &rows {
            db.insert_batch(batch).await?;
            n += batch.len() as u64;
            pb.inc(batch.len() as u64);
        }
        let elapsed = started.elapsed();
        let stored = db.count().await?;
        db.close().await;
        anyhow::Ok(Round::rate(elapsed, n, stored))
    }
    .await;
    fresh.dispose().await?;
    result
}

/// Workload 2's database reference: one row per transaction.
async fn one_row_transactions(
    backend: &Backend,
    writers: usize,
    s: &Sizes,
    payload: &[u8],
    pb: &ProgressBar,
) -> Result<Round> {
    let fresh = FreshDb::new(backend).await?;
    let result = async {
        let db = match backend {
            Backend::Sqlite => direct::sqlite_single_writer(&fresh).await?,
            Backend::Postgres(_) => Db::create(&fresh, writers as u32).await?,
        };
        let started = Instant::now();
        let ticker = hub::tick_progress(pb.clone(), started);
        let r = db
            .insert_one_per_transaction(
                writers,
                Duration::from_millis(s.single_ms),
                payload,
                s.partitions,
                s.keys,
            )
            .await;
        ticker.abort();
        let (elapsed, n) = r?;
        let stored = db.count().await?;
        db.close().await;
        anyhow::Ok(Round::rate(elapsed, n, stored))
    }
    .await;
    fresh.dispose().await?;
    result
}

/// The read dataset of one backend: a hub serving it, and a direct
/// connection to the same database for the read reference.
struct Dataset {
    backend: &'static str,
    fresh: FreshDb,
    hub: RunningHub,
    direct: Db,
    load_time: Duration,
}

impl Dataset {
    async fn load(
        backend: &Backend,
        s: &Sizes,
        keys: &[String],
        payload: &[u8],
        pb: &ProgressBar,
    ) -> Result<Dataset> {
        let fresh = FreshDb::new(backend).await?;
        let hub = match RunningHub::start(fresh.url(), s.partitions).await {
            Ok(hub) => hub,
            Err(e) => {
                fresh.dispose().await?;
                return Err(e);
            }
        };
        let started = Instant::now();
        let loaded = async {
            let stored = hub::load(&hub, s, keys, payload, pb).await?;
            if stored != s.read_events as u64 {
                anyhow::bail!(
                    "the hub stores {stored} events after loading {}",
                    s.read_events
                );
            }
            let direct = Db::open(&fresh, 1, true).await?;
            direct.settle().await?;
            Ok(direct)
        }
        .await;
        match loaded {
            Ok(direct) => Ok(Dataset {
                backend: backend.name(),
                fresh,
                hub,
                direct,
                load_time: started.elapsed(),
            }),
            Err(e) => {
                let _ = hub.stop().await;
                fresh.dispose().await?;
                Err(e)
            }
        }
    }

    async fn close(self) {
        self.direct.close().await;
        if let Err(e) = self.hub.stop().await {
            eprintln!("stopping the {} dataset's hub: {e:#}", self.backend);
        }
        if let Err(e) = self.fresh.dispose().await {
            eprintln!("removing the {} dataset: {e:#}", self.backend);
        }
    }
}
