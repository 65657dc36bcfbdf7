//! Rounds, medians, the markdown table and the JSON file.
//!
//! A *series* is one thing measured over the rounds: a workload, on a
//! backend, by one system (the hub, a reference, the peer). The table
//! compares series medians; the JSON keeps every round of every series.

use super::events::Sizes;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Duration;

pub mod workload {
    pub const BATCHED_APPEND: &str = "batched_append";
    pub const SINGLE_APPEND: &str = "single_append";
    pub const CATCH_UP_READ: &str = "catch_up_read";
    pub const DELIVERY_LATENCY: &str = "delivery_latency";
    pub const SURFACE: &str = "surface";
}

pub mod system {
    /// The hub over gRPC.
    pub const HUB: &str = "hub";
    /// The hub over gRPC, read in pages of 100 events: what the consumers
    /// of `clients/` ask for by default.
    pub const HUB_CONSUMER_PAGES: &str = "hub_consumer_pages";
    /// Multi-row INSERTs straight into the database.
    pub const DIRECT_INSERT: &str = "direct_insert";
    /// One row per transaction straight into the database.
    pub const ONE_ROW_TX: &str = "one_row_per_transaction";
    /// The same gRPC call to a server that does nothing.
    pub const NOOP_GRPC: &str = "noop_grpc";
    /// SELECT ... ORDER BY sequence straight from the hub's database.
    pub const DIRECT_READ: &str = "direct_read";
    /// NATS JetStream.
    pub const JETSTREAM: &str = "jetstream";
    /// Workload 5, through the hub: Surface of every key.
    pub const SURFACE: &str = "surface";
    /// Workload 5, through the hub: ReadKey of one key.
    pub const READ_KEY: &str = "read_key";
    /// Workload 5, through the hub: ReadPartition of the whole dataset.
    pub const FULL_READ: &str = "full_read";
}

pub mod backend {
    pub const SQLITE: &str = "sqlite";
    pub const POSTGRES: &str = "postgres";
    pub const NATS: &str = "nats";
    /// Needs no database (the no-op gRPC server).
    pub const NONE: &str = "none";
}

pub const EVENTS_PER_S: &str = "events/s";
pub const MS: &str = "ms";

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            p50: ms(0.5),
            p99: ms(0.99),
            p999: ms(0.999),
        }
    }
}

/// One round of one series.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// The figure: events/s, or milliseconds (a duration or, for latency,
    /// the p99).
    pub value: f64,
    /// How long the measured part took.
    pub seconds: f64,
    /// Events (or keys) the run completed: acknowledged, read, received.
    pub count: u64,
    /// The same count checked independently: events the hub (or database,
    /// or stream) reports stored, events expected to be read, events
    /// acknowledged to the latency producer. The run fails when they differ.
    pub verified: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Percentiles>,
}

impl Round {
    /// A throughput round: `count` events in `elapsed`.
    pub fn rate(elapsed: Duration, count: u64, verified: u64) -> Round {
        Round {
            value: count as f64 / elapsed.as_secs_f64(),
            seconds: elapsed.as_secs_f64(),
            count,
            verified,
            latency_ms: None,
        }
    }

    /// A duration round, in milliseconds.
    pub fn duration(elapsed: Duration, count: u64, verified: u64) -> Round {
        Round {
            value: elapsed.as_secs_f64() * 1000.0,
            seconds: elapsed.as_secs_f64(),
            count,
            verified,
            latency_ms: None,
        }
    }

    /// A latency round; the value is the p99.
    pub fn latency(h: &Histogram<u64>, elapsed: Duration, count: u64, verified: u64) -> Round {
        let p = Percentiles::of(h);
        Round {
            value: p.p99,
            seconds: elapsed.as_secs_f64(),
            count,
            verified,
            latency_ms: Some(p),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Skipped,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub workload: &'static str,
    pub backend: &'static str,
    pub system: &'static str,
    pub unit: &'static str,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub rounds: Vec<Round>,
    pub median: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_latency_ms: Option<Percentiles>,
}

/// Identifies a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub workload: &'static str,
    pub backend: &'static str,
    pub system: &'static str,
}

pub fn key(workload: &'static str, backend: &'static str, system: &'static str) -> Key {
    Key {
        workload,
        backend,
        system,
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub series: Vec<Series>,
}

impl Report {
    fn entry(&mut self, k: Key, unit: &'static str) -> &mut Series {
        let i = match self.series.iter().position(|s| {
            s.workload == k.workload && s.backend == k.backend && s.system == k.system
        }) {
            Some(i) => i,
            None => {
                self.series.push(Series {
                    workload: k.workload,
                    backend: k.backend,
                    system: k.system,
                    unit,
                    status: Status::Ok,
                    note: None,
                    rounds: Vec::new(),
                    median: None,
                    median_latency_ms: None,
                });
                self.series.len() - 1
            }
        };
        &mut self.series[i]
    }

    pub fn get(&self, k: Key) -> Option<&Series> {
        self.series
            .iter()
            .find(|s| s.workload == k.workload && s.backend == k.backend && s.system == k.system)
    }

    /// False once the series failed or was skipped: later rounds leave it be.
    pub fn wants(&self, k: Key) -> bool {
        self.get(k).is_none_or(|s| s.status == Status::Ok)
    }

    /// Records a round, or the failure that ended the series. A round whose
    /// count differs from its verified count is a failure.
    pub fn record(&mut self, k: Key, unit: &'static str, round: anyhow::Result<Round>) -> String {
        let s = self.entry(k, unit);
        if s.status != Status::Ok {
            return String::new();
        }
        match round {
            Ok(r) if r.count != r.verified => {
                s.status = Status::Failed;
                s.note = Some(format!(
                    "failed: counted {} but verified {}",
                    r.count, r.verified
                ));
                s.rounds.push(r);
            }
            Ok(r) => {
                s.rounds.push(r);
            }
            Err(e) => {
                s.status = Status::Failed;
                s.note = Some(format!("failed: {e:#}"));
            }
        }
        match (&s.note, s.rounds.last()) {
            (Some(note), _) => note.clone(),
            (None, Some(r)) => match r.latency_ms {
                Some(p) => latency_text(p),
                None => value_text(r.value, unit),
            },
            (None, None) => String::new(),
        }
    }

    /// Marks a series as not run, and why.
    pub fn skip(&mut self, k: Key, unit: &'static str, note: &str) {
        let s = self.entry(k, unit);
        if s.status == Status::Ok && s.rounds.is_empty() {
            s.status = Status::Skipped;
            s.note = Some(note.to_owned());
        }
    }

    /// Marks a series as failed without a round (its preparation failed).
    pub fn fail(&mut self, k: Key, unit: &'static str, e: &anyhow::Error) {
        let _ = self.record(k, unit, Err(anyhow::anyhow!("{e:#}")));
    }

    pub fn compute_medians(&mut self) {
        for s in &mut self.series {
            s.median = median(s.rounds.iter().map(|r| r.value).collect());
            let lat: Vec<Percentiles> = s.rounds.iter().filter_map(|r| r.latency_ms).collect();
            if !lat.is_empty() {
                s.median_latency_ms = Some(Percentiles {
                    p50: median(lat.iter().map(|p| p.p50).collect()).unwrap_or_default(),
                    p99: median(lat.iter().map(|p| p.p99).collect()).unwrap_or_default(),
                    p999: median(lat.iter().map(|p| p.p999).collect()).unwrap_or_default(),
                });
            }
        }
    }

    pub fn any_failed(&self) -> bool {
        self.series.iter().any(|s| s.status == Status::Failed)
    }
}

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub workload: String,
    pub backend: String,
    pub hub: String,
    pub reference: String,
    pub ratio: Option<f64>,
    pub target: String,
    pub met: Option<bool>,
}

/// `12,345`
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn ms_text(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

pub fn value_text(v: f64, unit: &str) -> String {
    match unit {
        MS => ms_text(v),
        _ => format!("{} {unit}", thousands(v.round() as u64)),
    }
}

pub fn latency_text(p: Percentiles) -> String {
    format!(
        "p50 {} · p99 {} · p99.9 {}",
        ms_text(p.p50),
        ms_text(p.p99),
        ms_text(p.p999)
    )
}

/// How a comparison is judged.
#[derive(Clone, Copy)]
enum Target {
    /// No target: the ratio is information.
    None,
    /// hub / reference must be at least this.
    AtLeast(f64),
}

/// What a series shows in a cell: its median figure, or why it has none.
fn cell(s: Option<&Series>) -> Result<String, String> {
    let s = s.ok_or_else(|| "not run".to_owned())?;
    if s.status != Status::Ok {
        return Err(s.note.clone().unwrap_or_else(|| "not run".into()));
    }
    match (s.median_latency_ms, s.median) {
        (Some(p), _) => Ok(latency_text(p)),
        (None, Some(v)) => Ok(value_text(v, s.unit)),
        (None, None) => Err("no rounds".into()),
    }
}

fn number(s: Option<&Series>) -> Option<f64> {
    s.filter(|s| s.status == Status::Ok).and_then(|s| s.median)
}

fn ratio_text(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else if r >= 0.1 {
        format!("{r:.2}")
    } else {
        format!("{r:.4}")
    }
}

/// Builds the table from the series.
pub struct Table<'a> {
    report: &'a Report,
    pub rows: Vec<Row>,
}

impl<'a> Table<'a> {
    pub fn new(report: &'a Report) -> Self {
        Table {
            report,
            rows: Vec::new(),
        }
    }

    /// A row comparing `hub` against `reference` (labelled `label`).
    #[allow(clippy::too_many_arguments)]
    fn compare(
        &mut self,
        workload: &str,
        backend: &str,
        hub: Key,
        reference: Key,
        label: &str,
        target: Target,
    ) {
        let (h, r) = (self.report.get(hub), self.report.get(reference));
        let hub_cell = cell(h);
        let ref_cell = cell(r);
        let ratio = match (number(h), number(r)) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let (target_text, met) = match target {
            Target::None => ("—".to_owned(), None),
            Target::AtLeast(t) => (format!("≥ {t}"), ratio.map(|x| x >= t)),
        };
        self.rows.push(Row {
            workload: workload.to_owned(),
            backend: backend.to_owned(),
            hub: hub_cell.unwrap_or_else(|e| e),
            reference: format!("{label}: {}", ref_cell.unwrap_or_else(|e| e)),
            ratio,
            target: target_text,
            met,
        });
    }

    /// A row judging the hub alone against an absolute latency bound.
    fn p99_bound(&mut self, workload: &str, backend: &str, hub: Key, bound_ms: Option<f64>) {
        let h = self.report.get(hub);
        let p99 = h
            .filter(|s| s.status == Status::Ok)
            .and_then(|s| s.median_latency_ms)
            .map(|p| p.p99);
        let (target, met) = match bound_ms {
            Some(b) => (format!("p99 ≤ {b} ms"), p99.map(|p| p <= b)),
            None => ("—".to_owned(), None),
        };
        self.rows.push(Row {
            workload: workload.to_owned(),
            backend: backend.to_owned(),
            hub: cell(h).unwrap_or_else(|e| e),
            reference: "—".into(),
            ratio: None,
            target,
            met,
        });
    }

    /// A row saying the hub's series for this backend did not run.
    fn not_run(&mut self, workload: &str, backend: &str, note: String) {
        self.rows.push(Row {
            workload: workload.to_owned(),
            backend: backend.to_owned(),
            hub: note,
            reference: "—".into(),
            ratio: None,
            target: "—".into(),
            met: None,
        });
    }

    /// Every row, workload by workload, each on every backend, for the
    /// workloads that ran.
    pub fn build(mut self, sizes: &Sizes, backends: &[&'static str]) -> Vec<Row> {
        use {backend as b, system as s, workload as w};
        let nats_batched = key(w::BATCHED_APPEND, b::NATS, s::JETSTREAM);
        let nats_read = key(w::CATCH_UP_READ, b::NATS, s::JETSTREAM);
        let nats_latency = key(w::DELIVERY_LATENCY, b::NATS, s::JETSTREAM);
        let labels = [
            (
                w::BATCHED_APPEND,
                format!(
                    "1. batched append ({} events/Append, 1 producer)",
                    thousands(sizes.append_batch as u64)
                ),
            ),
            (
                w::SINGLE_APPEND,
                format!("2. single-event append ({} producers)", sizes.producers),
            ),
            (
                w::CATCH_UP_READ,
                format!(
                    "3. catch-up read ({} events of one partition)",
                    thousands(sizes.read_events as u64)
                ),
            ),
            (
                w::DELIVERY_LATENCY,
                format!(
                    "4. delivery latency ({} events/s, {} followers)",
                    thousands(sizes.latency_rate),
                    sizes.partitions
                ),
            ),
            (
                w::SURFACE,
                format!(
                    "5. Surface ({} keys, {} events)",
                    thousands(sizes.read_keys() as u64),
                    thousands(sizes.read_events as u64)
                ),
            ),
        ];
        for (wl, label) in &labels {
            for &be in backends {
                let hub = key(
                    wl,
                    be,
                    if *wl == w::SURFACE {
                        s::SURFACE
                    } else {
                        s::HUB
                    },
                );
                let Some(series) = self.report.get(hub) else {
                    continue;
                };
                if series.status == Status::Skipped {
                    let note = series.note.clone().unwrap_or_default();
                    self.not_run(label, be, note);
                    continue;
                }
                match *wl {
                    w::BATCHED_APPEND => {
                        self.compare(
                            label,
                            be,
                            hub,
                            key(wl, be, s::DIRECT_INSERT),
                            "direct multi-row INSERT",
                            Target::AtLeast(0.6),
                        );
                        self.compare(
                            label,
                            be,
                            hub,
                            nats_batched,
                            "NATS JetStream",
                            Target::AtLeast(1.0),
                        );
                    }
                    w::SINGLE_APPEND => {
                        self.compare(
                            label,
                            be,
                            hub,
                            key(wl, b::NONE, s::NOOP_GRPC),
                            "no-op gRPC Append",
                            Target::AtLeast(0.6),
                        );
                        self.compare(
                            label,
                            be,
                            hub,
                            key(wl, be, s::ONE_ROW_TX),
                            "one row per transaction",
                            Target::AtLeast(3.0),
                        );
                    }
                    w::CATCH_UP_READ => {
                        self.compare(
                            label,
                            be,
                            hub,
                            key(wl, be, s::DIRECT_READ),
                            "direct SELECT ORDER BY sequence",
                            Target::AtLeast(0.8),
                        );
                        self.compare(
                            label,
                            be,
                            hub,
                            nats_read,
                            "NATS JetStream ordered consumer",
                            Target::AtLeast(1.0),
                        );
                        let pages = key(wl, be, s::HUB_CONSUMER_PAGES);
                        if self.report.get(pages).is_some() {
                            let label = format!(
                                "3. catch-up read in pages of 100, the consumers' default ({} events)",
                                thousands(sizes.read_events as u64)
                            );
                            self.compare(
                                &label,
                                be,
                                pages,
                                key(wl, be, s::DIRECT_READ),
                                "direct SELECT ORDER BY sequence",
                                Target::None,
                            );
                        }
                    }
                    w::DELIVERY_LATENCY => {
                        let bound = (be == b::SQLITE).then_some(5.0);
                        self.p99_bound(label, be, hub, bound);
                        self.compare_p99(label, be, hub, nats_latency);
                    }
                    w::SURFACE => {
                        let full = key(wl, be, s::FULL_READ);
                        self.compare(
                            label,
                            be,
                            hub,
                            full,
                            "full read (ReadPartition)",
                            Target::None,
                        );
                        let rk_label =
                            format!("5. ReadKey (1 key, {} events)", sizes.events_per_key);
                        self.compare(
                            &rk_label,
                            be,
                            key(wl, be, s::READ_KEY),
                            full,
                            "full read (ReadPartition)",
                            Target::None,
                        );
                    }
                    _ => {}
                }
            }
        }
        self.rows
    }

    /// Delivery against NATS: compares p99s, hub / NATS ≤ 2.
    fn compare_p99(&mut self, workload: &str, backend: &str, hub: Key, nats: Key) {
        let p99 = |k: Key| {
            self.report
                .get(k)
                .filter(|s| s.status == Status::Ok)
                .and_then(|s| s.median_latency_ms)
                .map(|p| p.p99)
        };
        let ratio = match (p99(hub), p99(nats)) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        self.rows.push(Row {
            workload: workload.to_owned(),
            backend: backend.to_owned(),
            hub: match p99(hub) {
                Some(p) => format!("p99 {}", ms_text(p)),
                None => cell(self.report.get(hub)).unwrap_or_else(|e| e),
            },
            reference: format!(
                "NATS JetStream ordered push consumer: {}",
                cell(self.report.get(nats)).unwrap_or_else(|e| e)
            ),
            ratio,
            target: "≤ 2 (p99)".into(),
            met: ratio.map(|r| r <= 2.0),
        });
    }
}

/// The table as markdown.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| workload | backend | hub | reference | ratio | target | met |\n| --- | --- | ---: | --- | ---: | --- | --- |\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.workload,
            r.backend,
            r.hub,
            r.reference,
            r.ratio.map_or("—".into(), ratio_text),
            r.target,
            match r.met {
                Some(true) => "yes",
                Some(false) => "no",
                None => "—",
            }
        ));
    }
    out
}

/// The machine the figures come from.
#[derive(Debug, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub kernel: String,
    pub cpu: Option<String>,
    pub memory_gib: Option<f64>,
}

impl Machine {
    pub fn probe() -> Machine {
        let kernel = std::process::Command::new("uname")
            .arg("-srm")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| std::env::consts::OS.to_owned());
        let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        });
        let memory_gib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map(|kb| (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0)
        });
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel,
            cpu,
            memory_gib,
        }
    }
}

/// The git revision of the source tree the binary was built from, with
/// `-dirty` when it has uncommitted changes; `None` outside a checkout.
pub fn git_revision() -> Option<String> {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let rev = git(&["rev-parse", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{rev}-dirty") } else { rev })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Medians of odd and even counts.
    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    /// Thousands separators.
    #[test]
    fn separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    /// A round whose count differs from its verified count fails the series.
    #[test]
    fn mismatched_counts_fail() {
        let mut r = Report::default();
        let k = key(workload::BATCHED_APPEND, backend::SQLITE, system::HUB);
        r.record(
            k,
            EVENTS_PER_S,
            Ok(Round::rate(Duration::from_secs(1), 10, 9)),
        );
        assert_eq!(r.get(k).unwrap().status, Status::Failed);
        assert!(!r.wants(k));
    }
}
