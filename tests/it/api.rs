//! The core API over real gRPC against a real SQLite database.

use crate::common::*;
use eventhub::cursor::Start;
use eventhub::proto::{
    self, AppendEvent, AppendOutcome, ExpectedVersion, ReadPartitionRequest, SurfaceRequest,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tonic::Code;

/// Appended events come back from their partitions in order, with matching positions.
#[tokio::test]
async fn append_read_round_trip() {
    let hub = spawn_hub().await;
    let mut events = Vec::new();
    for i in 0..20 {
        let mut e = ev(&format!("k{}", i % 5), "Thing", &format!("p{i}"));
        e.headers.insert("trace".into(), format!("t{i}"));
        e.content_type = "text/plain".into();
        events.push(e);
    }
    let resp = hub.append("orders", events.clone()).await;
    assert_eq!(resp.transaction_id, 1);
    assert_eq!(resp.results.len(), 20);
    let mut seen = 0;
    for p in 0..4 {
        let (read, _) = hub.read_all("orders", p, "_first").await;
        for (i, e) in read.iter().enumerate() {
            assert_eq!(e.sequence, i as u64 + 1, "gapless sequences");
            assert_eq!(e.partition, p);
            assert_eq!(partition_of(&e.key, 4), p);
            let idx: usize = std::str::from_utf8(&e.payload).unwrap()[1..]
                .parse()
                .unwrap();
            let r = &resp.results[idx];
            assert_eq!(
                (r.partition, r.sequence, &r.cursor),
                (e.partition, e.sequence, &e.cursor)
            );
            assert_eq!(e.headers["trace"], format!("t{idx}"));
            assert_eq!(e.content_type, "text/plain");
            assert_eq!(e.transaction_id, 1);
            assert!(e.committed_at.is_some());
            seen += 1;
        }
    }
    assert_eq!(seen, 20);
    // Key versions count each key's events.
    let versions: Vec<u64> = resp.results.iter().map(|r| r.key_version).collect();
    assert_eq!(&versions[..10], &[1, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
    let topic = hub
        .client()
        .get_topic(proto::GetTopicRequest {
            name: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let topic = topic.topic.unwrap();
    assert_eq!(
        (
            topic.partition_count,
            topic.event_count,
            topic.last_transaction_id
        ),
        (4, 20, 1)
    );
}

/// `_first` reads from the start, `_last` from the head; a stored cursor resumes exactly after its event.
#[tokio::test]
async fn first_last_and_resume() {
    let hub = spawn_hub_with(|c| c.default_partitions = 1).await;
    hub.append("t", (0..5).map(|i| ev("k", "T", &i.to_string())).collect())
        .await;
    let (all, end) = hub.read_all("t", 0, "_first").await;
    assert_eq!(all.len(), 5);
    let (none, end2) = hub.read_all("t", 0, "_last").await;
    assert!(none.is_empty());
    assert_eq!(end, end2);
    let (rest, _) = hub.read_all("t", 0, &all[1].cursor).await;
    assert_eq!(
        rest.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    hub.append("t", vec![ev("k", "T", "5")]).await;
    let (after_last, _) = hub.read_all("t", 0, &end2).await;
    assert_eq!(after_last.len(), 1);
    assert_eq!(after_last[0].payload, b"5");
}

/// A long-poll is woken by an append made while it waits, long before its wait runs out.
#[tokio::test]
async fn long_poll_woken_by_append() {
    let hub = spawn_hub_with(|c| c.default_partitions = 1).await;
    hub.append("t", vec![ev("k", "T", "0")]).await;
    let mut client = hub.client();
    let mut stream = client
        .read_partition(ReadPartitionRequest {
            topic: "t".into(),
            partition: 0,
            cursor: "_last".into(),
            wait_ms: 60_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let started = Instant::now();
    hub.append("t", vec![ev("k", "T", "1")]).await;
    let page = stream.next().await.unwrap().unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].payload, b"1");
    assert!(page.caught_up);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "woken by the commit, not by the timeout"
    );
    assert!(
        stream.next().await.is_none(),
        "a non-follow read ends once caught up"
    );
}

/// A long-poll with nothing to read ends with one empty page and the cursor unchanged.
#[tokio::test]
async fn long_poll_times_out_with_unchanged_cursor() {
    let hub = spawn_hub_with(|c| c.default_partitions = 1).await;
    let resp = hub.append("t", vec![ev("k", "T", "0")]).await;
    let cursor = resp.results[0].cursor.clone();
    let mut stream = hub
        .client()
        .read_partition(ReadPartitionRequest {
            topic: "t".into(),
            cursor: cursor.clone(),
            wait_ms: 50,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let page = stream.next().await.unwrap().unwrap();
    assert!(page.events.is_empty());
    assert_eq!(page.cursor, cursor);
    assert!(page.caught_up);
    assert!(stream.next().await.is_none());
}

/// A follower receives later appends as they commit, and heartbeats in between.
#[tokio::test]
async fn follow_receives_appends_and_heartbeats() {
    let hub = spawn_hub_with(|c| c.default_partitions = 1).await;
    let err = hub
        .client()
        .read_partition(ReadPartitionRequest {
            topic: "t".into(),
            cursor: "_first".into(),
            follow: true,
            heartbeat_ms: 100,
            ..Default::default()
        })
        .await
        .unwrap_err();
    // The topic does not exist yet.
    assert_eq!(err.code(), Code::NotFound);
    hub.append("t", vec![ev("k", "T", "0")]).await;
    let mut stream = hub
        .client()
        .read_partition(ReadPartitionRequest {
            topic: "t".into(),
            cursor: "_first".into(),
            follow: true,
            heartbeat_ms: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.events.len(), 1);
    let heartbeat = stream.next().await.unwrap().unwrap();
    assert!(
        heartbeat.events.is_empty(),
        "an empty heartbeat page while idle"
    );
    assert_eq!(heartbeat.cursor, first.cursor);
    for i in 1..=3 {
        hub.append("t", vec![ev("k", "T", &i.to_string())]).await;
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        let page = stream.next().await.unwrap().unwrap();
        got.extend(page.events.into_iter().map(|e| e.payload));
    }
    assert_eq!(got, vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
}

/// A types filter skips other events but still advances the cursor past them.
#[tokio::test]
async fn types_filter_advances_cursor() {
    let hub = spawn_hub_with(|c| c.default_partitions = 1).await;
    hub.append(
        "t",
        vec![
            ev("k", "A", "1"),
            ev("k", "B", "2"),
            ev("k", "A", "3"),
            ev("k", "B", "4"),
            ev("k", "B", "5"),
        ],
    )
    .await;
    let mut stream = hub
        .client()
        .read_partition(ReadPartitionRequest {
            topic: "t".into(),
            types: vec!["A".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    let mut cursor = String::new();
    while let Some(page) = stream.next().await {
        let page = page.unwrap();
        events.extend(page.events);
        cursor = page.cursor;
    }
    assert_eq!(
        events.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(),
        vec![b"1".to_vec(), b"3".to_vec()]
    );
    let (_, head) = hub.read_all("t", 0, "_last").await;
    assert_eq!(cursor, head, "the cursor moved past the skipped B events");
    hub.append("t", vec![ev("k", "B", "6"), ev("k", "A", "7")])
        .await;
    let (rest, _) = hub.read_all("t", 0, &cursor).await;
    assert_eq!(rest.len(), 2);
}

/// Surface returns each key's latest event; reading on from its cursors sees exactly the later events.
#[tokio::test]
async fn surface_then_continue() {
    let hub = spawn_hub().await;
    for round in 0..3 {
        hub.append(
            "s",
            (0..10)
                .map(|k| ev(&format!("key{k:02}"), "Set", &format!("{round}")))
                .collect(),
        )
        .await;
    }
    let (events, cursors, as_of) = surface(
        &hub,
        SurfaceRequest {
            topic: "s".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(as_of, 3);
    assert_eq!(events.len(), 10);
    assert!(
        events.windows(2).all(|w| w[0].key < w[1].key),
        "sorted by key"
    );
    assert!(
        events
            .iter()
            .all(|e| e.payload == b"2" && e.key_version == 3)
    );
    hub.append(
        "s",
        vec![ev("key03", "Set", "later"), ev("new", "Set", "later")],
    )
    .await;
    let mut later = Vec::new();
    for c in &cursors {
        let (evs, _) = hub.read_all("s", c.partition, &c.cursor).await;
        later.extend(evs);
    }
    let mut keys: Vec<_> = later.iter().map(|e| e.key.clone()).collect();
    keys.sort();
    assert_eq!(
        keys,
        vec!["key03", "new"],
        "exactly the events after the snapshot"
    );
    // Prefix and paging.
    let (page1, _, as_of) = surface(
        &hub,
        SurfaceRequest {
            topic: "s".into(),
            key_prefix: "key".into(),
            limit: 4,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(page1.len(), 4);
    let (page2, _, _) = surface(
        &hub,
        SurfaceRequest {
            topic: "s".into(),
            key_prefix: "key".into(),
            after_key: page1[3].key.clone(),
            as_of_transaction: as_of,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(page2.len(), 6);
    assert_eq!(page2[0].key, "key04");
}

/// Surface lists keys, and ListTopics topics, in bytewise order of their
/// UTF-8 text, whatever the database's collation; a prefix listing read in
/// small pages misses nothing. (On PostgreSQL the tests' databases sort text
/// by ICU's en-US rules by default, under which "a_3" < "A2" < "ab".)
#[tokio::test]
async fn keys_and_topics_are_listed_in_bytewise_order() {
    let hub = spawn_hub().await;
    let keys = [
        "ab", "A2", "a_3", "a", "B", "b", "a-1", "é", "Z", "aB", "a b",
    ];
    hub.append("order", keys.iter().map(|k| ev(k, "Set", k)).collect())
        .await;
    let mut bytewise: Vec<&str> = keys.to_vec();
    bytewise.sort();
    let (all, _, as_of) = surface(
        &hub,
        SurfaceRequest {
            topic: "order".into(),
            ..Default::default()
        },
    )
    .await;
    let listed: Vec<&str> = all.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(listed, bytewise);

    // The keys starting with "a", two at a time.
    let mut paged = Vec::new();
    let mut after = String::new();
    loop {
        let (page, _, _) = surface(
            &hub,
            SurfaceRequest {
                topic: "order".into(),
                key_prefix: "a".into(),
                after_key: after.clone(),
                limit: 2,
                as_of_transaction: as_of,
            },
        )
        .await;
        let Some(last) = page.last() else { break };
        after = last.key.clone();
        paged.extend(page.into_iter().map(|e| e.key));
    }
    let with_a: Vec<&str> = bytewise
        .iter()
        .copied()
        .filter(|k| k.starts_with('a'))
        .collect();
    assert_eq!(paged, with_a);

    let mut client = hub.client();
    let names = [
        "orders_eu",
        "Orders",
        "orders",
        "orders-us",
        "ordersX",
        "o.b",
    ];
    for name in names {
        client
            .create_topic(proto::CreateTopicRequest {
                name: name.into(),
                partition_count: 1,
            })
            .await
            .unwrap();
    }
    let mut listed = Vec::new();
    let mut after = String::new();
    loop {
        let page = client
            .list_topics(proto::ListTopicsRequest {
                name_prefix: "o".into(),
                after_name: after.clone(),
                limit: 2,
            })
            .await
            .unwrap()
            .into_inner();
        listed.extend(page.topics.into_iter().map(|t| t.name));
        if page.next_after_name.is_empty() {
            break;
        }
        after = page.next_after_name;
    }
    let mut expected: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.starts_with('o'))
        .collect();
    expected.push("order");
    expected.sort();
    assert_eq!(listed, expected);
}

pub async fn surface(
    hub: &TestHub,
    req: SurfaceRequest,
) -> (Vec<proto::Event>, Vec<proto::PartitionCursor>, u64) {
    let mut stream = hub.client().surface(req).await.unwrap().into_inner();
    let (mut events, mut cursors, mut as_of) = (Vec::new(), Vec::new(), 0);
    while let Some(page) = stream.next().await {
        let page = page.unwrap();
        events.extend(page.events);
        cursors = page.cursors;
        as_of = page.as_of_transaction;
    }
    (events, cursors, as_of)
}

/// An expected-version mismatch fails the whole append, stores nothing and names the actual version.
#[tokio::test]
async fn expected_version_conflict() {
    let hub = spawn_hub().await;
    hub.append("o", vec![ev("order-1", "Created", "")]).await;
    let mut ok = ev("order-1", "Paid", "");
    ok.expected = ExpectedVersion::Exact as i32;
    ok.expected_key_version = 1;
    let resp = hub.append("o", vec![ok.clone()]).await;
    assert_eq!(resp.results[0].key_version, 2);
    let mut other = ev("order-2", "Created", "");
    other.expected = ExpectedVersion::NoKey as i32;
    let err = hub.append_err("o", vec![other, ok]).await;
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("version 2"), "{}", err.message());
    assert_eq!(err.metadata().get("eventhub-actual-version").unwrap(), "2");
    assert_eq!(err.metadata().get("eventhub-key").unwrap(), "order-1");
    let topic = hub
        .client()
        .get_topic(proto::GetTopicRequest { name: "o".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        topic.topic.unwrap().event_count,
        2,
        "order-2 was not stored either"
    );
    let mut unicode = ev("ключ 1", "Paid", "");
    unicode.expected = ExpectedVersion::Exists as i32;
    let err = hub.append_err("o", vec![unicode]).await;
    assert_eq!(
        err.metadata().get("eventhub-key").unwrap(),
        "%D0%BA%D0%BB%D1%8E%D1%87%201"
    );
    let mut exists = ev("order-3", "Paid", "");
    exists.expected = ExpectedVersion::Exists as i32;
    let err = hub.append_err("o", vec![exists]).await;
    assert_eq!(err.code(), Code::FailedPrecondition);
}

/// Retrying an Append with the same event ids returns the stored positions and stores nothing new.
#[tokio::test]
async fn event_id_retry_is_idempotent() {
    let hub = spawn_hub().await;
    let mut a = ev("k1", "T", "a");
    a.event_id = "id-a".into();
    let mut b = ev("k2", "T", "b");
    b.event_id = "id-b".into();
    let first = hub.append("t", vec![a.clone(), b.clone()]).await;
    let retry = hub.append("t", vec![a.clone(), b.clone()]).await;
    assert_eq!(retry.transaction_id, first.transaction_id);
    for (f, r) in first.results.iter().zip(&retry.results) {
        assert_eq!(
            (f.partition, f.sequence, &f.cursor, f.key_version),
            (r.partition, r.sequence, &r.cursor, r.key_version)
        );
        assert!(r.deduplicated);
        assert_eq!(r.outcome, AppendOutcome::DuplicateEventId as i32);
    }
    // A retry mixed with a new event stores only the new one.
    let mut c = ev("k1", "T", "c");
    c.event_id = "id-c".into();
    let mixed = hub.append("t", vec![a, c]).await;
    assert!(mixed.results[0].deduplicated);
    assert!(!mixed.results[1].deduplicated);
    assert_eq!(mixed.results[1].key_version, 2);
    let topic = hub
        .client()
        .get_topic(proto::GetTopicRequest { name: "t".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(topic.topic.unwrap().event_count, 3);
}

/// An Append with one invalid event stores nothing, not even the topic.
#[tokio::test]
async fn invalid_event_stores_nothing() {
    let hub = spawn_hub().await;
    let err = hub
        .append_err("fresh", vec![ev("ok", "T", "1"), ev("", "T", "2")])
        .await;
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("events[1].key"), "{}", err.message());
    let err = hub
        .client()
        .get_topic(proto::GetTopicRequest {
            name: "fresh".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Same for a version conflict on a topic the append would have created.
    let mut e = ev("k", "T", "");
    e.expected = ExpectedVersion::Exact as i32;
    e.expected_key_version = 3;
    let err = hub.append_err("fresh", vec![e]).await;
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = hub
        .client()
        .get_topic(proto::GetTopicRequest {
            name: "fresh".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

/// CreateTopic is idempotent for the same partition count and refuses another; ListTopics pages by name.
#[tokio::test]
async fn create_get_list_topics() {
    let hub = spawn_hub().await;
    let mut client = hub.client();
    for name in ["b", "a", "c"] {
        let r = client
            .create_topic(proto::CreateTopicRequest {
                name: name.into(),
                partition_count: 3,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.created);
        assert_eq!(r.topic.unwrap().partitions.len(), 3);
    }
    let again = client
        .create_topic(proto::CreateTopicRequest {
            name: "a".into(),
            partition_count: 3,
        })
        .await
        .unwrap();
    assert!(!again.into_inner().created);
    let err = client
        .create_topic(proto::CreateTopicRequest {
            name: "a".into(),
            partition_count: 5,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let page = client
        .list_topics(proto::ListTopicsRequest {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        page.topics
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    assert_eq!(page.next_after_name, "b");
    let rest = client
        .list_topics(proto::ListTopicsRequest {
            after_name: "b".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.topics.len(), 1);
    assert!(rest.next_after_name.is_empty());
    hub.append("a", vec![ev("x", "T", "")]).await;
    let a = client
        .get_topic(proto::GetTopicRequest { name: "a".into() })
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap();
    let p = partition_of("x", 3) as usize;
    assert_eq!(a.partitions[p].event_count, 1);
    let (_, head) = hub.read_all("a", p as u32, "_first").await;
    assert_eq!(a.partitions[p].head_cursor, head);
}

/// With auto-create off, appending to an unknown topic is NOT_FOUND.
#[tokio::test]
async fn auto_create_off() {
    let hub = spawn_hub_with(|c| c.auto_create_topics = false).await;
    let err = hub.append_err("nope", vec![ev("k", "T", "")]).await;
    assert_eq!(err.code(), Code::NotFound);
}

/// ReadKey returns one key's history in order, resumes from a version, and knows unknown keys.
#[tokio::test]
async fn read_key_history() {
    let hub = spawn_hub().await;
    for i in 0..30 {
        hub.append(
            "p",
            vec![
                ev("person-1", "Changed", &i.to_string()),
                ev(&format!("other-{i}"), "X", ""),
            ],
        )
        .await;
    }
    let (events, version) = read_key(&hub, "person-1", 0, 7).await;
    assert_eq!(version, 30);
    assert_eq!(
        events.iter().map(|e| e.key_version).collect::<Vec<_>>(),
        (1..=30).collect::<Vec<_>>()
    );
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.payload == i.to_string().as_bytes())
    );
    let (tail, _) = read_key(&hub, "person-1", 28, 0).await;
    assert_eq!(
        tail.iter().map(|e| e.key_version).collect::<Vec<_>>(),
        vec![28, 29, 30]
    );
    let (none, v) = read_key(&hub, "nobody", 0, 0).await;
    assert!(none.is_empty());
    assert_eq!(v, 0);
    // Load, decide, append with the expected version; a writer that loaded the same version loses.
    let mut mine = ev("person-1", "Renamed", "me");
    mine.expected = ExpectedVersion::Exact as i32;
    mine.expected_key_version = version;
    let theirs = mine.clone();
    hub.append("p", vec![mine]).await;
    let err = hub.append_err("p", vec![theirs]).await;
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.metadata().get("eventhub-actual-version").unwrap(), "31");
}

pub async fn read_key(hub: &TestHub, key: &str, from: u64, max: u32) -> (Vec<proto::Event>, u64) {
    let mut stream = hub
        .client()
        .read_key(proto::ReadKeyRequest {
            topic: "p".into(),
            key: key.into(),
            from_version: from,
            max_events: max,
        })
        .await
        .unwrap()
        .into_inner();
    let (mut events, mut version) = (Vec::new(), 0);
    while let Some(page) = stream.next().await {
        let page = page.unwrap();
        events.extend(page.events);
        version = page.current_version;
    }
    (events, version)
}

/// Dedup by content compares with the key's latest valid event only: A, B, A stores three.
#[tokio::test]
async fn dedup_by_content() {
    let hub = spawn_hub().await;
    let mut client = hub.client();
    let send = |e: AppendEvent| {
        let mut client = hub.client();
        async move {
            client
                .append(proto::AppendRequest {
                    topic: "d".into(),
                    events: vec![e],
                    dedup_by_content: true,
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let a = ev("k", "Set", "A");
    let r1 = send(a.clone()).await;
    let r2 = send(a.clone()).await;
    assert_eq!(
        r2.results[0].outcome,
        AppendOutcome::DuplicateContent as i32
    );
    assert_eq!(r2.results[0].sequence, r1.results[0].sequence);
    assert_eq!(r2.transaction_id, r1.transaction_id);
    send(ev("k", "Set", "B")).await;
    let r4 = send(a.clone()).await;
    assert_eq!(r4.results[0].outcome, AppendOutcome::Stored as i32);
    assert_eq!(r4.results[0].key_version, 3, "A, B, A stores three");
    // Headers and type are part of the content.
    let mut h = a.clone();
    h.headers.insert("x".into(), "1".into());
    assert_eq!(
        send(h).await.results[0].outcome,
        AppendOutcome::Stored as i32
    );
    // After invalidating the latest event, a retry of it stores a new event.
    let r6 = send(ev("k", "Set", "C")).await;
    client
        .invalidate(proto::InvalidateRequest {
            topic: "d".into(),
            transaction_id: r6.transaction_id,
            reason: "bad".into(),
        })
        .await
        .unwrap();
    let r7 = send(ev("k", "Set", "C")).await;
    assert_eq!(r7.results[0].outcome, AppendOutcome::Stored as i32);
}

/// Invalidating a transaction spanning three partitions puts one marker after its events in each.
#[tokio::test]
async fn invalidate_across_partitions() {
    let hub = spawn_hub_with(|c| c.default_partitions = 8).await;
    // Pick keys in three distinct partitions.
    let mut keys = Vec::new();
    let mut parts = std::collections::BTreeSet::new();
    for i in 0.. {
        let k = format!("k{i}");
        if parts.insert(partition_of(&k, 8)) {
            keys.push(k);
        }
        if keys.len() == 3 {
            break;
        }
    }
    hub.append("inv", keys.iter().map(|k| ev(k, "Set", "good")).collect())
        .await;
    // Followers on each partition, started before the bad transaction.
    let mut followers = Vec::new();
    for &p in &parts {
        let stream = hub
            .client()
            .read_partition(ReadPartitionRequest {
                topic: "inv".into(),
                partition: p,
                cursor: "_last".into(),
                follow: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        followers.push(stream);
    }
    let bad = hub
        .append("inv", keys.iter().map(|k| ev(k, "Set", "bad")).collect())
        .await;
    let mut client = hub.client();
    let inv = client
        .invalidate(proto::InvalidateRequest {
            topic: "inv".into(),
            transaction_id: bad.transaction_id,
            reason: "wrong price".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inv.markers.len(), 3);
    assert!(!inv.already_invalidated);
    let again = client
        .invalidate(proto::InvalidateRequest {
            topic: "inv".into(),
            transaction_id: bad.transaction_id,
            reason: "again".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.already_invalidated);
    assert_eq!(again.markers, inv.markers);
    assert_eq!(again.marker_transaction_id, inv.marker_transaction_id);
    for stream in &mut followers {
        let mut got = Vec::new();
        while got.len() < 2 {
            got.extend(stream.next().await.unwrap().unwrap().events);
        }
        assert_eq!(got[0].payload, b"bad");
        assert_eq!(got[1].r#type, "$invalidation");
        let marker = got[1].invalidation.as_ref().unwrap();
        assert_eq!(
            (marker.transaction_id, marker.reason.as_str()),
            (bad.transaction_id, "wrong price")
        );
    }
    // Read later, the bad events are marked invalidated.
    let (events, _) = hub.read_all("inv", *parts.first().unwrap(), "_first").await;
    assert!(!events[0].transaction_invalidated);
    assert!(events[1].transaction_invalidated);
    // Surface falls back to the previous valid events.
    let (surface, _, _) = surface(
        &hub,
        SurfaceRequest {
            topic: "inv".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(surface.len(), 3);
    assert!(surface.iter().all(|e| e.payload == b"good"));
    // Unknown transactions, and invalidating an invalidation.
    let err = client
        .invalidate(proto::InvalidateRequest {
            topic: "inv".into(),
            transaction_id: 99,
            reason: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .invalidate(proto::InvalidateRequest {
            topic: "inv".into(),
            transaction_id: inv.marker_transaction_id,
            reason: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// A tombstone hides its key from Surface until a later event revives it.
#[tokio::test]
async fn tombstone_then_revive() {
    let hub = spawn_hub().await;
    hub.append("tomb", vec![ev("a", "Set", "1"), ev("b", "Set", "1")])
        .await;
    let mut del = ev("a", "Deleted", "");
    del.tombstone = true;
    hub.append("tomb", vec![del]).await;
    let (s, _, _) = surface(
        &hub,
        SurfaceRequest {
            topic: "tomb".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        s.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        vec!["b"]
    );
    hub.append("tomb", vec![ev("a", "Set", "2")]).await;
    let (s, _, _) = surface(
        &hub,
        SurfaceRequest {
            topic: "tomb".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        s.iter()
            .map(|e| (e.key.as_str(), e.payload.as_slice()))
            .collect::<Vec<_>>(),
        vec![("a", &b"2"[..]), ("b", &b"1"[..])]
    );
}

/// Surface's cursors as of a transaction are the heads every partition had
/// right after it, for each of 150 transactions of different sizes,
/// including long runs that leave one partition alone or touch it once.
#[tokio::test]
async fn surface_cursors_are_the_heads_after_each_transaction() {
    let hub = spawn_hub_with(|c| c.default_partitions = 2).await;
    let keys = |p: u32| -> Vec<String> {
        (0..)
            .map(|i| format!("key{i}"))
            .filter(|k| partition_of(k, 2) == p)
            .take(4)
            .collect()
    };
    let keys = [keys(0), keys(1)];
    let mut heads = [0u64; 2];
    let mut after: Vec<[u64; 2]> = Vec::new();
    for t in 0..150u64 {
        // Partition 0 rests for 12 transactions of every 40; partition 1
        // gets an event in one transaction of every 9.
        let n0 = if t % 40 < 12 { 0 } else { (t % 4) as usize + 1 };
        let n1 = usize::from(t % 9 == 0 || n0 == 0);
        let events: Vec<_> = (0..n0)
            .map(|i| ev(&keys[0][i], "Set", &format!("{t}")))
            .chain((0..n1).map(|i| ev(&keys[1][i], "Set", &format!("{t}"))))
            .collect();
        let r = hub.append("heads", events).await;
        assert_eq!(r.transaction_id, t + 1);
        heads[0] += n0 as u64;
        heads[1] += n1 as u64;
        after.push(heads);
    }
    for (t, want) in after.iter().enumerate() {
        let as_of = t as u64 + 1;
        let (_, cursors, got_as_of) = surface(
            &hub,
            SurfaceRequest {
                topic: "heads".into(),
                as_of_transaction: as_of,
                limit: 1,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(got_as_of, as_of);
        let got: Vec<String> = cursors.iter().map(|c| c.cursor.clone()).collect();
        let want: Vec<String> = (0..2)
            .map(|p| eventhub::cursor::encode("heads", p, want[p as usize]))
            .collect();
        assert_eq!(got, want, "cursors as of transaction {as_of}");
    }
}

/// Surface as of each of a dozen transactions (with tombstones and invalidations) matches a replay.
#[tokio::test]
async fn surface_as_of_matches_replay() {
    let hub = spawn_hub().await;
    let mut client = hub.client();
    // The log as the test knows it: (transaction, key, payload, tombstone).
    let mut log: Vec<(u64, String, String, bool)> = Vec::new();
    let mut invalidated: Vec<(u64, u64)> = Vec::new(); // (transaction, invalidated at)
    let mut last = 0;
    for t in 0..12u64 {
        let mut events = Vec::new();
        for j in 0..3 {
            let key = format!("k{}", (t * 7 + j * 3) % 6);
            let mut e = ev(&key, "Set", &format!("t{t}j{j}"));
            e.tombstone = (t + j) % 5 == 0;
            events.push(e);
        }
        let r = hub.append("asof", events.clone()).await;
        for e in &events {
            log.push((
                r.transaction_id,
                e.key.clone(),
                String::from_utf8(e.payload.clone()).unwrap(),
                e.tombstone,
            ));
        }
        last = r.transaction_id;
        if t % 4 == 3 {
            let victim = r.transaction_id - 1;
            let inv = client
                .invalidate(proto::InvalidateRequest {
                    topic: "asof".into(),
                    transaction_id: victim,
                    reason: "test".into(),
                })
                .await
                .unwrap()
                .into_inner();
            invalidated.push((victim, inv.marker_transaction_id));
            last = inv.marker_transaction_id;
        }
    }
    for as_of in 1..=last {
        let mut expect: BTreeMap<String, (String, bool)> = BTreeMap::new();
        for (t, key, payload, tomb) in &log {
            let bad = invalidated.iter().any(|(v, at)| v == t && *at <= as_of);
            if *t <= as_of && !bad {
                expect.insert(key.clone(), (payload.clone(), *tomb));
            }
        }
        let expect: Vec<(String, String)> = expect
            .into_iter()
            .filter(|(_, (_, tomb))| !tomb)
            .map(|(k, (p, _))| (k, p))
            .collect();
        let (got, cursors, got_as_of) = surface(
            &hub,
            SurfaceRequest {
                topic: "asof".into(),
                as_of_transaction: as_of,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(got_as_of, as_of);
        let got: Vec<(String, String)> = got
            .into_iter()
            .map(|e| (e.key, String::from_utf8(e.payload).unwrap()))
            .collect();
        assert_eq!(got, expect, "surface as of transaction {as_of}");
        // The cursors of that moment: reading on sees only later transactions.
        for c in cursors {
            let (later, _) = hub.read_all("asof", c.partition, &c.cursor).await;
            assert!(later.iter().all(|e| e.transaction_id > as_of));
            let (all, _) = hub.read_all("asof", c.partition, "_first").await;
            assert_eq!(
                all.iter().filter(|e| e.transaction_id <= as_of).count() + later.len(),
                all.len()
            );
        }
    }
}

/// A follower of a partition with a type filter and small pages gets the
/// events committed while it follows (served from the hub's memory) in
/// order, each once, with cursors that resume exactly after them.
#[tokio::test]
async fn follower_pages_filter_and_resume() {
    let hub = spawn_hub_with(|c| c.default_partitions = 1).await;
    hub.append("f", vec![ev("k", "A", "0")]).await;
    let mut stream = hub
        .client()
        .read_partition(ReadPartitionRequest {
            topic: "f".into(),
            cursor: "_last".into(),
            follow: true,
            max_events: 3,
            types: vec!["A".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ty = |i: usize| if i.is_multiple_of(2) { "A" } else { "B" };
    let appended = hub
        .append(
            "f",
            (1..=20).map(|i| ev("k", ty(i), &i.to_string())).collect(),
        )
        .await;
    let head = appended.results.last().unwrap().cursor.clone();
    let mut got = Vec::new();
    let mut cursor = String::new();
    while cursor != head {
        let page = stream.next().await.unwrap().unwrap();
        assert!(page.events.len() <= 3, "pages hold at most max_events");
        got.extend(
            page.events
                .iter()
                .map(|e| String::from_utf8(e.payload.clone()).unwrap()),
        );
        // A page ends at its last event or past it, over skipped events of
        // other types; never past the head. (Which, depends on how much of
        // the commit the hub had in memory when it read.)
        if let Some(last) = page.events.last() {
            let Ok(Start::After(end)) = eventhub::cursor::decode("f", 0, &page.cursor) else {
                panic!("page cursor {:?}", page.cursor);
            };
            assert!(
                (last.sequence..=21).contains(&end),
                "a page of {:?} ends at {end}",
                page.events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            );
        }
        cursor = page.cursor;
    }
    let expected: Vec<String> = (1..=20usize)
        .filter(|i| i.is_multiple_of(2))
        .map(|i| i.to_string())
        .collect();
    assert_eq!(got, expected);
    // Resuming from a cursor in the middle gets exactly what follows it.
    let (rest, end) = hub.read_all("f", 0, &appended.results[9].cursor).await;
    assert_eq!(rest.len(), 10);
    assert_eq!(rest[0].payload, b"11");
    assert_eq!(end, head);
}

/// Events read while a partition is followed (from the hub's memory) are
/// marked invalidated as soon as their transaction is.
#[tokio::test]
async fn invalidation_reaches_events_read_while_followed() {
    let hub = spawn_hub_with(|c| c.default_partitions = 1).await;
    hub.append("iv", vec![ev("k", "Set", "first")]).await;
    let mut follower = hub
        .client()
        .read_partition(ReadPartitionRequest {
            topic: "iv".into(),
            cursor: "_last".into(),
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let good = hub.append("iv", vec![ev("k", "Set", "good")]).await;
    let bad = hub.append("iv", vec![ev("k", "Set", "bad")]).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(follower.next().await.unwrap().unwrap().events);
    }
    assert!(seen.iter().all(|e| !e.transaction_invalidated));
    let after_good = good.results[0].cursor.clone();
    let (before, _) = hub.read_all("iv", 0, &after_good).await;
    assert!(!before[0].transaction_invalidated);
    hub.client()
        .invalidate(proto::InvalidateRequest {
            topic: "iv".into(),
            transaction_id: bad.transaction_id,
            reason: "wrong".into(),
        })
        .await
        .unwrap();
    let (after, _) = hub.read_all("iv", 0, &after_good).await;
    assert_eq!(after.len(), 2);
    assert_eq!(after[0].payload, b"bad");
    assert!(after[0].transaction_invalidated);
    assert_eq!(after[1].r#type, "$invalidation");
    let marker = loop {
        let page = follower.next().await.unwrap().unwrap();
        if let Some(e) = page.events.into_iter().next() {
            break e;
        }
    };
    assert_eq!(
        marker.invalidation.unwrap().transaction_id,
        bad.transaction_id
    );
}

/// Events read from the database before their transaction was invalidated
/// are marked when read again, by ReadPartition and ReadKey: partition
/// reads remember that a topic has no invalidations only until its next
/// transaction.
#[tokio::test]
async fn invalidation_marks_events_read_before_it() {
    let hub = spawn_hub_with(|c| c.default_partitions = 1).await;
    hub.append("ivr", vec![ev("k", "Set", "good")]).await;
    let bad = hub.append("ivr", vec![ev("k", "Set", "bad")]).await;
    let marks = |events: &[proto::Event]| -> Vec<(Vec<u8>, bool)> {
        events
            .iter()
            .map(|e| (e.payload.clone(), e.transaction_invalidated))
            .collect()
    };
    let by_key = |pages: Vec<proto::ReadKeyResponse>| -> Vec<proto::Event> {
        pages.into_iter().flat_map(|p| p.events).collect()
    };
    let (before, _) = hub.read_all("ivr", 0, "_first").await;
    assert_eq!(
        marks(&before),
        [(b"good".to_vec(), false), (b"bad".to_vec(), false)]
    );
    let before = by_key(read_key_pages(&mut hub.client(), "ivr", "k", 0).await);
    assert_eq!(
        marks(&before),
        [(b"good".to_vec(), false), (b"bad".to_vec(), false)]
    );
    hub.client()
        .invalidate(proto::InvalidateRequest {
            topic: "ivr".into(),
            transaction_id: bad.transaction_id,
            reason: "wrong".into(),
        })
        .await
        .unwrap();
    let (after, _) = hub.read_all("ivr", 0, "_first").await;
    assert_eq!(
        marks(&after[..2]),
        [(b"good".to_vec(), false), (b"bad".to_vec(), true)]
    );
    assert_eq!(after[2].r#type, "$invalidation");
    let after = by_key(read_key_pages(&mut hub.client(), "ivr", "k", 0).await);
    assert_eq!(
        marks(&after),
        [(b"good".to_vec(), false), (b"bad".to_vec(), true)]
    );
}

/// A batch the database refuses midway (a trigger raises on one key)
/// stores nothing of it, takes no transaction id or sequence, and the hub
/// goes on appending on the same database.
#[tokio::test]
async fn append_refused_by_the_database_stores_nothing() {
    use sqlx::Connection;
    let hub = spawn_hub().await;
    let first = hub.append("refuse", vec![ev("a", "T", "1")]).await;
    assert_eq!(first.transaction_id, 1);
    if on_postgres() {
        let mut db = sqlx::PgConnection::connect(&hub.database_url)
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.key = 'poison' THEN RAISE EXCEPTION 'refused by a test trigger'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER refuse_poison BEFORE INSERT ON keys FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
        )
        .execute(&mut db)
        .await
        .unwrap();
    } else {
        let mut db = sqlx::SqliteConnection::connect(&hub.database_url)
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON keys WHEN NEW.key = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END;",
        )
        .execute(&mut db)
        .await
        .unwrap();
    }
    let refused = hub
        .append_err("refuse", vec![ev("b", "T", "2"), ev("poison", "T", "3")])
        .await;
    // Retrying would fail the same way: INTERNAL, not UNAVAILABLE.
    assert_eq!(refused.code(), Code::Internal, "{refused:?}");
    assert!(refused.message().contains("not stored"), "{refused:?}");
    let next = hub.append("refuse", vec![ev("b", "T", "4")]).await;
    assert_eq!(
        next.transaction_id, 2,
        "the refused batch took no transaction id"
    );
    assert_eq!(next.results[0].key_version, 1, "nor a version of key b");
    let mut payloads = Vec::new();
    for p in 0..4 {
        let (events, _) = hub.read_all("refuse", p, "_first").await;
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.sequence, i as u64 + 1, "gapless sequences");
            payloads.push(String::from_utf8(e.payload.clone()).unwrap());
        }
    }
    payloads.sort();
    assert_eq!(payloads, ["1", "4"]);
}

/// A long page (read with binary `COPY` on PostgreSQL, stepped through
/// SQLite's own API on SQLite) holds exactly what short pages (sqlx's
/// prepared `SELECT`) hold: every field, empty ones, headers, tombstones,
/// invalidation markers and invalidated transactions, with and without a
/// type filter.
#[tokio::test]
async fn long_and_short_pages_read_the_same_events() {
    let hub = spawn_hub_with(|c| c.default_partitions = 1).await;
    let mut batches = Vec::new();
    for b in 0..6 {
        let events = (0..100)
            .map(|i| {
                let n = b * 100 + i;
                let mut e = ev(
                    ["a", "é-ключ", "c"][n % 3],
                    ["Set", "Cleared"][n % 2],
                    &format!("payload {n}"),
                );
                if n % 5 == 0 {
                    e.event_id = format!("id-{n}");
                }
                if n % 4 == 0 {
                    e.headers.insert("trace".into(), format!("t{n}"));
                    e.headers.insert("origin".into(), "test".into());
                }
                if n % 11 == 0 {
                    e.content_type = "application/json".into();
                    e.payload = format!("{{\"n\":{n}}}").into_bytes();
                }
                if n % 13 == 0 {
                    e.tombstone = true;
                    e.payload.clear();
                }
                if n == 250 {
                    e.payload = vec![0, 0xff, 0x80, 0];
                }
                e
            })
            .collect();
        batches.push(hub.append("pages", events).await);
    }
    hub.client()
        .invalidate(proto::InvalidateRequest {
            topic: "pages".into(),
            transaction_id: batches[2].transaction_id,
            reason: "a bad batch".into(),
        })
        .await
        .unwrap();
    let read = |max_events: u32, types: &'static [&'static str]| {
        let mut client = hub.client();
        async move {
            let pages = read_pages(&mut client, "pages", 0, max_events, types).await;
            let count = pages.len();
            let events: Vec<proto::Event> = pages.into_iter().flat_map(|p| p.events).collect();
            (events, count)
        }
    };
    let (long, long_pages) = read(10_000, &[]).await;
    let (short, short_pages) = read(9, &[]).await;
    assert_eq!(long_pages, 1);
    assert!(short_pages > 60);
    assert_eq!(long.len(), 601, "600 events and one invalidation marker");
    assert_eq!(long, short);
    let marker = long.last().unwrap().invalidation.as_ref().unwrap();
    assert_eq!(marker.transaction_id, batches[2].transaction_id);
    assert_eq!(marker.reason, "a bad batch");
    assert_eq!(
        long.iter().filter(|e| e.transaction_invalidated).count(),
        100
    );
    assert_eq!(long[250].payload, [0, 0xff, 0x80, 0]);
    assert_eq!(long[4].headers["trace"], "t4");
    assert_eq!(long[1].key, "é-ключ");
    assert!(long[13].tombstone && long[13].payload.is_empty());
    assert_eq!(long[5].event_id, "id-5");
    assert_eq!(long[11].content_type, "application/json");

    let (long_cleared, _) = read(10_000, &["Cleared"]).await;
    let (short_cleared, _) = read(9, &["Cleared"]).await;
    assert_eq!(long_cleared, short_cleared);
    let cleared: Vec<_> = long
        .iter()
        .filter(|e| e.r#type == "Cleared")
        .cloned()
        .collect();
    assert_eq!(long_cleared, cleared);
    assert_eq!(cleared.len(), 300);

    // A key's events, long (stepped on SQLite) and short pages alike.
    for key in ["a", "é-ключ"] {
        let long_key: Vec<proto::Event> = read_key_pages(&mut hub.client(), "pages", key, 10_000)
            .await
            .into_iter()
            .flat_map(|p| p.events)
            .collect();
        let short_key: Vec<proto::Event> = read_key_pages(&mut hub.client(), "pages", key, 9)
            .await
            .into_iter()
            .flat_map(|p| p.events)
            .collect();
        assert_eq!(long_key.len(), 200);
        assert_eq!(long_key, short_key);
        let in_partition: Vec<&proto::Event> = long.iter().filter(|e| e.key == key).collect();
        assert_eq!(long_key.iter().collect::<Vec<_>>(), in_partition);
    }
}

/// A read of more events than the hub takes from the database at once,
/// in short pages: every page holds at most the events asked for, only the
/// last says it caught up, and each page's cursor continues exactly after
/// it, with and without a type filter.
#[tokio::test]
async fn short_pages_continue_exactly_where_they_end() {
    let hub = spawn_hub_with(|c| c.default_partitions = 1).await;
    for b in 0..5 {
        let events = (0..500)
            .map(|i| {
                let n = b * 500 + i;
                ev(
                    &format!("k{}", n % 37),
                    ["A", "B", "B"][n % 3],
                    &format!("{n}"),
                )
            })
            .collect();
        hub.append("short", events).await;
    }
    let head = 2500;
    for (types, expected) in [
        (&[][..], (1..=head).collect::<Vec<u64>>()),
        (
            &["A"][..],
            (1..=head).filter(|s| (s - 1) % 3 == 0).collect(),
        ),
    ] {
        let pages = read_pages(&mut hub.client(), "short", 0, 7, types).await;
        let sequences: Vec<u64> = pages
            .iter()
            .flat_map(|p| &p.events)
            .map(|e| e.sequence)
            .collect();
        assert_eq!(sequences, expected, "types {types:?}");
        let (last, rest) = pages.split_last().unwrap();
        assert!(last.caught_up);
        assert!(rest.iter().all(|p| !p.caught_up && p.events.len() == 7));
        assert!(last.events.len() <= 7);
        // The last page ends at the head, past any events filtered out.
        assert_eq!(
            eventhub::cursor::decode("short", 0, &last.cursor).unwrap(),
            Start::After(head)
        );
        for page in pages.iter().step_by(13) {
            let next = hub
                .client()
                .read_partition(ReadPartitionRequest {
                    topic: "short".into(),
                    partition: 0,
                    cursor: page.cursor.clone(),
                    max_events: 1,
                    types: types.iter().map(|t| t.to_string()).collect(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .message()
                .await
                .unwrap()
                .unwrap();
            let after = page.events.last().unwrap().sequence;
            assert_eq!(
                next.events.first().map(|e| e.sequence),
                expected.iter().copied().find(|&s| s > after),
                "types {types:?}, after {after}"
            );
        }
    }
}

/// ReadKey of a key with more events than the hub takes from the database
/// at once, in short pages: each page holds at most the events asked for,
/// in version order, with none skipped or repeated, and a page with an
/// invalidated event marks it.
#[tokio::test]
async fn short_key_pages_read_every_version_once() {
    let hub = spawn_hub_with(|c| c.default_partitions = 1).await;
    let mut txns = Vec::new();
    for b in 0..3 {
        let events = (0..700)
            .map(|i| ev("long", "Set", &format!("{}", b * 700 + i)))
            .collect();
        txns.push(hub.append("keyed", events).await.transaction_id);
    }
    hub.client()
        .invalidate(proto::InvalidateRequest {
            topic: "keyed".into(),
            transaction_id: txns[1],
            reason: "the second batch".into(),
        })
        .await
        .unwrap();
    let pages = read_key_pages(&mut hub.client(), "keyed", "long", 7).await;
    assert!(pages.iter().all(|p| p.current_version == 2100));
    assert!(
        pages.iter().all(|p| p.events.len() == 7),
        "2,100 events in full pages of 7"
    );
    let events: Vec<&proto::Event> = pages.iter().flat_map(|p| &p.events).collect();
    let versions: Vec<u64> = events.iter().map(|e| e.key_version).collect();
    assert_eq!(versions, (1..=2100).collect::<Vec<u64>>());
    let payloads: Vec<String> = events
        .iter()
        .map(|e| String::from_utf8(e.payload.clone()).unwrap())
        .collect();
    assert_eq!(
        payloads,
        (0..2100).map(|n| n.to_string()).collect::<Vec<_>>()
    );
    let invalidated: Vec<u64> = events
        .iter()
        .filter(|e| e.transaction_invalidated)
        .map(|e| e.key_version)
        .collect();
    assert_eq!(invalidated, (701..=1400).collect::<Vec<u64>>());
}

/// Pages of large events stay under gRPC's 4 MiB message limit and skip
/// nothing, whether read in one long run or by short reads, from a
/// partition or by key.
#[tokio::test]
async fn pages_of_large_events_are_cut_by_size() {
    let hub = spawn_hub_with(|c| c.default_partitions = 1).await;
    for b in 0..3 {
        let events = (0..100)
            .map(|i| {
                let mut e = ev("k", "Big", "");
                e.payload = vec![b as u8 + i as u8; 20_000];
                e
            })
            .collect();
        hub.append("big", events).await;
    }
    let pages = read_pages(&mut hub.client(), "big", 0, 10_000, &[]).await;
    for page in &pages {
        assert!(prost::Message::encoded_len(page) < 4 << 20);
    }
    let sequences: Vec<u64> = pages
        .iter()
        .flat_map(|p| &p.events)
        .map(|e| e.sequence)
        .collect();
    let pages = pages.len();
    assert_eq!(sequences, (1..=300).collect::<Vec<u64>>());
    assert!(pages >= 2, "6 MB of events came in {pages} page(s)");

    let short = read_pages(&mut hub.client(), "big", 0, 7, &[]).await;
    assert!(short.iter().all(|p| p.events.len() <= 7));
    let short: Vec<u64> = short
        .iter()
        .flat_map(|p| &p.events)
        .map(|e| e.sequence)
        .collect();
    assert_eq!(short, sequences);

    let pages = read_key_pages(&mut hub.client(), "big", "k", 10_000).await;
    for page in &pages {
        assert!(prost::Message::encoded_len(page) < 4 << 20);
    }
    let versions: Vec<u64> = pages
        .iter()
        .flat_map(|p| &p.events)
        .map(|e| e.key_version)
        .collect();
    assert_eq!(versions, (1..=300).collect::<Vec<u64>>());
    assert!(
        pages.len() >= 2,
        "6 MB of a key's events came in {} page(s)",
        pages.len()
    );
}

/// A ListTopics page of many topics of 1,024 partitions ends before it
/// passes gRPC's default 4 MiB message limit, and says where to go on.
#[tokio::test]
async fn list_topics_pages_fit_a_message() {
    let hub = spawn_hub().await;
    let mut client = hub.client();
    let names: Vec<String> = (0..160).map(|i| format!("wide-{i:03}")).collect();
    for name in &names {
        client
            .create_topic(proto::CreateTopicRequest {
                name: name.clone(),
                partition_count: 1024,
            })
            .await
            .unwrap();
    }
    let (mut listed, mut after, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = client
            .list_topics(proto::ListTopicsRequest {
                name_prefix: "wide-".into(),
                after_name: after.clone(),
                limit: 1000,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(prost::Message::encoded_len(&page) <= 4 << 20);
        assert!(!page.topics.is_empty());
        assert!(page.topics.iter().all(|t| t.partitions.len() == 1024));
        listed.extend(page.topics.iter().map(|t| t.name.clone()));
        pages += 1;
        if page.next_after_name.is_empty() {
            break;
        }
        assert_eq!(&page.next_after_name, listed.last().unwrap());
        after = page.next_after_name;
    }
    assert_eq!(listed, names);
    assert!(
        pages > 1,
        "160 topics of 1,024 partitions need more than one page"
    );
}

/// A filtered long-poll, or follower, waits for an event of its types:
/// commits of other types neither end the wait nor send a page; the page
/// that comes carries the cursor past everything skipped.
#[tokio::test]
async fn a_filtered_wait_is_for_its_types() {
    let hub = spawn_hub_with(|c| c.default_partitions = 1).await;
    hub.append("lp", vec![ev("k", "B", "0")]).await;
    for follow in [false, true] {
        let (_, head) = hub.read_all("lp", 0, "_first").await;
        let mut stream = hub
            .client()
            .read_partition(ReadPartitionRequest {
                topic: "lp".into(),
                cursor: head.clone(),
                wait_ms: 60_000,
                follow,
                heartbeat_ms: 60_000,
                types: vec!["A".into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        hub.append("lp", vec![ev("k", "B", "1")]).await;
        hub.append("lp", vec![ev("k", "B", "2"), ev("k", "B", "3")])
            .await;
        let a = hub
            .append("lp", vec![ev("k", "B", "4"), ev("k", "A", "5")])
            .await;
        let page = stream.next().await.unwrap().unwrap();
        assert_eq!(
            page.events
                .iter()
                .map(|e| e.payload.clone())
                .collect::<Vec<_>>(),
            vec![b"5".to_vec()],
            "follow: {follow}"
        );
        assert_eq!(page.cursor, a.results[1].cursor);
        if !follow {
            assert!(stream.next().await.is_none(), "a long-poll answers once");
        }
    }
}

/// A filtered read over a long stretch of other types scans it
/// `filtered_scan` sequences at a time, each stretch without a match ending
/// with an empty page that carries the cursor.
#[tokio::test]
async fn a_filtered_read_reports_progress_over_skipped_stretches() {
    let hub = spawn_hub_with(|c| {
        c.default_partitions = 1;
        c.limits.filtered_scan = 10;
    })
    .await;
    let mut events: Vec<_> = (1..=35).map(|i| ev("k", "B", &i.to_string())).collect();
    events.push(ev("k", "A", "36"));
    events.extend((37..=41).map(|i| ev("k", "B", &i.to_string())));
    hub.append("scan", events).await;
    let pages = read_pages(&mut hub.client(), "scan", 0, 100, &["A"]).await;
    let seq = |cursor: &str| match eventhub::cursor::decode("scan", 0, cursor) {
        Ok(Start::After(s)) => s,
        other => panic!("cursor {cursor:?}: {other:?}"),
    };
    let seen: Vec<(Vec<u64>, u64, bool)> = pages
        .iter()
        .map(|p| {
            (
                p.events.iter().map(|e| e.sequence).collect(),
                seq(&p.cursor),
                p.caught_up,
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (vec![], 10, false),
            (vec![], 20, false),
            (vec![], 30, false),
            (vec![36], 40, false),
            (vec![], 41, true),
        ]
    );
}

/// A filtered follower of a partition busy with events of other types
/// still hears from the hub at least every heartbeat interval, with a
/// cursor that moves past what it skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_follower_hears_heartbeats_through_other_traffic() {
    let hub = spawn_hub_with(|c| c.default_partitions = 1).await;
    hub.append("busy", vec![ev("k", "B", "0")]).await;
    let mut stream = hub
        .client()
        .read_partition(ReadPartitionRequest {
            topic: "busy".into(),
            cursor: "_last".into(),
            follow: true,
            heartbeat_ms: 50,
            types: vec!["A".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appender = {
        let (mut client, done) = (hub.client(), done.clone());
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                append(&mut client, "busy", vec![ev("k", "B", "x")]).await;
            }
        })
    };
    let mut last = 0;
    for _ in 0..5 {
        let page = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a page within 10 s while other types are appended")
            .unwrap()
            .unwrap();
        assert!(page.events.is_empty());
        let Ok(Start::After(at)) = eventhub::cursor::decode("busy", 0, &page.cursor) else {
            panic!("cursor {:?}", page.cursor);
        };
        assert!(at >= last, "cursors never go back");
        last = at;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    appender.await.unwrap();
    assert!(last > 1, "the cursor moved past skipped events");
}
