//! The events every workload sends, and the sizes of each workload.
//!
//! An event has a short key (`key-000042`), a short type (`Changed`), no
//! headers and a 150-byte payload. Keys spread over the topic's 16
//! partitions by the documented hash, so the hub and the references store
//! exactly the same rows. The first 8 bytes of a payload can carry the time
//! the event was sent (see [`stamp`]), for the delivery-latency workload.

use eventhub::proto::AppendEvent;
use eventhub::validate::partition_for;
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The topic every workload uses (one per fresh database).
pub const TOPIC: &str = "bench";
/// The type of every event.
pub const EVENT_TYPE: &str = "Changed";
/// The content type of every event (empty: none).
pub const CONTENT_TYPE: &str = "";
/// The topic id the references write into their own `events` table (the
/// hub's first topic gets id 1 too).
pub const TOPIC_ID: i64 = 1;

/// Sizes of every workload; `--quick` shrinks them.
#[derive(Debug, Clone, Serialize)]
pub struct Sizes {
    /// Partitions of every topic.
    pub partitions: u32,
    /// Payload bytes of every event.
    pub payload_bytes: usize,
    /// Distinct keys the append workloads cycle through.
    pub keys: usize,
    /// Workload 1: events per Append (and per reference transaction).
    pub append_batch: usize,
    /// Workload 1: events appended per round.
    pub batched_events: usize,
    /// Workload 2: concurrent producers sending one event per Append.
    pub producers: usize,
    /// Workload 2: concurrent writers of the PostgreSQL one-row-per-transaction reference.
    pub postgres_row_writers: usize,
    /// Workload 2: how long each run lasts.
    pub single_ms: u64,
    /// Workloads 3 and 5: events stored in the one partition that is read.
    pub read_events: usize,
    /// Workload 5: events of each key (so keys = read_events / events_per_key).
    pub events_per_key: usize,
    /// Workload 4: events appended per second.
    pub latency_rate: u64,
    /// Workload 4: how long the producer runs.
    pub latency_ms: u64,
    /// Workload 4: the pacing interval; each tick appends `rate * tick` events.
    pub latency_tick_ms: u64,
}

impl Sizes {
    pub fn full() -> Self {
        Sizes {
            partitions: 16,
            payload_bytes: 150,
            keys: 10_000,
            append_batch: 1_000,
            batched_events: 100_000,
            producers: 64,
            postgres_row_writers: 16,
            single_ms: 5_000,
            read_events: 1_000_000,
            events_per_key: 100,
            latency_rate: 2_000,
            latency_ms: 20_000,
            latency_tick_ms: 5,
        }
    }

    pub fn quick() -> Self {
        Sizes {
            batched_events: 20_000,
            single_ms: 1_000,
            read_events: 20_000,
            latency_ms: 2_000,
            ..Sizes::full()
        }
    }

    /// Keys of the read dataset.
    pub fn read_keys(&self) -> usize {
        (self.read_events / self.events_per_key).max(1)
    }

    /// Events per tick of the latency producer.
    pub fn latency_per_tick(&self) -> usize {
        (self.latency_rate * self.latency_tick_ms / 1000).max(1) as usize
    }

    pub fn latency_ticks(&self) -> u64 {
        self.latency_ms / self.latency_tick_ms
    }
}

/// The `n`th key.
pub fn key(n: usize) -> String {
    format!("key-{n:06}")
}

/// The first `count` keys (in key order) that land in `partition`, so that
/// one partition can hold a whole dataset.
pub fn keys_in_partition(partition: u32, partitions: u32, count: usize) -> Vec<String> {
    (0..)
        .map(key)
        .filter(|k| partition_for(k, partitions) == partition)
        .take(count)
        .collect()
}

/// A payload of `size` bytes.
pub fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Writes "now", as nanoseconds since `epoch`, into the first 8 bytes.
pub fn stamp(payload: &mut [u8], epoch: Instant) {
    let nanos = epoch.elapsed().as_nanos() as u64;
    payload[..8].copy_from_slice(&nanos.to_le_bytes());
}

/// How long ago (at `now`, since `epoch`) a stamped payload was sent.
pub fn age(payload: &[u8], now: Duration) -> Duration {
    let sent = u64::from_le_bytes(payload[..8].try_into().expect("stamped payload"));
    now.saturating_sub(Duration::from_nanos(sent))
}

/// An event for the hub.
pub fn append_event(key: String, payload: Vec<u8>) -> AppendEvent {
    AppendEvent {
        key,
        r#type: EVENT_TYPE.into(),
        content_type: CONTENT_TYPE.into(),
        payload,
        ..Default::default()
    }
}

/// One event as the references store it: the columns of the hub's `events`
/// table that are not constant.
#[derive(Debug, Clone)]
pub struct Row {
    pub partition: i64,
    pub sequence: i64,
    pub transaction_id: i64,
    pub key: String,
    pub key_version: i64,
    pub payload: Vec<u8>,
    pub committed_at_ms: i64,
}

/// Gives events the positions the hub would: per partition a gapless
/// sequence, per key a version, one transaction per batch.
pub struct Planner {
    partitions: u32,
    heads: Vec<i64>,
    versions: HashMap<String, i64>,
    transaction: i64,
}

impl Planner {
    pub fn new(partitions: u32) -> Self {
        Planner {
            partitions,
            heads: vec![0; partitions as usize],
            versions: HashMap::new(),
            transaction: 0,
        }
    }

    /// Positions for one transaction of events.
    pub fn plan(&mut self, events: impl IntoIterator<Item = (String, Vec<u8>)>) -> Vec<Row> {
        self.transaction += 1;
        let now = now_ms();
        events
            .into_iter()
            .map(|(key, payload)| {
                let partition = partition_for(&key, self.partitions);
                let head = &mut self.heads[partition as usize];
                *head += 1;
                let version = self.versions.entry(key.clone()).or_default();
                *version += 1;
                Row {
                    partition: i64::from(partition),
                    sequence: *head,
                    transaction_id: self.transaction,
                    key,
                    key_version: *version,
                    payload,
                    committed_at_ms: now,
                }
            })
            .collect()
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The events of workload 1: `total` events in batches of `batch`, keys
/// cycling through `keys`.
pub fn batches(
    total: usize,
    batch: usize,
    keys: usize,
    payload: &[u8],
) -> Vec<Vec<(String, Vec<u8>)>> {
    (0..total)
        .collect::<Vec<_>>()
        .chunks(batch)
        .map(|c| {
            c.iter()
                .map(|&i| (key(i % keys), payload.to_vec()))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys chosen for one partition all hash there.
    #[test]
    fn keys_in_partition_hash_there() {
        let keys = keys_in_partition(0, 16, 50);
        assert_eq!(keys.len(), 50);
        assert!(keys.iter().all(|k| partition_for(k, 16) == 0));
    }

    /// A stamp reads back as the time elapsed since it was written.
    #[test]
    fn stamp_round_trips() {
        let epoch = Instant::now();
        let mut p = payload(150);
        stamp(&mut p, epoch);
        let later = epoch.elapsed() + Duration::from_millis(3);
        let a = age(&p, later);
        assert!(a >= Duration::from_millis(3) && a < Duration::from_secs(1));
    }

    /// The planner numbers like the hub: gapless per partition, versions per key.
    #[test]
    fn planner_numbers_like_the_hub() {
        let mut p = Planner::new(4);
        let rows = p.plan((0..8).map(|i| (key(i % 2), vec![])));
        let rows2 = p.plan([(key(0), vec![])]);
        assert_eq!(rows2[0].key_version, 5);
        assert_eq!(rows2[0].transaction_id, 2);
        let mut per_partition: HashMap<i64, Vec<i64>> = HashMap::new();
        for r in rows.iter().chain(&rows2) {
            per_partition
                .entry(r.partition)
                .or_default()
                .push(r.sequence);
        }
        for seqs in per_partition.values() {
            assert_eq!(*seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
        }
    }
}
