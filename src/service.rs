//! The gRPC handlers of `eventhub.v1.EventHubService`: each decodes its
//! request, goes through the access check ([`Gate::admit`], with the rule of
//! every call in the [`Guarded`] table below), calls one use case (a read
//! of `read`, or the store) and encodes the answer. Streaming handlers run
//! their read in a task that feeds a bounded channel (a full channel is
//! backpressure; a closed one means the client went away).

use crate::access::{Action, Gate, Guarded};
use crate::config::Limits;
use crate::cursor;
use crate::domain::{AppendOutcome, EventRow, StoredPos, TopicName};
use crate::error::{HubError, Result};
use crate::proto::{self, event_hub_service_server::EventHubService};
use crate::read::{self, Reader, Sink};
use crate::store::{PAGE_BYTES, Store, TopicState};
use crate::validate;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

type RpcStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The service state shared by all calls.
#[derive(Clone)]
pub struct Hub {
    store: Store,
    reader: Reader,
    limits: Limits,
    default_partitions: u32,
    gate: Gate,
}

impl Hub {
    pub fn new(
        store: Store,
        limits: Limits,
        default_partitions: u32,
        shutdown: watch::Receiver<bool>,
        gate: Gate,
    ) -> Self {
        Hub {
            reader: Reader::new(store.clone(), limits.clone(), shutdown),
            store,
            limits,
            default_partitions,
            gate,
        }
    }
}

/// The access rule of every call on one topic: the action it needs, and
/// where its request names the topic. ListTopics lists only the topics the
/// caller may read.
macro_rules! guarded {
    ($($request:ident: $action:ident on $field:ident;)*) => {$(
        impl Guarded for proto::$request {
            const ACTION: Action = Action::$action;
            fn topic(&self) -> &str {
                &self.$field
            }
        }
    )*};
}

guarded! {
    AppendRequest: Append on topic;
    ReadPartitionRequest: Read on topic;
    SurfaceRequest: Read on topic;
    ReadKeyRequest: Read on topic;
    GetTopicRequest: Read on name;
    InvalidateRequest: Admin on topic;
    CreateTopicRequest: Admin on name;
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn to_event(topic: &str, r: EventRow) -> proto::Event {
    let invalidation = r.invalidates.map(|t| proto::InvalidationMarker {
        transaction_id: t,
        reason: String::from_utf8_lossy(&r.content.payload).into_owned(),
    });
    proto::Event {
        partition: r.partition,
        sequence: r.sequence,
        cursor: cursor::encode(topic, r.partition, r.sequence),
        transaction_id: r.transaction_id,
        key: r.key.unwrap_or_default(),
        key_version: r.key_version,
        event_id: r.event_id.unwrap_or_default(),
        r#type: r.content.event_type,
        content_type: r.content.content_type,
        headers: r
            .content
            .headers
            .as_deref()
            .map(validate::decode_headers)
            .unwrap_or_default(),
        payload: r.content.payload,
        tombstone: r.content.tombstone,
        committed_at: Some(timestamp(r.committed_at_ms)),
        transaction_invalidated: r.transaction_invalidated,
        invalidation,
    }
}

fn result(topic: &str, pos: StoredPos, outcome: AppendOutcome) -> proto::AppendResult {
    proto::AppendResult {
        partition: pos.partition,
        sequence: pos.sequence,
        cursor: cursor::encode(topic, pos.partition, pos.sequence),
        key_version: pos.key_version,
        transaction_id: pos.transaction_id,
        outcome: match outcome {
            AppendOutcome::Stored => proto::AppendOutcome::Stored,
            AppendOutcome::DuplicateEventId => proto::AppendOutcome::DuplicateEventId,
            AppendOutcome::DuplicateContent => proto::AppendOutcome::DuplicateContent,
        } as i32,
        deduplicated: outcome != AppendOutcome::Stored,
    }
}

fn topic_info(t: &TopicState) -> proto::Topic {
    let partitions: Vec<proto::PartitionInfo> = (0..t.partition_count)
        .map(|p| {
            let head = t.head(p);
            proto::PartitionInfo {
                partition: p,
                head_cursor: cursor::encode(&t.name, p, head),
                event_count: head,
            }
        })
        .collect();
    proto::Topic {
        name: t.name.clone(),
        partition_count: t.partition_count,
        created_at: Some(timestamp(t.created_at_ms)),
        last_transaction_id: t.last_transaction(),
        event_count: partitions.iter().map(|p| p.event_count).sum(),
        partitions,
    }
}

/// Runs a read in a task whose pages `encode` turns into the stream's
/// messages; the read's error, if any, ends the stream with its status.
fn stream<P, T, F, R>(encode: F, run: impl FnOnce(Encoder<T, F>) -> R) -> RpcStream<T>
where
    P: Send,
    T: Send + 'static,
    F: Fn(P) -> T + Send + Sync + 'static,
    R: Future<Output = Result<()>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    let fut = run(Encoder {
        tx: tx.clone(),
        encode,
    });
    tokio::spawn(async move {
        if let Err(e) = fut.await {
            let _ = tx.send(Err(e.into())).await;
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// A read's sink that encodes its pages into a gRPC stream's channel.
struct Encoder<T, F> {
    tx: mpsc::Sender<Result<T, Status>>,
    encode: F,
}

impl<P: Send, T: Send, F: Fn(P) -> T + Send + Sync> Sink<P> for Encoder<T, F> {
    async fn send(&self, page: P) -> bool {
        self.tx.send(Ok((self.encode)(page))).await.is_ok()
    }

    async fn closed(&self) {
        self.tx.closed().await
    }
}

fn events(topic: &str, events: Vec<EventRow>) -> Vec<proto::Event> {
    events.into_iter().map(|e| to_event(topic, e)).collect()
}

#[tonic::async_trait]
impl EventHubService for Hub {
    async fn append(
        &self,
        request: Request<proto::AppendRequest>,
    ) -> Result<Response<proto::AppendResponse>, Status> {
        let req = self.gate.admit(request)?;
        let topic = TopicName::parse(&req.topic)?;
        let events = validate::append_events(req.events, &self.limits)?;
        let reply = self
            .store
            .append(topic.clone(), events, req.dedup_by_content)
            .await?;
        let results = reply
            .results
            .into_iter()
            .map(|(p, o)| result(topic.as_str(), p, o))
            .collect();
        Ok(Response::new(proto::AppendResponse {
            transaction_id: reply.transaction_id,
            results,
        }))
    }

    type ReadPartitionStream = RpcStream<proto::ReadPartitionResponse>;

    async fn read_partition(
        &self,
        request: Request<proto::ReadPartitionRequest>,
    ) -> Result<Response<Self::ReadPartitionStream>, Status> {
        let req = self.gate.admit(request)?;
        let read = self
            .reader
            .partition(read::partition::Request {
                topic: req.topic,
                partition: req.partition,
                cursor: req.cursor,
                max_events: req.max_events,
                wait: Duration::from_millis(u64::from(req.wait_ms)),
                follow: req.follow,
                heartbeat: match req.heartbeat_ms {
                    0 => None,
                    ms => Some(Duration::from_millis(u64::from(ms))),
                },
                types: req.types,
            })
            .await?;
        let (topic, partition) = (read.topic.clone(), read.partition);
        let encode = move |p: read::partition::Page| proto::ReadPartitionResponse {
            events: events(&topic.name, p.events),
            cursor: cursor::encode(&topic.name, partition, p.position),
            caught_up: p.caught_up,
            partition,
        };
        Ok(Response::new(stream(encode, |out| read.run(out))))
    }

    type SurfaceStream = RpcStream<proto::SurfaceResponse>;

    async fn surface(
        &self,
        request: Request<proto::SurfaceRequest>,
    ) -> Result<Response<Self::SurfaceStream>, Status> {
        let req = self.gate.admit(request)?;
        let read = self
            .reader
            .surface(read::surface::Request {
                topic: req.topic,
                key_prefix: req.key_prefix,
                after_key: req.after_key,
                limit: req.limit,
                as_of_transaction: req.as_of_transaction,
            })
            .await?;
        let topic = read.topic.clone();
        // Every page of a read has the same positions: encoded once.
        let cursors = std::sync::OnceLock::new();
        let encode = move |p: read::surface::Page| proto::SurfaceResponse {
            events: events(&topic.name, p.events),
            cursors: cursors
                .get_or_init(|| {
                    (0..)
                        .zip(p.positions.iter())
                        .map(|(partition, &sequence)| proto::PartitionCursor {
                            partition,
                            cursor: cursor::encode(&topic.name, partition, sequence),
                        })
                        .collect::<Vec<_>>()
                })
                .clone(),
            as_of_transaction: p.as_of_transaction,
            next_after_key: p.next_after_key.unwrap_or_default(),
        };
        Ok(Response::new(stream(encode, |out| read.run(out))))
    }

    type ReadKeyStream = RpcStream<proto::ReadKeyResponse>;

    async fn read_key(
        &self,
        request: Request<proto::ReadKeyRequest>,
    ) -> Result<Response<Self::ReadKeyStream>, Status> {
        let req = self.gate.admit(request)?;
        let read = self
            .reader
            .key(read::key::Request {
                topic: req.topic,
                key: req.key,
                from_version: req.from_version,
                max_events: req.max_events,
            })
            .await?;
        let topic = read.topic.clone();
        let encode = move |p: read::key::Page| proto::ReadKeyResponse {
            events: events(&topic.name, p.events),
            current_version: p.current_version,
        };
        Ok(Response::new(stream(encode, |out| read.run(out))))
    }

    async fn invalidate(
        &self,
        request: Request<proto::InvalidateRequest>,
    ) -> Result<Response<proto::InvalidateResponse>, Status> {
        let req = self.gate.admit(request)?;
        let name = TopicName::parse(&req.topic)?;
        let n = req.reason.chars().count();
        if n == 0 || n > 1000 {
            return Err(HubError::invalid(format!(
                "reason is {n} characters; give a reason of 1–1000 characters"
            ))
            .into());
        }
        validate::check_no_nul(&req.reason, "reason")?;
        let reply = self
            .store
            .invalidate(name.clone(), req.transaction_id, req.reason)
            .await?;
        Ok(Response::new(proto::InvalidateResponse {
            marker_transaction_id: reply.marker_transaction_id,
            markers: reply
                .markers
                .into_iter()
                .map(|p| result(name.as_str(), p, AppendOutcome::Stored))
                .collect(),
            already_invalidated: reply.already_invalidated,
        }))
    }

    async fn create_topic(
        &self,
        request: Request<proto::CreateTopicRequest>,
    ) -> Result<Response<proto::CreateTopicResponse>, Status> {
        let req = self.gate.admit(request)?;
        let name = TopicName::parse(&req.name)?;
        let partitions = validate::partition_count(req.partition_count, self.default_partitions)?;
        let (topic, created) = self.store.create_topic(name, partitions).await?;
        Ok(Response::new(proto::CreateTopicResponse {
            topic: Some(topic_info(&topic)),
            created,
        }))
    }

    async fn get_topic(
        &self,
        request: Request<proto::GetTopicRequest>,
    ) -> Result<Response<proto::GetTopicResponse>, Status> {
        let name = TopicName::parse(&self.gate.admit(request)?.name)?;
        let topic = self.store.require_topic(&name).await?;
        Ok(Response::new(proto::GetTopicResponse {
            topic: Some(topic_info(&topic)),
        }))
    }

    async fn list_topics(
        &self,
        request: Request<proto::ListTopicsRequest>,
    ) -> Result<Response<proto::ListTopicsResponse>, Status> {
        let caller = self.gate.caller(&request)?;
        let req = request.into_inner();
        validate::check_no_nul(&req.name_prefix, "name_prefix")?;
        validate::check_no_nul(&req.after_name, "after_name")?;
        let limit = match req.limit {
            0 => 100,
            n => (n as usize).min(1000),
        };
        let mut topics = self
            .store
            .list_topics(&req.name_prefix, &req.after_name, limit + 1)
            .await?;
        let more = topics.len() > limit;
        topics.truncate(limit);
        // Where the page ends is decided before the topics the caller may
        // not read are left out, so a page may hold fewer than `limit`.
        let last_listed = topics.last().map(|t| t.name.clone());
        topics.retain(|t| caller.can(Action::Read, &t.name));
        // A page also ends before it passes PAGE_BYTES encoded (a topic of
        // 1,024 partitions takes 20–40 KB): clients refuse messages
        // over 4 MiB by default.
        let mut infos = Vec::with_capacity(topics.len());
        let mut bytes = 0;
        for t in &topics {
            let info = topic_info(t);
            bytes += prost::Message::encoded_len(&info) + 4;
            if bytes > PAGE_BYTES && !infos.is_empty() {
                break;
            }
            infos.push(info);
        }
        let next_after_name = if infos.len() < topics.len() {
            infos.last().map(|t| t.name.clone()).unwrap_or_default()
        } else if more {
            last_listed.unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(proto::ListTopicsResponse {
            topics: infos,
            next_after_name,
        }))
    }
}
