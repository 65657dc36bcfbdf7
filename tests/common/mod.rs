//! Test harness: a real hub on 127.0.0.1:0 with a fresh SQLite database,
//! and a typed client to it.
#![allow(dead_code)]

use eventhub::config::Config;
use eventhub::proto::event_hub_service_client::EventHubServiceClient;
use eventhub::proto::{self, AppendEvent, AppendResponse, Event, ReadPartitionRequest};
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

pub type Client = EventHubServiceClient<Channel>;

pub struct TestHub {
    pub addr: SocketAddr,
    pub client: Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    pub dir: tempfile::TempDir,
}

pub async fn spawn_hub() -> TestHub {
    spawn_hub_with(|_| {}).await
}

pub async fn spawn_hub_with(configure: impl FnOnce(&mut Config)) -> TestHub {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(format!("sqlite://{}", dir.path().join("hub.db").display()));
    config.default_partitions = 4;
    configure(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(eventhub::server::run(listener, config, async {
        let _ = stopped.await;
    }));
    let client = connect(addr).await;
    TestHub {
        addr,
        client,
        stop: Some(stop),
        task: Some(task),
        dir,
    }
}

pub async fn connect(addr: SocketAddr) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    EventHubServiceClient::new(channel)
}

impl TestHub {
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Stops the hub and waits for it to finish.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }

    pub async fn append(&self, topic: &str, events: Vec<AppendEvent>) -> AppendResponse {
        append(&mut self.client(), topic, events).await
    }

    /// An Append that must fail; returns its status.
    pub async fn append_err(&self, topic: &str, events: Vec<AppendEvent>) -> tonic::Status {
        self.client()
            .append(proto::AppendRequest {
                topic: topic.into(),
                events,
                dedup_by_content: false,
            })
            .await
            .expect_err("the append should have been refused")
    }

    /// Reads a partition from `cursor` until caught up (no waiting).
    pub async fn read_all(
        &self,
        topic: &str,
        partition: u32,
        cursor: &str,
    ) -> (Vec<Event>, String) {
        read_all(&mut self.client(), topic, partition, cursor).await
    }
}

pub async fn append(client: &mut Client, topic: &str, events: Vec<AppendEvent>) -> AppendResponse {
    client
        .append(proto::AppendRequest {
            topic: topic.into(),
            events,
            dedup_by_content: false,
        })
        .await
        .unwrap()
        .into_inner()
}

pub async fn read_all(
    client: &mut Client,
    topic: &str,
    partition: u32,
    cursor: &str,
) -> (Vec<Event>, String) {
    let mut stream = client
        .read_partition(ReadPartitionRequest {
            topic: topic.into(),
            partition,
            cursor: cursor.into(),
            max_events: 7,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    let mut cursor = cursor.to_owned();
    while let Some(page) = stream.next().await {
        let page = page.unwrap();
        events.extend(page.events);
        cursor = page.cursor;
    }
    (events, cursor)
}

/// An event with a key, a type and a payload.
pub fn ev(key: &str, ty: &str, payload: &str) -> AppendEvent {
    AppendEvent {
        key: key.into(),
        r#type: ty.into(),
        payload: payload.as_bytes().to_vec(),
        ..Default::default()
    }
}

pub fn partition_of(key: &str, partitions: u32) -> u32 {
    eventhub::validate::partition_for(key, partitions)
}
