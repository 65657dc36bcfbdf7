//! Several hub processes on one PostgreSQL database: wake-ups across
//! processes, no gaps with appenders on both, and recovery of the
//! notification connection. Needs a PostgreSQL server: run under
//! `scripts/with-postgres.sh` (skipped otherwise, unless
//! `EVENTHUB_TEST_REQUIRE_POSTGRES` is set).

use crate::common::*;
use eventhub::proto::{AppendEvent, AppendRequest, Event, ExpectedVersion};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::SeqCst};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic::{Code, Streaming};

/// Two hub processes on one fresh database.
async fn two_hubs(partitions: u32) -> Option<(HubProcess, HubProcess, PostgresDatabase)> {
    let server = postgres_server()?;
    let database = fresh_postgres_database(&server).await;
    let a = spawn_process(&database.url, partitions).await;
    let b = spawn_process(&database.url, partitions).await;
    Some((a, b, database))
}

/// The next event of a followed stream, skipping heartbeats.
async fn next_event(
    stream: &mut Streaming<eventhub::proto::ReadPartitionResponse>,
    buffered: &mut std::collections::VecDeque<Event>,
) -> Event {
    loop {
        if let Some(e) = buffered.pop_front() {
            return e;
        }
        let page = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("the follower was not woken within 30 s")
            .expect("the stream ended")
            .expect("the stream failed");
        buffered.extend(page.events);
    }
}

/// A follower on hub B receives events appended through hub A; prints the delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_on_b_is_woken_by_append_through_a() {
    let Some((a, b, _)) = two_hubs(1).await else {
        return;
    };
    append(&mut a.client.clone(), "x", vec![ev("k", "T", "0")]).await;
    let mut stream = follow(&b.client, "x", 0).await;
    let mut buffered = Default::default();
    assert_eq!(next_event(&mut stream, &mut buffered).await.payload, b"0");
    let mut delays = Vec::new();
    for i in 1..=100u32 {
        let started = Instant::now();
        let r = append(
            &mut a.client.clone(),
            "x",
            vec![ev("k", "T", &i.to_string())],
        )
        .await;
        let e = next_event(&mut stream, &mut buffered).await;
        delays.push(started.elapsed());
        assert_eq!(e.sequence, r.results[0].sequence);
        assert_eq!(e.payload, i.to_string().as_bytes());
    }
    delays.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "append through hub A -> receipt by a follower on hub B, 100 appends: median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(delays[49]),
        ms(delays[98]),
        ms(delays[99])
    );
}

/// Appenders spread over two processes, followers on both: every follower sees every acknowledged event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appenders_on_two_processes_no_gap() {
    let Some((a, b, _)) = two_hubs(4).await else {
        return;
    };
    let appenders = (0..8)
        .map(|i| {
            if i % 2 == 0 {
                a.client.clone()
            } else {
                b.client.clone()
            }
        })
        .collect();
    check_no_gap(
        appenders,
        60,
        vec![a.client.clone(), b.client.clone()],
        "c",
        4,
    )
    .await;
}

/// Hubs alternate appends to the same keys: each sees the versions and
/// sequences the other one stored (a writer's cached key states and heads
/// are dropped when another process wrote to the topic), and an exact
/// expected version that went stale through the other hub is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_versions_and_heads_across_processes() {
    let Some((a, b, _)) = two_hubs(2).await else {
        return;
    };
    let exact = |key: &str, version: u64, payload: &str| AppendEvent {
        expected: ExpectedVersion::Exact as i32,
        expected_key_version: version,
        ..ev(key, "T", payload)
    };
    let hubs = [a.client.clone(), b.client.clone()];
    let keys = ["k1", "k2", "k3"];
    let mut last_sequence = [0u64; 2];
    for round in 0..20u64 {
        let mut hub = hubs[(round % 2) as usize].clone();
        let events = keys
            .iter()
            .map(|k| exact(k, round, &round.to_string()))
            .collect();
        let r = append(&mut hub, "v", events).await;
        for (k, res) in keys.iter().zip(&r.results) {
            assert_eq!(
                res.key_version,
                round + 1,
                "version of {k} in round {round}"
            );
            let p = partition_of(k, 2) as usize;
            assert!(res.sequence > last_sequence[p], "sequence of {k} went back");
        }
        for res in &r.results {
            let p = res.partition as usize;
            last_sequence[p] = last_sequence[p].max(res.sequence);
        }
        // The other hub now expects a version that is one behind.
        let other = hubs[((round + 1) % 2) as usize].clone();
        let status = other
            .clone()
            .append(AppendRequest {
                topic: "v".into(),
                events: vec![exact("k1", round, "stale")],
                dedup_by_content: false,
            })
            .await
            .expect_err("a stale expected version was accepted");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    }
    for p in 0..2u32 {
        let (events, _) = read_all(&mut a.client.clone(), "v", p, "_first").await;
        let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        let expected: Vec<u64> = (1..=events.len() as u64).collect();
        assert_eq!(sequences, expected, "partition {p} has gaps or repeats");
        assert!(events.iter().all(|e| e.payload != b"stale"));
    }
}

/// Events a hub keeps in memory for its followers are marked invalidated
/// once another hub process invalidated their transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_by_another_process_reaches_followed_events() {
    let Some((a, b, _)) = two_hubs(1).await else {
        return;
    };
    append(&mut a.client.clone(), "iv", vec![ev("k", "Set", "first")]).await;
    let mut stream = follow(&a.client, "iv", 0).await;
    let mut buffered = Default::default();
    assert_eq!(
        next_event(&mut stream, &mut buffered).await.payload,
        b"first"
    );
    let good = append(&mut a.client.clone(), "iv", vec![ev("k", "Set", "good")]).await;
    let bad = append(&mut a.client.clone(), "iv", vec![ev("k", "Set", "bad")]).await;
    for payload in [&b"good"[..], b"bad"] {
        let e = next_event(&mut stream, &mut buffered).await;
        assert_eq!(e.payload, payload);
        assert!(!e.transaction_invalidated);
    }
    // Read from the database too (the tail does not hold "first"), so that
    // hub A has checked the topic for invalidations before B makes one.
    let (events, _) = read_all(&mut a.client.clone(), "iv", 0, "_first").await;
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| !e.transaction_invalidated));
    b.client
        .clone()
        .invalidate(eventhub::proto::InvalidateRequest {
            topic: "iv".into(),
            transaction_id: bad.transaction_id,
            reason: "wrong".into(),
        })
        .await
        .unwrap();
    // Hub A has seen the invalidation once its follower gets the marker.
    let marker = next_event(&mut stream, &mut buffered).await;
    assert_eq!(
        marker.invalidation.unwrap().transaction_id,
        bad.transaction_id
    );
    let (events, _) = read_all(&mut a.client.clone(), "iv", 0, &good.results[0].cursor).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].payload, b"bad");
    assert!(
        events[0].transaction_invalidated,
        "hub A served the invalidated event as valid"
    );
    let (events, _) = read_all(&mut a.client.clone(), "iv", 0, "_first").await;
    assert_eq!(events.len(), 4);
    assert!(
        events[2].transaction_invalidated,
        "hub A served the invalidated event as valid from the database"
    );
}

/// The notification connections are killed: hubs reconnect by themselves and followers keep receiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_connection_loss_is_recovered() {
    use sqlx::Connection;
    let Some((a, b, database)) = two_hubs(1).await else {
        return;
    };
    let url = &database.url;
    append(&mut a.client.clone(), "x", vec![ev("k", "T", "0")]).await;
    let mut stream = follow(&b.client, "x", 0).await;
    let mut buffered = Default::default();
    next_event(&mut stream, &mut buffered).await;
    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    for round in 1..=3u32 {
        let (killed,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'eventhub listener' AND datname = current_database()) t",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert!(killed >= 1, "round {round}: no listener connection to kill");
        // Two appends: the first may land before the listener is back (the
        // resynchronisation after reconnecting delivers it), the second
        // after it (its notification does).
        for i in 0..2 {
            let payload = format!("{round}/{i}");
            let r = append(&mut a.client.clone(), "x", vec![ev("k", "T", &payload)]).await;
            let e = next_event(&mut stream, &mut buffered).await;
            assert_eq!(e.sequence, r.results[0].sequence);
            assert_eq!(e.payload, payload.as_bytes());
        }
    }
}

/// A hub appending to a topic in its steady state writes without taking
/// the topic's lock, but only while the topic's last transaction is still
/// its own. Another process's commit whose notification has not arrived
/// yet (here: a transaction and a key version written straight into the
/// database, which sends no notification) makes that write a no-op, and
/// the append is planned again under the lock, from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_elsewhere_is_never_overwritten() {
    use sqlx::Connection;
    let Some(server) = postgres_server() else {
        return;
    };
    let database = fresh_postgres_database(&server).await;
    let url = &database.url;
    let mut hub = spawn_process(url, 1).await;
    let first = append(&mut hub.client, "g", vec![ev("k", "T", "1")]).await;
    let second = append(&mut hub.client, "g", vec![ev("k", "T", "2")]).await;
    assert_eq!(second.transaction_id, first.transaction_id + 1);
    assert_eq!(second.results[0].key_version, 2);

    let mut db = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(
        "UPDATE topics SET last_transaction_id = last_transaction_id + 1 WHERE name = 'g'; \
         UPDATE keys SET version = version + 5 WHERE key = 'k'",
    )
    .execute(&mut db)
    .await
    .unwrap();

    let third = append(&mut hub.client, "g", vec![ev("k", "T", "3")]).await;
    assert_eq!(
        third.transaction_id,
        second.transaction_id + 2,
        "the transaction committed elsewhere keeps its id"
    );
    assert_eq!(
        third.results[0].key_version, 8,
        "the key's version committed elsewhere is read"
    );
    assert_eq!(third.results[0].sequence, 3);
    // The hub is in its steady state again.
    let fourth = append(&mut hub.client, "g", vec![ev("k", "T", "4")]).await;
    assert_eq!(fourth.transaction_id, third.transaction_id + 1);
    assert_eq!(fourth.results[0].key_version, 9);
    let (events, _) = read_all(&mut hub.client, "g", 0, "_first").await;
    let got: Vec<(u64, u64, &[u8])> = events
        .iter()
        .map(|e| (e.sequence, e.key_version, e.payload.as_slice()))
        .collect();
    assert_eq!(
        got,
        [(1, 1, &b"1"[..]), (2, 2, b"2"), (3, 8, b"3"), (4, 9, b"4")]
    );
    let (last,): (i64,) = sqlx::query_as("SELECT last_transaction_id FROM topics WHERE name = 'g'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(last as u64, fourth.transaction_id);
}

async fn topic_names(hub: &TestHub) -> Vec<String> {
    let topics = hub
        .client()
        .list_topics(eventhub::proto::ListTopicsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .topics;
    topics.into_iter().map(|t| t.name).collect()
}

/// What the proxy of [`commit_cutter`] does to the next COMMIT it sees.
const PASS: u8 = 0;
/// The connection is lost before PostgreSQL gets the COMMIT.
const LOSE_COMMIT: u8 = 1;
/// PostgreSQL commits; the connection is lost before its answer arrives.
const LOSE_ANSWER: u8 = 2;

/// A TCP proxy on loopback to the PostgreSQL server of `url`. Returns the
/// URL through it and a switch that arms it for the next COMMIT (once).
async fn commit_cutter(url: &str) -> (String, Arc<AtomicU8>) {
    let mut proxied = url::Url::parse(url).unwrap();
    let upstream = format!(
        "{}:{}",
        proxied.host_str().unwrap(),
        proxied.port().unwrap_or(5432)
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    proxied.set_host(Some("127.0.0.1")).unwrap();
    proxied
        .set_port(Some(listener.local_addr().unwrap().port()))
        .unwrap();
    let switch = Arc::new(AtomicU8::new(PASS));
    let armed = switch.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let armed = armed.clone();
            tokio::spawn(async move {
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                let answer_lost = Arc::new(AtomicBool::new(false));
                let lose_answer = answer_lost.clone();
                let up = async move {
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = match from_client.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        // sqlx sends COMMIT as a simple query: 'Q', length, text.
                        if buf[..n].windows(7).any(|w| w == b"COMMIT\0") {
                            match armed.swap(PASS, SeqCst) {
                                LOSE_COMMIT => return,
                                LOSE_ANSWER => lose_answer.store(true, SeqCst),
                                _ => {}
                            }
                        }
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                let down = async move {
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = match from_server.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        // The client sends COMMIT only once it has every
                        // earlier answer: what follows is COMMIT's.
                        if answer_lost.load(SeqCst) {
                            return;
                        }
                        if to_client.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                // Either direction ending closes both connections.
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                }
            });
        }
    });
    (proxied.to_string(), switch)
}

/// The connection to PostgreSQL is lost while it commits an Append. If
/// the commit happened (only its answer was lost), the hub finds the
/// events on a new connection and acknowledges the Append, which is stored
/// once; if it did not, the Append is refused as not stored, and nothing
/// of it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_commit_loses_the_connection_is_answered_truthfully() {
    let Some(server) = postgres_server() else {
        return;
    };
    let database = fresh_postgres_database(&server).await;
    let url = &database.url;
    let (proxied, next_commit) = commit_cutter(url).await;
    let hub = spawn_hub_with(|c| {
        c.database_url = proxied;
        c.default_partitions = 1;
    })
    .await;

    // Once the hub serves, its start-up (migrations) has committed.
    assert!(topic_names(&hub).await.is_empty());

    // Committed, answer lost (the first Append of a topic, which creates
    // it, commits with BEGIN ... COMMIT); the next Append goes on from it.
    next_commit.store(LOSE_ANSWER, SeqCst);
    let first = hub.append("cut", vec![ev("k", "T", "1")]).await;
    assert_eq!(next_commit.load(SeqCst), PASS, "no COMMIT was cut");
    assert_eq!((first.transaction_id, first.results[0].key_version), (1, 1));
    let second = hub.append("cut", vec![ev("k", "T", "2")]).await;
    assert_eq!(
        (second.transaction_id, second.results[0].key_version),
        (2, 2)
    );
    let (events, _) = hub.read_all("cut", 0, "_first").await;
    let got: Vec<(u64, &[u8])> = events
        .iter()
        .map(|e| (e.transaction_id, e.payload.as_slice()))
        .collect();
    assert_eq!(got, [(1, &b"1"[..]), (2, b"2")]);

    // Not committed: refused as not stored, and the topic it would have
    // created does not exist.
    next_commit.store(LOSE_COMMIT, SeqCst);
    let refused = hub.append_err("cut2", vec![ev("k", "T", "lost")]).await;
    assert_eq!(next_commit.load(SeqCst), PASS, "no COMMIT was cut");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("not stored"), "{refused:?}");
    assert_eq!(topic_names(&hub).await, ["cut"]);
    let again = hub.append("cut2", vec![ev("k", "T", "again")]).await;
    assert_eq!((again.transaction_id, again.results[0].key_version), (1, 1));
    let (events, _) = hub.read_all("cut2", 0, "_first").await;
    let got: Vec<&[u8]> = events.iter().map(|e| e.payload.as_slice()).collect();
    assert_eq!(got, [b"again"]);
}
