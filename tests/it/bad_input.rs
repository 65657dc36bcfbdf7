//! Bad input gets the right gRPC code and a clear message, and changes nothing.

use crate::common::*;
use eventhub::proto::{self, AppendRequest, ReadPartitionRequest};
use futures::future::BoxFuture;
use tokio_stream::StreamExt;
use tonic::Code;

type Call = Box<dyn Fn(Client) -> BoxFuture<'static, Result<(), tonic::Status>>>;

fn append(topic: &str, events: Vec<proto::AppendEvent>) -> Call {
    let topic = topic.to_owned();
    Box::new(move |mut c| {
        let req = AppendRequest {
            topic: topic.clone(),
            events: events.clone(),
            dedup_by_content: false,
        };
        Box::pin(async move { c.append(req).await.map(|_| ()) })
    })
}

fn read(topic: &str, partition: u32, cursor: &str) -> Call {
    let req = ReadPartitionRequest {
        topic: topic.into(),
        partition,
        cursor: cursor.into(),
        ..Default::default()
    };
    Box::new(move |mut c| {
        let req = req.clone();
        Box::pin(async move {
            let mut s = c.read_partition(req).await?.into_inner();
            while let Some(page) = s.next().await {
                page?;
            }
            Ok(())
        })
    })
}

fn call<F, Fut>(f: F) -> Call
where
    F: Fn(Client) -> Fut + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    Box::new(move |c| Box::pin(f(c)))
}

/// Reads a server stream to its end; its first error, if any.
async fn drain<T>(mut stream: tonic::Streaming<T>) -> Result<(), tonic::Status> {
    while stream.next().await.transpose()?.is_some() {}
    Ok(())
}

fn surface_call(req: proto::SurfaceRequest) -> Call {
    call(move |mut c| {
        let req = req.clone();
        async move { drain(c.surface(req).await?.into_inner()).await }
    })
}

/// Everything observable about the stored data.
async fn state(hub: &TestHub) -> Vec<(String, u64, u64)> {
    let topics = hub
        .client()
        .list_topics(proto::ListTopicsRequest::default())
        .await
        .unwrap()
        .into_inner();
    topics
        .topics
        .into_iter()
        .map(|t| (t.name, t.event_count, t.last_transaction_id))
        .collect()
}

/// A table of bad requests: each gets its code and a message naming the problem, none INTERNAL, none changes data.
#[tokio::test]
async fn bad_input_table() {
    let hub = spawn_hub_with(|c| {
        c.default_partitions = 4;
        c.limits.max_event_bytes = 1000;
        c.limits.max_events_per_append = 10;
        c.limits.max_request_bytes = 64 * 1024;
    })
    .await;
    hub.append("orders", vec![ev("k", "T", "x")]).await;
    hub.append("billing", vec![ev("k", "T", "x")]).await;
    let p = partition_of("k", 4);
    let (_, orders_cursor) = hub.read_all("orders", p, "_first").await;
    let other = (p + 1) % 4;
    let (_, other_partition_cursor) = hub.read_all("orders", other, "_first").await;
    let (_, billing_cursor) = hub.read_all("billing", p, "_first").await;
    let mut dup = vec![ev("a", "T", ""), ev("b", "T", "")];
    dup[0].event_id = "same".into();
    dup[1].event_id = "same".into();
    let long_topic = "t".repeat(201);
    let mut nul_id = ev("k", "T", "");
    nul_id.event_id = "id\0".into();
    let cases: Vec<(&str, Call, Code, &str)> = vec![
        (
            "empty topic name",
            append("", vec![ev("k", "T", "")]),
            Code::InvalidArgument,
            "topic name is empty",
        ),
        (
            "topic name with a space",
            append("bad name", vec![ev("k", "T", "")]),
            Code::InvalidArgument,
            "contains ' '",
        ),
        (
            "topic name starting with a dot",
            append(".hidden", vec![ev("k", "T", "")]),
            Code::InvalidArgument,
            "starts with '.'",
        ),
        (
            "topic name too long",
            append(&long_topic, vec![ev("k", "T", "")]),
            Code::InvalidArgument,
            "limit is 200",
        ),
        (
            "no events",
            append("orders", vec![]),
            Code::InvalidArgument,
            "at least one event",
        ),
        (
            "empty key",
            append("orders", vec![ev("", "T", "")]),
            Code::InvalidArgument,
            "events[0].key is empty",
        ),
        (
            "reserved key",
            append("orders", vec![ev("$k", "T", "")]),
            Code::InvalidArgument,
            "reserved",
        ),
        (
            "empty type",
            append("orders", vec![ev("k", "", "")]),
            Code::InvalidArgument,
            "type is empty",
        ),
        (
            "reserved type",
            append("orders", vec![ev("k", "$invalidation", "")]),
            Code::InvalidArgument,
            "reserved",
        ),
        (
            "type with a space",
            append("orders", vec![ev("k", "Order Placed", "")]),
            Code::InvalidArgument,
            "contains ' '",
        ),
        (
            "oversized event",
            append("orders", vec![ev("k", "T", &"x".repeat(2000))]),
            Code::InvalidArgument,
            "limit is 1000 bytes",
        ),
        (
            "too many events",
            append(
                "orders",
                (0..11).map(|i| ev(&i.to_string(), "T", "")).collect(),
            ),
            Code::ResourceExhausted,
            "limit is 10",
        ),
        (
            "request over the size limit",
            append(
                "orders",
                (0..10)
                    .map(|i| ev(&i.to_string(), "T", &"x".repeat(900)))
                    .chain((0..70).map(|_| ev("k", "T", &"y".repeat(900))))
                    .collect(),
            ),
            Code::OutOfRange,
            "too large",
        ),
        (
            "duplicate event id",
            append("orders", dup),
            Code::InvalidArgument,
            "appears twice",
        ),
        (
            "unknown topic",
            read("nope", 0, "_first"),
            Code::NotFound,
            "does not exist",
        ),
        (
            "partition out of range",
            read("orders", 4, "_first"),
            Code::InvalidArgument,
            "partitions 0 to 3",
        ),
        (
            "malformed cursor",
            read("orders", p, "garbage"),
            Code::InvalidArgument,
            "malformed",
        ),
        (
            "cursor of another partition",
            read("orders", p, &other_partition_cursor),
            Code::InvalidArgument,
            "belongs to partition",
        ),
        (
            "cursor of another topic",
            read("orders", p, &billing_cursor),
            Code::InvalidArgument,
            "does not belong to topic",
        ),
        (
            "altered cursor",
            read("orders", p, &orders_cursor.replace(".1.", ".9.")),
            Code::InvalidArgument,
            "does not belong",
        ),
        (
            "cursor spelled otherwise than the hub spells it",
            read("orders", p, &format!("+{orders_cursor}")),
            Code::InvalidArgument,
            "malformed",
        ),
        (
            "cursor past the partition's last event",
            read("orders", p, &eventhub::cursor::encode("orders", p, 500)),
            Code::OutOfRange,
            "after event 500 of partition",
        ),
        // Oversized input is measured, not echoed back.
        (
            "oversized cursor",
            read("orders", p, &"9".repeat(50_000)),
            Code::InvalidArgument,
            "50000 bytes long",
        ),
        (
            "oversized reserved type",
            append(
                "orders",
                vec![ev("k", &format!("${}", "a".repeat(20_000)), "")],
            ),
            Code::InvalidArgument,
            "20001 bytes long",
        ),
        (
            "oversized type in a filter",
            call(|mut c| async move {
                let req = ReadPartitionRequest {
                    topic: "orders".into(),
                    types: vec!["T".repeat(20_000)],
                    ..Default::default()
                };
                drain(c.read_partition(req).await?.into_inner()).await
            }),
            Code::InvalidArgument,
            "a type of 20000 bytes",
        ),
        // PostgreSQL's text cannot hold NUL; both backends refuse it alike.
        (
            "NUL in a key",
            append("orders", vec![ev("a\0b", "T", "")]),
            Code::InvalidArgument,
            "events[0].key contains the NUL character",
        ),
        (
            "NUL in an event id",
            append("orders", vec![nul_id]),
            Code::InvalidArgument,
            "events[0].event_id contains the NUL character",
        ),
        (
            "NUL in a type filter",
            call(|mut c| async move {
                let req = ReadPartitionRequest {
                    topic: "orders".into(),
                    types: vec!["T\0".into()],
                    ..Default::default()
                };
                drain(c.read_partition(req).await?.into_inner()).await
            }),
            Code::InvalidArgument,
            "types contains the NUL character",
        ),
        (
            "NUL in ReadKey's key",
            call(|mut c| async move {
                let req = proto::ReadKeyRequest {
                    topic: "orders".into(),
                    key: "k\0".into(),
                    ..Default::default()
                };
                drain(c.read_key(req).await?.into_inner()).await
            }),
            Code::InvalidArgument,
            "key contains the NUL character",
        ),
        (
            "NUL in a key prefix",
            surface_call(proto::SurfaceRequest {
                topic: "orders".into(),
                key_prefix: "k\0".into(),
                ..Default::default()
            }),
            Code::InvalidArgument,
            "key_prefix contains the NUL character",
        ),
        (
            "NUL in after_key",
            surface_call(proto::SurfaceRequest {
                topic: "orders".into(),
                after_key: "\0".into(),
                ..Default::default()
            }),
            Code::InvalidArgument,
            "after_key contains the NUL character",
        ),
        (
            "NUL in a topic name prefix",
            call(|mut c| async move {
                c.list_topics(proto::ListTopicsRequest {
                    name_prefix: "o\0".into(),
                    ..Default::default()
                })
                .await
                .map(|_| ())
            }),
            Code::InvalidArgument,
            "name_prefix contains the NUL character",
        ),
        (
            "NUL in a reason",
            call(|mut c| async move {
                c.invalidate(proto::InvalidateRequest {
                    topic: "orders".into(),
                    transaction_id: 1,
                    reason: "bad\0".into(),
                })
                .await
                .map(|_| ())
            }),
            Code::InvalidArgument,
            "reason contains the NUL character",
        ),
    ];
    let before = state(&hub).await;
    for (name, call, code, text) in cases {
        let err = call(hub.client()).await.expect_err(name);
        assert_eq!(err.code(), code, "{name}: {}", err.message());
        assert!(
            err.message().len() < 600,
            "{name}: a message of {} bytes",
            err.message().len()
        );
        assert!(
            err.message().contains(text),
            "{name}: message {:?} should mention {text:?}",
            err.message()
        );
        assert_eq!(state(&hub).await, before, "{name} changed stored data");
    }
    // The other RPCs validate too.
    let mut c = hub.client();
    let err = c
        .create_topic(proto::CreateTopicRequest {
            name: "x".into(),
            partition_count: 5000,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("between 1 and 1024"));
    let err = c
        .get_topic(proto::GetTopicRequest {
            name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .invalidate(proto::InvalidateRequest {
            topic: "orders".into(),
            transaction_id: 1,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .read_key(proto::ReadKeyRequest {
            topic: "nope".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .read_key(proto::ReadKeyRequest {
            topic: "orders".into(),
            key: "".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut s = c
        .surface(proto::SurfaceRequest {
            topic: "orders".into(),
            as_of_transaction: 99,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let err = s.next().await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("after the last transaction"));
    assert_eq!(state(&hub).await, before);
}
