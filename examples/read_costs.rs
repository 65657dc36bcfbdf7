//! Measures what Surface and ReadKey cost against a full read of a topic.
//!
//! Loads a topic of `EVENTS` events over `KEYS` keys (150-byte payloads, 16
//! partitions) into a hub on loopback with a fresh SQLite file, then times,
//! median of 3 runs each: Surface of all keys, ReadKey of one key, and a full
//! ReadPartition of every partition from `_first`.
//!
//! `cargo run --release --example read_costs [EVENTS] [KEYS]`

use eventhub::config::Config;
use eventhub::proto::event_hub_service_client::EventHubServiceClient;
use eventhub::proto::{
    AppendEvent, AppendRequest, ReadKeyRequest, ReadPartitionRequest, SurfaceRequest,
};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

const PARTITIONS: u32 = 16;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let keys: usize = args.next().map_or(Ok(10_000), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let mut config = Config::new(format!(
        "sqlite://{}",
        dir.path().join("bench.db").display()
    ));
    config.default_partitions = PARTITIONS;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(eventhub::server::run(
        listener,
        config,
        std::future::pending(),
    ));
    let mut client = EventHubServiceClient::connect(format!("http://{addr}"))
        .await?
        .max_decoding_message_size(64 << 20);

    let payload = vec![b'x'; 150];
    let started = Instant::now();
    for batch in 0..events.div_ceil(1000) {
        let events: Vec<AppendEvent> = (batch * 1000..((batch + 1) * 1000).min(events))
            .map(|i| AppendEvent {
                key: format!("key-{:06}", i % keys),
                r#type: "Changed".into(),
                payload: payload.clone(),
                ..Default::default()
            })
            .collect();
        client
            .append(AppendRequest {
                topic: "bench".into(),
                events,
                dedup_by_content: false,
            })
            .await?;
    }
    let load = started.elapsed();
    println!(
        "loaded {events} events over {keys} keys in {load:.1?} ({:.0} events/s, 1,000 per Append)",
        events as f64 / load.as_secs_f64()
    );

    let mut surface_times = Vec::new();
    let mut surfaced = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let mut s = client
            .surface(SurfaceRequest {
                topic: "bench".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        surfaced = 0;
        while let Some(page) = s.next().await {
            surfaced += page?.events.len();
        }
        surface_times.push(t.elapsed());
    }
    let mut key_times = Vec::new();
    let mut key_events = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let mut s = client
            .read_key(ReadKeyRequest {
                topic: "bench".into(),
                key: "key-000042".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        key_events = 0;
        while let Some(page) = s.next().await {
            key_events += page?.events.len();
        }
        key_times.push(t.elapsed());
    }
    let mut read_times = Vec::new();
    let mut read = 0;
    for _ in 0..3 {
        let t = Instant::now();
        read = 0;
        for p in 0..PARTITIONS {
            let req = ReadPartitionRequest {
                topic: "bench".into(),
                partition: p,
                cursor: "_first".into(),
                max_events: 10_000,
                ..Default::default()
            };
            let mut s = client.read_partition(req).await?.into_inner();
            while let Some(page) = s.next().await {
                read += page?.events.len();
            }
        }
        read_times.push(t.elapsed());
    }
    let (s, k, r) = (median(surface_times), median(key_times), median(read_times));
    println!("| operation | events returned | median of 3 | vs full read |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| Surface (all keys) | {surfaced} | {s:.1?} | {:.3} |",
        s.as_secs_f64() / r.as_secs_f64()
    );
    println!(
        "| ReadKey (one key) | {key_events} | {k:.2?} | {:.5} |",
        k.as_secs_f64() / r.as_secs_f64()
    );
    println!("| ReadPartition, all partitions from _first | {read} | {r:.1?} | 1 |");
    Ok(())
}
