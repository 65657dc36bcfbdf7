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
