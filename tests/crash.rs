//! The hub process is killed with SIGKILL during appends and restarted on
//! the same database: every acknowledged event is there, no transaction is
//! half there.

mod common;

use common::*;
use std::collections::{BTreeMap, HashSet};
use tokio::process::Child;

async fn start(db: &str) -> (Child, Client) {
    let hub = spawn_process(db, 3).await;
    (hub.child, hub.client)
}

/// SIGKILL mid-append, restart: all acknowledged events survive and every transaction is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_appends_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_database_url(dir.path()).await;
    let mut acked: HashSet<String> = HashSet::new();
    for round in 0..3 {
        let (mut child, client) = start(&db).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut producers = Vec::new();
        for a in 0..4 {
            let mut client = client.clone();
            let tx = tx.clone();
            producers.push(tokio::spawn(async move {
                for n in 0.. {
                    let events = (0..5)
                        .map(|i| {
                            ev(
                                &format!("k{a}-{}", (n + i) % 9),
                                "T",
                                &format!("r{round}a{a}n{n}i{i}"),
                            )
                        })
                        .collect();
                    let req = eventhub::proto::AppendRequest {
                        topic: "crash".into(),
                        events,
                        dedup_by_content: false,
                    };
                    match client.append(req).await {
                        Ok(_) => {
                            if tx
                                .send(
                                    (0..5)
                                        .map(|i| format!("r{round}a{a}n{n}i{i}"))
                                        .collect::<Vec<_>>(),
                                )
                                .is_err()
                            {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        drop(tx);
        // Kill once enough appends were acknowledged, while appends are in flight.
        let mut batches = 0;
        while batches < 100 {
            acked.extend(rx.recv().await.unwrap());
            batches += 1;
        }
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        for p in producers {
            p.await.unwrap();
        }
        while let Ok(batch) = rx.try_recv() {
            acked.extend(batch);
        }
    }
    let (_child, mut client) = start(&db).await;
    let mut stored: Vec<eventhub::proto::Event> = Vec::new();
    for p in 0..3 {
        let (events, _) = read_all(&mut client, "crash", p, "_first").await;
        let seqs: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(
            seqs,
            (1..=events.len() as u64).collect::<Vec<_>>(),
            "gapless after restarts"
        );
        stored.extend(events);
    }
    let payloads: HashSet<String> = stored
        .iter()
        .map(|e| String::from_utf8(e.payload.clone()).unwrap())
        .collect();
    assert_eq!(payloads.len(), stored.len(), "no event stored twice");
    let missing: Vec<_> = acked.iter().filter(|p| !payloads.contains(*p)).collect();
    assert!(missing.is_empty(), "acknowledged events lost: {missing:?}");
    // Each append was 5 events in one transaction: every transaction has all 5.
    let mut by_txn: BTreeMap<u64, HashSet<String>> = BTreeMap::new();
    for e in &stored {
        let p = String::from_utf8(e.payload.clone()).unwrap();
        by_txn
            .entry(e.transaction_id)
            .or_default()
            .insert(p[..p.rfind('i').unwrap()].to_owned());
    }
    for (txn, appends) in &by_txn {
        let count = stored.iter().filter(|e| e.transaction_id == *txn).count();
        assert_eq!((appends.len(), count), (1, 5), "transaction {txn} is whole");
    }
}

/// SIGTERM with followers attached: the hub ends their streams, exits 0
/// and, on SQLite, leaves only the database file (no `-wal` or `-shm`:
/// every connection was closed, the last by one that may write, before the
/// process ended); on restart everything acknowledged is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_the_database_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("hub.db").display());
    let HubProcess {
        mut child,
        mut client,
        ..
    } = spawn_process(&db, 3).await;
    let mut acked = 0;
    for n in 0..5 {
        let events = (0..200)
            .map(|i| ev(&format!("key-{i}"), "T", &format!("{n}/{i}")))
            .collect();
        acked += append(&mut client, "stop", events).await.results.len();
    }
    let mut followers = Vec::new();
    for partition in 0..3 {
        let mut follower = follow(&client, "stop", partition).await;
        let first = follower.message().await.unwrap().expect("a first page");
        assert!(!first.events.is_empty());
        followers.push(follower);
    }

    let pid = child.id().expect("running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let exit = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .expect("the hub exits after SIGTERM")
        .unwrap();
    assert!(exit.success(), "exit status {exit}");
    for mut follower in followers {
        // Whatever pages were still queued, then the end of the stream.
        loop {
            match follower.message().await {
                Ok(Some(_)) => continue,
                end => {
                    assert!(matches!(end, Ok(None)), "the stream ends cleanly: {end:?}");
                    break;
                }
            }
        }
    }
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["hub.db"]);

    let (_child, mut client) = start(&db).await;
    let mut stored = 0;
    for partition in 0..3 {
        stored += read_all(&mut client, "stop", partition, "_first")
            .await
            .0
            .len();
    }
    assert_eq!(stored, acked);
}

/// A stream whose client stopped reading does not hold up shutting down:
/// after the grace period the hub stops anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_does_not_hold_up_shutdown() {
    let hub = spawn_hub_with(|c| {
        c.default_partitions = 1;
        c.shutdown_grace = std::time::Duration::from_secs(1);
    })
    .await;
    // More than the connection's flow-control window and the hub's buffers
    // hold, so the stream's task waits for the client to read.
    let payload = "x".repeat(1000);
    for _ in 0..30 {
        let events = (0..1000)
            .map(|i| ev(&format!("k{i}"), "T", &payload))
            .collect();
        hub.append("stalled", events).await;
    }
    let mut stream = hub
        .client()
        .read_partition(eventhub::proto::ReadPartitionRequest {
            topic: "stalled".into(),
            max_events: 10_000,
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().expect("a first page");
    assert!(!first.events.is_empty());
    tokio::time::timeout(std::time::Duration::from_secs(60), hub.stop())
        .await
        .expect("the hub stops after its grace period");
}

/// A second hub process on the same SQLite file is refused at start-up,
/// with a message that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_one_sqlite_file_is_refused() {
    if on_postgres() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("hub.db").display());
    let (_first, mut client) = start(&db).await;
    append(&mut client, "one", vec![ev("k", "T", "x")]).await;
    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_eventhub"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &db])
        .kill_on_drop(true)
        .output();
    let second = tokio::time::timeout(std::time::Duration::from_secs(60), second)
        .await
        .expect("the second process exits")
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("in use by another eventhub process"),
        "stderr: {stderr}"
    );
    // The first one is unharmed.
    append(&mut client, "one", vec![ev("k", "T", "y")]).await;
    assert_eq!(
        read_all(&mut client, "one", partition_of("k", 3), "_first")
            .await
            .0
            .len(),
        2
    );
}
