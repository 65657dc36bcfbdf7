//! The hub process is killed with SIGKILL during appends and restarted on
//! the same database: every acknowledged event is there, no transaction is
//! half there.

use crate::common::*;
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
    let (db, _postgres_in_use) = fresh_database_url(dir.path()).await;
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
    let files = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        hub.stop_and_list_files(),
    )
    .await
    .expect("the hub stops after its grace period");
    if !on_postgres() {
        // The stalled connection was closed, and with it went its hold on
        // the store, which then closed every database connection.
        assert_eq!(files, ["hub.db"]);
    }
}

/// A connection that never sends a request (a TCP health probe, a client
/// that connected and went quiet) does not hold up shutting down: it is
/// closed at once instead of after the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_requests_does_not_hold_up_shutdown() {
    let hub = spawn_hub_with(|c| c.shutdown_grace = std::time::Duration::from_secs(3600)).await;
    hub.append("probed", vec![ev("k", "T", "x")]).await;
    let mut probe = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    // The hub has taken the connection (a connection still in the
    // listener's backlog is reset when the listener closes) once the first
    // byte of its HTTP/2 preface arrives.
    let mut first = [0u8; 1];
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut probe, &mut first),
    )
    .await
    .expect("the hub sends its preface")
    .unwrap();
    assert_eq!(n, 1);
    let files = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        hub.stop_and_list_files(),
    )
    .await
    .expect("the hub stops long before its grace period of an hour");
    if !on_postgres() {
        assert_eq!(files, ["hub.db"]);
    }
    // The hub closed the probe's connection: after the rest of the
    // server's HTTP/2 preface, it reads the end of the stream.
    let mut received = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut probe, &mut received),
    )
    .await
    .expect("the connection is closed");
    assert!(read.is_ok(), "{read:?}");
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

/// The disk fills up under a running hub on SQLite (its file size limit,
/// `RLIMIT_FSIZE`, is reached): appends fail with UNAVAILABLE and a
/// message, those said not to be stored are not, every acknowledged one
/// is, whole, also after a restart; and once there is room again the hub
/// appends without being restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_nothing_acknowledged() {
    if on_postgres() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("hub.db").display());
    let mut command = serve_command(&db, 4);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            // Writing past the limit fails with EFBIG instead of killing the process.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 3 << 20,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut hub = spawn_command(command).await;
    let payload = |n: usize, i: usize| format!("a{n}e{i}:{}", "x".repeat(2_000));
    let request = |n: usize| eventhub::proto::AppendRequest {
        topic: "full".into(),
        events: (0..100)
            .map(|i| eventhub::proto::AppendEvent {
                key: format!("k{}", (n * 7 + i) % 150),
                r#type: "T".into(),
                event_id: format!("a{n}e{i}"),
                payload: payload(n, i).into_bytes(),
                ..Default::default()
            })
            .collect(),
        dedup_by_content: false,
    };
    let (mut acked, mut refused, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..80 {
        match hub.client.append(request(n)).await {
            Ok(_) => acked.push(n),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                if status.message().contains("may or may not be stored") {
                    unknown.push(n);
                } else {
                    assert!(status.message().contains("not stored"), "{status:?}");
                    refused.push(n);
                }
                if refused.len() + unknown.len() >= 8 {
                    break;
                }
            }
        }
    }
    assert!(
        !refused.is_empty() || !unknown.is_empty(),
        "no append failed under a 3 MiB file size limit"
    );
    // Room again: the same process appends.
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    let pid = hub.child.id().unwrap() as libc::pid_t;
    // SAFETY: a plain system call on our child's limits.
    assert_eq!(
        unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &unlimited, std::ptr::null_mut()) },
        0
    );
    for n in 100..105 {
        hub.client.append(request(n)).await.unwrap();
        acked.push(n);
    }

    let check = |stored: &[eventhub::proto::Event]| {
        let mut by_append: BTreeMap<usize, Vec<&eventhub::proto::Event>> = BTreeMap::new();
        for e in stored {
            let n = e.event_id[1..e.event_id.find('e').unwrap()]
                .parse()
                .unwrap();
            by_append.entry(n).or_default().push(e);
        }
        for n in &acked {
            let events = by_append.get(n).map_or(&[][..], Vec::as_slice);
            assert_eq!(events.len(), 100, "acknowledged append {n} is stored whole");
        }
        for n in &refused {
            assert!(
                !by_append.contains_key(n),
                "append {n} was said not to be stored"
            );
        }
        for (n, events) in &by_append {
            assert!(
                acked.contains(n) || unknown.contains(n),
                "append {n} came from nowhere"
            );
            let txns: HashSet<u64> = events.iter().map(|e| e.transaction_id).collect();
            assert_eq!(
                (txns.len(), events.len()),
                (1, 100),
                "append {n} is one whole transaction"
            );
            for e in events {
                let i: usize = e.event_id[e.event_id.find('e').unwrap() + 1..]
                    .parse()
                    .unwrap();
                assert_eq!(e.payload, payload(*n, i).into_bytes());
            }
        }
    };
    let read = |mut client: Client| async move {
        let mut stored = Vec::new();
        for p in 0..4 {
            let (events, _) = read_all(&mut client, "full", p, "_first").await;
            let seqs: Vec<u64> = events.iter().map(|e| e.sequence).collect();
            assert_eq!(
                seqs,
                (1..=events.len() as u64).collect::<Vec<_>>(),
                "gapless"
            );
            stored.extend(events);
        }
        stored
    };
    check(&read(hub.client.clone()).await);
    hub.child.start_kill().unwrap();
    hub.child.wait().await.unwrap();
    let hub = spawn_process(&db, 4).await;
    check(&read(hub.client.clone()).await);
}

/// A client that vanishes without closing its connection (its packets
/// stop, nothing is reset) does not hold its streams open for ever: the hub
/// pings the silent connection and closes it when no answer comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_client_is_let_go() {
    use tokio::net::{TcpListener, TcpStream};
    let hub = spawn_hub_with(|c| {
        c.keepalive_interval = std::time::Duration::from_millis(500);
        c.keepalive_timeout = std::time::Duration::from_millis(500);
    })
    .await;
    hub.append("gone", vec![ev("k", "T", "x")]).await;

    // A proxy between a client and the hub that, once `cut` is set, stops
    // passing bytes either way but keeps both sockets open. It says when
    // the hub closes its side.
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let (cut_tx, cut) = tokio::sync::watch::channel(false);
    let (closed_tx, closed) = tokio::sync::oneshot::channel::<()>();
    let hub_addr = hub.addr;
    let relay = tokio::spawn(async move {
        let (client_side, _) = proxy.accept().await.unwrap();
        let hub_side = TcpStream::connect(hub_addr).await.unwrap();
        let (from_client, to_client) = client_side.into_split();
        let (from_hub, to_hub) = hub_side.into_split();
        let up = tokio::spawn(pass(from_client, to_hub, cut.clone()));
        // Both halves come back, so the client's side stays open: it is
        // the hub that let go.
        let _down = pass(from_hub, to_client, cut).await;
        let _ = closed_tx.send(());
        std::future::pending::<()>().await;
        drop(up);
    });

    let mut client = connect(proxy_addr).await;
    let mut stream = client
        .read_partition(eventhub::proto::ReadPartitionRequest {
            topic: "gone".into(),
            partition: partition_of("k", 4),
            cursor: "_first".into(),
            follow: true,
            heartbeat_ms: 50,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.events.len(), 1);
    cut_tx.send(true).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(30), closed)
        .await
        .expect("the hub closed the silent connection")
        .unwrap();
    relay.abort();
    hub.stop().await;
}

/// Copies `from` to `to` until `from` ends, dropping what arrives once
/// `cut` is set; returns both halves, so that nothing is closed.
async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: tokio::sync::watch::Receiver<bool>,
) -> (
    tokio::net::tcp::OwnedReadHalf,
    tokio::net::tcp::OwnedWriteHalf,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0; 16 << 10];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) if !*cut.borrow() => {
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
        }
    }
    (from, to)
}
