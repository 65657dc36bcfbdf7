//! The delivery-latency harness shared by the hub and NATS: an open-loop
//! producer paced by a tokio interval, and a collector that turns the
//! followers' receipts into a histogram.
//!
//! Every tick starts one append of `rate * tick` events in its own task, so
//! a slow append does not delay the next one (no coordinated omission).
//! Each payload carries the instant its append call started ([`stamp`]); a
//! follower subtracts it from the instant the event arrived.
//!
//! [`stamp`]: super::events::stamp

use super::events::Sizes;
use anyhow::{Result, anyhow, bail};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

/// How long followers may take, after the producer stopped, to receive
/// every acknowledged event.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What one latency run measured.
pub struct LatencyRun {
    /// Microseconds from append start to receipt.
    pub histogram: Histogram<u64>,
    /// Events acknowledged to the producer.
    pub acked: u64,
    /// Events the followers received.
    pub received: u64,
    /// How long the producer ran.
    pub elapsed: Duration,
}

/// Runs `append(tick)` once per tick for the configured duration, each in
/// its own task; every call returns how many events it got acknowledged.
/// Returns the total and the time the producer ran.
pub async fn paced<F, Fut>(
    sizes: &Sizes,
    pb: &ProgressBar,
    mut append: F,
) -> Result<(u64, Duration)>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<u64>> + Send + 'static,
{
    let mut interval = tokio::time::interval(Duration::from_millis(sizes.latency_tick_ms));
    interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut tasks = JoinSet::new();
    let mut acked = 0u64;
    let started = Instant::now();
    for tick in 0..sizes.latency_ticks() {
        interval.tick().await;
        tasks.spawn(append(tick));
        while let Some(done) = tasks.try_join_next() {
            acked += done??;
        }
        pb.set_position(started.elapsed().as_millis() as u64);
    }
    while let Some(done) = tasks.join_next().await {
        acked += done??;
    }
    Ok((acked, started.elapsed()))
}

/// Where followers report latencies.
#[derive(Clone)]
pub struct Receipts(mpsc::UnboundedSender<Duration>);

impl Receipts {
    pub fn record(&self, latency: Duration) {
        let _ = self.0.send(latency);
    }
}

/// Collects latencies until told how many to expect and that many arrived.
pub struct Collector {
    task: tokio::task::JoinHandle<(Histogram<u64>, u64)>,
    expected: watch::Sender<Option<u64>>,
}

pub fn collector() -> (Receipts, Collector) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Duration>();
    let (expected_tx, mut expected) = watch::channel(None::<u64>);
    let task = tokio::spawn(async move {
        let mut histogram =
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
        let mut n = 0u64;
        loop {
            if expected.borrow_and_update().is_some_and(|e| n >= e) {
                return (histogram, n);
            }
            tokio::select! {
                v = rx.recv() => match v {
                    Some(latency) => {
                        histogram.saturating_record(latency.as_micros().max(1) as u64);
                        n += 1;
                    }
                    None => return (histogram, n),
                },
                changed = expected.changed() => if changed.is_err() { return (histogram, n) },
            }
        }
    });
    (
        Receipts(tx),
        Collector {
            task,
            expected: expected_tx,
        },
    )
}

impl Collector {
    /// Waits until the followers received `acked` events. `followers` are
    /// checked when they do not, so that their error is the one reported.
    pub async fn finish(
        self,
        acked: u64,
        elapsed: Duration,
        followers: &mut JoinSet<Result<()>>,
    ) -> Result<LatencyRun> {
        let _ = self.expected.send(Some(acked));
        let mut task = self.task;
        let (histogram, received) = tokio::select! {
            r = &mut task => r?,
            _ = tokio::time::sleep(DRAIN_TIMEOUT) => {
                task.abort();
                while let Some(r) = followers.try_join_next() {
                    r??;
                }
                bail!("followers did not receive all {acked} acknowledged events within {DRAIN_TIMEOUT:?}");
            }
        };
        if received != acked {
            // The channel closed early: every follower ended.
            while let Some(r) = followers.try_join_next() {
                r??;
            }
            return Err(anyhow!(
                "followers received {received} events of {acked} acknowledged"
            ));
        }
        followers.abort_all();
        Ok(LatencyRun {
            histogram,
            acked,
            received,
            elapsed,
        })
    }
}
