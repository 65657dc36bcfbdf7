//! Many producers, one follower per partition: every acknowledged event is
//! seen exactly once, in order, with no gap.

mod common;

use common::*;
use eventhub::proto::ReadPartitionRequest;
use std::collections::HashMap;
use std::time::Duration;
use tokio_stream::StreamExt;

const APPENDERS: usize = 8;
const APPENDS_EACH: usize = 60;
const PARTITIONS: u32 = 4;

/// Eight concurrent appenders and a follower per partition: followers see every acknowledged event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_and_followers() {
    let hub = spawn_hub_with(|c| c.default_partitions = PARTITIONS).await;
    hub.append("c", vec![ev("seed", "T", "seed")]).await;
    let mut followers = Vec::new();
    for p in 0..PARTITIONS {
        let stream = hub
            .client()
            .read_partition(ReadPartitionRequest {
                topic: "c".into(),
                partition: p,
                cursor: "_first".into(),
                follow: true,
                max_events: 13,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        followers.push(stream);
    }
    let mut producers = Vec::new();
    for a in 0..APPENDERS {
        let mut client = hub.client();
        producers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0..APPENDS_EACH {
                let size = 1 + (n % 4);
                let events = (0..size)
                    .map(|i| {
                        ev(
                            &format!("key-{a}-{}", (n + i) % 7),
                            "T",
                            &format!("{a}/{n}/{i}"),
                        )
                    })
                    .collect();
                let resp = append(&mut client, "c", events).await;
                for (i, r) in resp.results.iter().enumerate() {
                    acked.push((r.partition, r.sequence, format!("{a}/{n}/{i}")));
                }
            }
            acked
        }));
    }
    let mut acked: HashMap<u32, Vec<(u64, String)>> = HashMap::new();
    acked
        .entry(partition_of("seed", PARTITIONS))
        .or_default()
        .push((1, "seed".into()));
    for p in producers {
        for (partition, seq, payload) in p.await.unwrap() {
            acked.entry(partition).or_default().push((seq, payload));
        }
    }
    for (p, stream) in followers.iter_mut().enumerate() {
        let mut expected = acked.remove(&(p as u32)).unwrap_or_default();
        expected.sort();
        let mut seen: Vec<(u64, String)> = Vec::new();
        while seen.len() < expected.len() {
            let page = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .expect("follower stalled")
                .unwrap()
                .unwrap();
            seen.extend(
                page.events
                    .into_iter()
                    .map(|e| (e.sequence, String::from_utf8(e.payload).unwrap())),
            );
        }
        let seqs: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            seqs,
            (1..=expected.len() as u64).collect::<Vec<_>>(),
            "partition {p}: in order, no gap, no repeat"
        );
        assert_eq!(
            seen, expected,
            "partition {p}: exactly the acknowledged events"
        );
    }
}
