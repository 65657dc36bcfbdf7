//! The read use cases on a real SQLite store, without gRPC. Waits and
//! heartbeats are checked with paused time: an idle runtime jumps to its
//! next timer, so the times pages arrive at are exact. Time is paused only
//! once the store is open and the events are written, for reads that do
//! not query the database (while a query runs on SQLite's thread the
//! runtime is idle too, and would jump past the pool's acquire timeout).

use super::{Reader, key, partition, surface};
use crate::config::{Config, Limits};
use crate::cursor;
use crate::domain::{Content, EventRow, Expected, NewEvent, TopicName};
use crate::error::HubError;
use crate::store::Store;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

struct Hub {
    store: Store,
    reader: Reader,
    shutdown: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn hub(limits: Limits) -> Hub {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hub.db").display());
    let store = Store::open(&Config::new(url)).await.unwrap();
    let (shutdown, stopping) = watch::channel(false);
    Hub {
        reader: Reader::new(store.clone(), limits, stopping),
        store,
        shutdown,
        _dir: dir,
    }
}

fn event(key: &str, event_type: &str, payload: &str) -> NewEvent {
    NewEvent {
        key: key.into(),
        event_id: None,
        expected: Expected::Any,
        content: Content {
            event_type: event_type.into(),
            content_type: "text/plain".into(),
            headers: None,
            payload: payload.as_bytes().to_vec(),
            tombstone: false,
        },
    }
}

impl Hub {
    /// A topic of one partition, so that every event lands in partition 0.
    async fn topic(&self, name: &str) -> TopicName {
        let name = TopicName::parse(name).unwrap();
        self.store.create_topic(name.clone(), 1).await.unwrap();
        name
    }

    /// Appends `events` in one transaction; its id.
    async fn append(&self, topic: &TopicName, events: Vec<NewEvent>) -> u64 {
        let reply = self.store.append(topic.clone(), events, false).await;
        reply.unwrap().transaction_id
    }

    /// The pages of a partition read that ends by itself.
    async fn read_partition(&self, req: partition::Request) -> Vec<partition::Page> {
        let read = self.reader.partition(req).await.unwrap();
        let (tx, rx) = mpsc::channel(4);
        let run = tokio::spawn(read.run(tx));
        let pages = collect(rx).await;
        run.await.unwrap().unwrap();
        pages
    }
}

async fn collect<P>(mut rx: mpsc::Receiver<P>) -> Vec<P> {
    let mut pages = Vec::new();
    while let Some(p) = rx.recv().await {
        pages.push(p);
    }
    pages
}

fn payloads(events: &[EventRow]) -> Vec<String> {
    events
        .iter()
        .map(|e| String::from_utf8(e.content.payload.clone()).unwrap())
        .collect()
}

/// `elapsed` is `due`, to the timer's resolution (a deadline falls on the
/// next millisecond).
fn assert_at(elapsed: Duration, due: Duration, what: &str) {
    assert!(
        elapsed >= due && elapsed <= due + Duration::from_millis(1),
        "{what}: after {elapsed:?}, due at {due:?}"
    );
}

fn numbered(key: &str, n: usize) -> Vec<NewEvent> {
    (1..=n).map(|i| event(key, "t", &i.to_string())).collect()
}

#[tokio::test]
async fn a_long_poll_reads_pages_of_the_size_asked_until_caught_up() {
    let hub = hub(Limits::default()).await;
    let t = hub.topic("orders").await;
    hub.append(&t, numbered("k", 25)).await;
    let pages = hub
        .read_partition(partition::Request {
            topic: "orders".into(),
            max_events: 10,
            ..Default::default()
        })
        .await;
    let shape: Vec<_> = pages
        .iter()
        .map(|p| (p.events.len(), p.position, p.caught_up))
        .collect();
    assert_eq!(shape, [(10, 10, false), (10, 20, false), (5, 25, true)]);
    let all: Vec<String> = pages.iter().flat_map(|p| payloads(&p.events)).collect();
    let expected: Vec<String> = (1..=25).map(|i| i.to_string()).collect();
    assert_eq!(all, expected);
    // From a cursor in the middle, the rest.
    let pages = hub
        .read_partition(partition::Request {
            topic: "orders".into(),
            cursor: cursor::encode("orders", 0, 20),
            ..Default::default()
        })
        .await;
    assert_eq!(pages.len(), 1);
    assert_eq!(payloads(&pages[0].events), ["21", "22", "23", "24", "25"]);
}

#[tokio::test]
async fn a_long_poll_with_nothing_to_read_answers_empty_once_its_wait_is_over() {
    let hub = hub(Limits {
        max_wait: Duration::from_secs(300),
        ..Limits::default()
    })
    .await;
    let t = hub.topic("orders").await;
    hub.append(&t, numbered("k", 3)).await;
    tokio::time::pause();
    for (asked, answered) in [(0, 0), (30, 30), (3600, 300)] {
        let start = Instant::now();
        let pages = hub
            .read_partition(partition::Request {
                topic: "orders".into(),
                cursor: "_last".into(),
                wait: Duration::from_secs(asked),
                ..Default::default()
            })
            .await;
        let due = Duration::from_secs(answered);
        assert_at(start.elapsed(), due, &format!("wait {asked}s"));
        assert_eq!(pages.len(), 1);
        assert!(pages[0].events.is_empty() && pages[0].caught_up);
        assert_eq!(pages[0].position, 3);
    }
}

#[tokio::test]
async fn a_long_poll_is_answered_by_the_first_commit_during_its_wait() {
    let hub = hub(Limits::default()).await;
    let t = hub.topic("orders").await;
    let read = hub
        .reader
        .partition(partition::Request {
            topic: "orders".into(),
            cursor: "_last".into(),
            wait: Duration::from_secs(300),
            ..Default::default()
        })
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    let run = tokio::spawn(read.run(tx));
    hub.append(&t, numbered("k", 2)).await;
    let pages = collect(rx).await;
    run.await.unwrap().unwrap();
    assert_eq!(pages.len(), 1);
    assert_eq!(payloads(&pages[0].events), ["1", "2"]);
    assert_eq!((pages[0].position, pages[0].caught_up), (2, true));
}

#[tokio::test]
async fn a_followed_read_sends_heartbeats_and_ends_when_its_reader_goes() {
    let hub = hub(Limits::default()).await;
    let t = hub.topic("orders").await;
    hub.append(&t, numbered("k", 1)).await;
    tokio::time::pause();
    for (asked, interval) in [(2000, 2000), (1, 50)] {
        let read = hub
            .reader
            .partition(partition::Request {
                topic: "orders".into(),
                cursor: "_last".into(),
                follow: true,
                heartbeat: Some(Duration::from_millis(asked)),
                ..Default::default()
            })
            .await
            .unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let run = tokio::spawn(read.run(tx));
        let mut last = Instant::now();
        for beat in 1..=3 {
            let page = rx.recv().await.unwrap();
            assert!(page.events.is_empty() && page.caught_up);
            assert_eq!(page.position, 1);
            let due = Duration::from_millis(interval);
            assert_at(
                last.elapsed(),
                due,
                &format!("heartbeat {beat} of {asked} ms"),
            );
            last = Instant::now();
        }
        drop(rx);
        run.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_followed_read_ends_when_the_hub_shuts_down() {
    let hub = hub(Limits::default()).await;
    hub.topic("orders").await;
    let read = hub
        .reader
        .partition(partition::Request {
            topic: "orders".into(),
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    let run = tokio::spawn(read.run(tx));
    hub.shutdown.send(true).unwrap();
    run.await.unwrap().unwrap();
    assert!(collect(rx).await.is_empty());
}

#[tokio::test]
async fn a_filtered_read_says_where_each_stretch_without_its_types_ended() {
    let hub = hub(Limits {
        filtered_scan: 10,
        ..Limits::default()
    })
    .await;
    let t = hub.topic("orders").await;
    hub.append(&t, numbered("k", 25)).await;
    hub.append(&t, vec![event("k", "rare", "found")]).await;
    let pages = hub
        .read_partition(partition::Request {
            topic: "orders".into(),
            types: vec!["rare".into()],
            ..Default::default()
        })
        .await;
    let shape: Vec<_> = pages
        .iter()
        .map(|p| (payloads(&p.events), p.position, p.caught_up))
        .collect();
    assert_eq!(
        shape,
        [
            (vec![], 10, false),
            (vec![], 20, false),
            (vec!["found".to_string()], 26, true)
        ]
    );
}

#[tokio::test]
async fn bad_partition_reads_are_refused_before_they_start() {
    let hub = hub(Limits::default()).await;
    let t = hub.topic("orders").await;
    hub.append(&t, numbered("k", 5)).await;
    let refused = async |req: partition::Request| match hub.reader.partition(req).await {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    };
    let e = refused(partition::Request {
        topic: "nope".into(),
        ..Default::default()
    })
    .await;
    assert!(matches!(e, HubError::NotFound(_)), "{e:?}");
    let e = refused(partition::Request {
        topic: "orders".into(),
        partition: 1,
        ..Default::default()
    })
    .await;
    assert!(e.to_string().contains("partitions 0 to 0"), "{e}");
    // A cursor after the partition's end: the database lost events.
    let e = refused(partition::Request {
        topic: "orders".into(),
        cursor: cursor::encode("orders", 0, 9),
        ..Default::default()
    })
    .await;
    assert!(matches!(e, HubError::OutOfRange(_)), "{e:?}");
    assert!(e.to_string().contains("ends at event 5"), "{e}");
}

#[tokio::test]
async fn invalidated_transactions_are_marked_in_partition_and_key_reads() {
    let hub = hub(Limits::default()).await;
    let t = hub.topic("orders").await;
    let kept = hub.append(&t, vec![event("a", "t", "kept")]).await;
    let gone = hub.append(&t, vec![event("a", "t", "gone")]).await;
    hub.store
        .invalidate(t.clone(), gone, "refunded".into())
        .await
        .unwrap();
    let pages = hub
        .read_partition(partition::Request {
            topic: "orders".into(),
            ..Default::default()
        })
        .await;
    let marks: Vec<_> = pages[0]
        .events
        .iter()
        .map(|e| (e.transaction_id, e.transaction_invalidated, e.invalidates))
        .collect();
    let marker = marks[2].0;
    assert_eq!(
        marks,
        [
            (kept, false, None),
            (gone, true, None),
            (marker, false, Some(gone))
        ]
    );
    let read = hub
        .reader
        .key(key::Request {
            topic: "orders".into(),
            key: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    read.run(tx).await.unwrap();
    let pages = collect(rx).await;
    let marks: Vec<_> = pages[0]
        .events
        .iter()
        .map(|e| e.transaction_invalidated)
        .collect();
    assert_eq!(marks, [false, true]);
}

#[tokio::test]
async fn a_key_read_pages_up_to_the_version_it_started_at() {
    let hub = hub(Limits::default()).await;
    let t = hub.topic("orders").await;
    hub.append(&t, numbered("a", 25)).await;
    hub.append(&t, numbered("b", 2)).await;
    let read_key = async |key: &str, from_version: u64| {
        let read = hub
            .reader
            .key(key::Request {
                topic: "orders".into(),
                key: key.into(),
                from_version,
                max_events: 10,
            })
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(4);
        let run = tokio::spawn(read.run(tx));
        let pages = collect(rx).await;
        run.await.unwrap().unwrap();
        pages
            .iter()
            .map(|p| {
                let versions = p.events.iter().map(|e| e.key_version);
                (versions.collect::<Vec<_>>(), p.current_version)
            })
            .collect::<Vec<_>>()
    };
    let pages = read_key("a", 0).await;
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[0].0, (1..=10).collect::<Vec<_>>());
    assert_eq!(pages[2], ((21..=25).collect(), 25));
    assert_eq!(read_key("a", 24).await, [(vec![24, 25], 25)]);
    assert_eq!(read_key("a", 30).await, [(vec![], 25)]);
    assert_eq!(read_key("never", 0).await, [(vec![], 0)]);
}

#[tokio::test]
async fn the_surface_pages_keys_as_of_a_transaction_with_where_to_continue() {
    let hub = hub(Limits::default()).await;
    let t = hub.topic("orders").await;
    let first = hub
        .append(
            &t,
            vec![event("a1", "t", "a1 v1"), event("a2", "t", "a2 v1")],
        )
        .await;
    hub.append(
        &t,
        vec![
            event("a1", "t", "a1 v2"),
            event("a3", "t", "a3 v1"),
            event("b1", "t", "b1 v1"),
        ],
    )
    .await;
    let surface = async |req: surface::Request| {
        let read = hub.reader.surface(req).await.unwrap();
        let (tx, rx) = mpsc::channel(4);
        read.run(tx).await.unwrap();
        collect(rx).await
    };
    let pages = surface(surface::Request {
        topic: "orders".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(pages.len(), 1);
    assert_eq!(
        payloads(&pages[0].events),
        ["a1 v2", "a2 v1", "a3 v1", "b1 v1"]
    );
    assert_eq!(&*pages[0].positions, [5]);
    assert_eq!(pages[0].next_after_key, None);
    // Of a prefix, at most two keys: where to continue.
    let pages = surface(surface::Request {
        topic: "orders".into(),
        key_prefix: "a".into(),
        limit: 2,
        ..Default::default()
    })
    .await;
    assert_eq!(payloads(&pages[0].events), ["a1 v2", "a2 v1"]);
    assert_eq!(pages[0].next_after_key.as_deref(), Some("a2"));
    let pages = surface(surface::Request {
        topic: "orders".into(),
        key_prefix: "a".into(),
        after_key: "a2".into(),
        limit: 2,
        ..Default::default()
    })
    .await;
    assert_eq!(payloads(&pages[0].events), ["a3 v1"]);
    assert_eq!(pages[0].next_after_key, None);
    // As of the first transaction.
    let pages = surface(surface::Request {
        topic: "orders".into(),
        as_of_transaction: first,
        ..Default::default()
    })
    .await;
    assert_eq!(payloads(&pages[0].events), ["a1 v1", "a2 v1"]);
    assert_eq!(&*pages[0].positions, [2]);
    assert_eq!(pages[0].as_of_transaction, first);
}
