//! PostgreSQL is stopped and restarted under a running hub: calls fail with
//! UNAVAILABLE meanwhile, and the hub serves again afterwards without a
//! restart. Needs the throwaway cluster of `scripts/with-postgres.sh`
//! (`EVENTHUB_TEST_POSTGRES_CTL`). It takes the server away, so it waits
//! until no other test uses it, and keeps them off it meanwhile.

use crate::common::*;
use eventhub::proto::{self, ReadPartitionRequest};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

fn ctl(action: &str) {
    let ctl = std::env::var("EVENTHUB_TEST_POSTGRES_CTL").unwrap();
    let status = std::process::Command::new(&ctl)
        .arg(action)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{ctl} {action} failed");
}

/// Stop PostgreSQL: UNAVAILABLE with a clear message; start it: the same hub appends and wakes followers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_under_a_running_hub() {
    let Some(server) = postgres_server() else {
        return;
    };
    if std::env::var_os("EVENTHUB_TEST_POSTGRES_CTL").is_none() {
        assert!(
            std::env::var_os("EVENTHUB_TEST_REQUIRE_POSTGRES").is_none(),
            "EVENTHUB_TEST_POSTGRES_CTL is not set"
        );
        eprintln!("skipped: the server is not the throwaway cluster of scripts/with-postgres.sh");
        return;
    }
    let _alone = postgres_server_alone().await;
    let url = create_postgres_database(&server).await;
    let hub = spawn_process(&url, 1).await;
    let mut client = hub.client.clone();
    append(&mut client, "r", vec![ev("k", "T", "before")]).await;
    let mut follower = follow(&client, "r", 0).await;
    // The follower has read "before" (from the database) and now waits on
    // the hub's heads, before the database goes away.
    let first = follower.next().await.unwrap().unwrap();
    let mut seen: Vec<_> = first
        .events
        .into_iter()
        .map(|e| (e.sequence, e.payload))
        .collect();
    assert_eq!(seen, vec![(1, b"before".to_vec())]);

    ctl("stop");
    let status = client
        .append(proto::AppendRequest {
            topic: "r".into(),
            events: vec![ev("k", "T", "during")],
            dedup_by_content: false,
        })
        .await
        .expect_err("an append while the database is down must fail");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("database is unavailable"),
        "a message a person can act on: {:?}",
        status.message()
    );
    let status = client
        .read_partition(ReadPartitionRequest {
            topic: "r".into(),
            partition: 0,
            cursor: "_first".into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner());
    let read_failed = match status {
        Err(s) => s,
        Ok(mut s) => s
            .next()
            .await
            .unwrap()
            .expect_err("a read while the database is down must fail"),
    };
    assert_eq!(
        read_failed.code(),
        tonic::Code::Unavailable,
        "{read_failed:?}"
    );

    ctl("start");
    // The hub reconnects by itself; appends succeed again within seconds.
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        match client
            .append(proto::AppendRequest {
                topic: "r".into(),
                events: vec![ev("k", "T", "after")],
                dedup_by_content: false,
            })
            .await
        {
            Ok(r) => break r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(s) => panic!("the hub did not recover: {s:?}"),
        }
    };
    // The follower opened before the outage gets "after" next; nothing of
    // the refused append.
    while seen.len() < 2 {
        let page = tokio::time::timeout(Duration::from_secs(30), follower.next())
            .await
            .expect("the follower was not woken after the restart")
            .unwrap()
            .unwrap();
        seen.extend(page.events.into_iter().map(|e| (e.sequence, e.payload)));
    }
    assert_eq!(
        seen,
        vec![
            (1, b"before".to_vec()),
            (after.results[0].sequence, b"after".to_vec())
        ]
    );
    assert_eq!(
        after.results[0].sequence, 2,
        "the refused append stored nothing"
    );

    // Restarted while the hub is idle: the server ended the writer's kept
    // session, and the next append runs on a new one instead of failing.
    ctl("stop");
    ctl("start");
    let again = append(&mut client, "r", vec![ev("k", "T", "idle restart")]).await;
    assert_eq!(again.results[0].sequence, 3);
    let page = tokio::time::timeout(Duration::from_secs(30), follower.next())
        .await
        .expect("the follower was not woken after the second restart")
        .unwrap()
        .unwrap();
    assert_eq!(page.events[0].payload, b"idle restart");
}
