//! Bearer tokens (`eventhub serve --tokens FILE`): who may call, and what
//! each token may do to which topics.

use crate::common::*;
use eventhub::access::Tokens;
use eventhub::proto::{self, ReadPartitionRequest};
use std::sync::Arc;
use tonic::{Code, Request};

const PRODUCER: &str = "producer-0123456789abcdef";
const READER: &str = "reader-0123456789abcdef";
const ADMIN: &str = "admin-0123456789abcdef";

async fn hub() -> TestHub {
    let tokens = Tokens::parse(&format!(
        "# token  grants\n{PRODUCER} append:orders\n{READER} read:orders*\n{ADMIN} admin:*\n"
    ))
    .unwrap();
    spawn_hub_with(|c| c.tokens = Some(Arc::new(tokens))).await
}

fn with<T>(message: T, authorization: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", authorization.parse().unwrap());
    request
}

fn bearer<T>(message: T, token: &str) -> Request<T> {
    with(message, &format!("Bearer {token}"))
}

/// GetTopic of `name` with `token`.
async fn get_topic(
    client: &mut Client,
    name: &str,
    token: &str,
) -> Result<proto::Topic, tonic::Status> {
    let request = bearer(proto::GetTopicRequest { name: name.into() }, token);
    Ok(client.get_topic(request).await?.into_inner().topic.unwrap())
}

fn append_req(topic: &str) -> proto::AppendRequest {
    proto::AppendRequest {
        topic: topic.into(),
        events: vec![ev("k", "T", "x")],
        dedup_by_content: false,
    }
}

fn read_req(topic: &str) -> ReadPartitionRequest {
    ReadPartitionRequest {
        topic: topic.into(),
        partition: partition_of("k", 4),
        ..Default::default()
    }
}

/// No token, another scheme, or a token the hub does not know:
/// UNAUTHENTICATED, saying what to send; nothing is stored.
#[tokio::test]
async fn calls_without_a_known_token_are_unauthenticated() {
    let hub = hub().await;
    let mut client = hub.client();
    let status = client.append(append_req("orders")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("authorization: Bearer <token>"),
        "{status:?}"
    );
    for (header, says) in [
        (format!("Basic {PRODUCER}"), "must be \"Bearer <token>\""),
        (
            "Bearer not-a-token-of-this-hub".to_string(),
            "not one this hub knows",
        ),
    ] {
        let status = client
            .append(with(append_req("orders"), &header))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().contains(says), "{status:?}");
    }
    let status = client.read_partition(read_req("orders")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = get_topic(&mut client, "orders", ADMIN).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::NotFound,
        "nothing was stored: {status:?}"
    );
    // Health needs no token.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", hub.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");
}

/// Each token may do what its grants say, to the topics they match, and
/// nothing else: PERMISSION_DENIED names the grant it would need, a refused
/// append stores nothing (not even the topic), and a topic the token may
/// not read is refused before its existence is told.
#[tokio::test]
async fn grants_decide_what_each_token_may_do() {
    let hub = hub().await;
    let mut client = hub.client();

    client
        .append(bearer(append_req("orders"), PRODUCER))
        .await
        .unwrap();
    let denied = client
        .append(bearer(append_req("billing"), PRODUCER))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("append:billing"), "{denied:?}");
    let status = get_topic(&mut client, "billing", ADMIN).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::NotFound,
        "the refused append created nothing"
    );
    let status = client
        .read_partition(bearer(read_req("orders"), PRODUCER))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "append does not grant read"
    );

    // read:orders* covers orders and orders.eu, for every read call.
    client
        .append(bearer(append_req("orders.eu"), ADMIN))
        .await
        .unwrap();
    client
        .append(bearer(append_req("secret"), ADMIN))
        .await
        .unwrap();
    for topic in ["orders", "orders.eu"] {
        let pages = every_message(
            client
                .read_partition(bearer(read_req(topic), READER))
                .await
                .unwrap()
                .into_inner(),
        )
        .await;
        assert_eq!(pages.iter().map(|p| p.events.len()).sum::<usize>(), 1);
        let surface = client
            .surface(bearer(
                proto::SurfaceRequest {
                    topic: topic.into(),
                    ..Default::default()
                },
                READER,
            ))
            .await
            .unwrap();
        assert_eq!(every_message(surface.into_inner()).await[0].events.len(), 1);
        client
            .read_key(bearer(
                proto::ReadKeyRequest {
                    topic: topic.into(),
                    key: "k".into(),
                    ..Default::default()
                },
                READER,
            ))
            .await
            .unwrap();
    }
    for (status, grant) in [
        (
            get_topic(&mut client, "secret", READER).await.unwrap_err(),
            "read:secret",
        ),
        (
            get_topic(&mut client, "nowhere", READER).await.unwrap_err(),
            "read:nowhere",
        ),
        (
            client
                .append(bearer(append_req("orders"), READER))
                .await
                .unwrap_err(),
            "append:orders",
        ),
        (
            client
                .create_topic(bearer(
                    proto::CreateTopicRequest {
                        name: "orders.us".into(),
                        partition_count: 2,
                    },
                    READER,
                ))
                .await
                .unwrap_err(),
            "admin:orders.us",
        ),
        (
            client
                .invalidate(bearer(
                    proto::InvalidateRequest {
                        topic: "orders".into(),
                        transaction_id: 1,
                        reason: "test".into(),
                    },
                    PRODUCER,
                ))
                .await
                .unwrap_err(),
            "admin:orders",
        ),
    ] {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains(grant), "{status:?}");
    }

    // An oversized name is measured, not echoed.
    let status = client
        .append(bearer(append_req(&"x".repeat(20_000)), READER))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().len() < 600, "{}", status.message().len());

    // ListTopics lists only what the token may read, page by page.
    let mut names = Vec::new();
    let mut after = String::new();
    loop {
        let page = client
            .list_topics(bearer(
                proto::ListTopicsRequest {
                    after_name: after.clone(),
                    limit: 1,
                    ..Default::default()
                },
                READER,
            ))
            .await
            .unwrap()
            .into_inner();
        names.extend(page.topics.into_iter().map(|t| t.name));
        if page.next_after_name.is_empty() {
            break;
        }
        after = page.next_after_name;
    }
    assert_eq!(names, vec!["orders", "orders.eu"]);

    // admin:* may create and invalidate.
    client
        .create_topic(bearer(
            proto::CreateTopicRequest {
                name: "orders.us".into(),
                partition_count: 2,
            },
            ADMIN,
        ))
        .await
        .unwrap();
    client
        .invalidate(bearer(
            proto::InvalidateRequest {
                topic: "orders".into(),
                transaction_id: 1,
                reason: "test".into(),
            },
            ADMIN,
        ))
        .await
        .unwrap();
}

/// A tokens file with a mistake stops `eventhub serve` at start-up with
/// the line and what is wrong.
#[tokio::test]
async fn a_bad_tokens_file_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, format!("{ADMIN} admin:*\n{READER} write:orders\n")).unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_eventhub"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tokens"])
        .arg(&file)
        .arg("--database")
        .arg(format!("sqlite://{}", dir.path().join("hub.db").display()))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), output)
        .await
        .expect("the hub exits")
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 2: \"write\" is not an action"),
        "stderr: {stderr}"
    );
}
