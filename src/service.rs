//! The gRPC handlers of `eventhub.v1.EventHubService`: validate the request,
//! call the store, shape the answer. Streaming handlers run in a task that
//! feeds a bounded channel (a full channel is backpressure; a closed one
//! means the client went away).

use crate::access::{self, Action, Grant, Tokens};
use crate::config::Limits;
use crate::cursor::{self, Start};
use crate::error::{HubError, Result};
use crate::proto::{self, event_hub_service_server::EventHubService};
use crate::store::{AppendOutcome, EventRow, PAGE_BYTES, Store, StoredPos, TopicState};
use crate::validate::{self, TopicName};
use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

type RpcStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Default page size of reads.
const DEFAULT_PAGE: usize = 100;
/// Fewest events a partition or key read takes from the database at once (the
/// next multiple of the page size asked); it sends them in pages of that
/// size. Reading the 100 events of a default page costs nearly as much as
/// reading 1,000. Each read is also bounded by [`PAGE_BYTES`].
const READ_AHEAD: usize = 1000;
/// Keys per Surface page.
const SURFACE_PAGE: usize = 1000;
/// Smallest heartbeat interval a follower may ask for.
const MIN_HEARTBEAT: Duration = Duration::from_millis(50);

/// The service state shared by all calls.
#[derive(Clone)]
pub struct Hub {
    store: Store,
    limits: Limits,
    default_partitions: u32,
    /// Flips to true at shutdown so that open streams end cleanly.
    shutdown: watch::Receiver<bool>,
    /// Bearer tokens; `None` serves every caller.
    tokens: Option<Arc<Tokens>>,
}

impl Hub {
    pub fn new(
        store: Store,
        limits: Limits,
        default_partitions: u32,
        shutdown: watch::Receiver<bool>,
        tokens: Option<Arc<Tokens>>,
    ) -> Self {
        Hub {
            store,
            limits,
            default_partitions,
            shutdown,
            tokens,
        }
    }

    /// The grants of the call's token, `None` when the hub serves every
    /// caller; UNAUTHENTICATED without a token it knows.
    fn caller<T>(&self, request: &Request<T>) -> Result<Option<&[Grant]>, Status> {
        match &self.tokens {
            None => Ok(None),
            Some(tokens) => tokens.authenticate(request.metadata()).map(Some),
        }
    }

    /// PERMISSION_DENIED unless the caller may do `action` to `topic`
    /// (checked before the topic is looked up, so that a refused caller
    /// does not learn whether it exists).
    fn allow(grants: Option<&[Grant]>, action: Action, topic: &str) -> Result<(), Status> {
        grants.map_or(Ok(()), |g| access::authorize(g, action, topic))
    }

    fn page_size(&self, asked: u32) -> usize {
        let asked = match asked as usize {
            0 => DEFAULT_PAGE,
            n => n,
        };
        // At least one event, whatever the limit is set to.
        asked.min(self.limits.max_page_events).max(1)
    }

    async fn topic(&self, name: &str) -> Result<(TopicName, Arc<TopicState>)> {
        let name = TopicName::parse(name)?;
        let t = self.store.require_topic(&name).await?;
        Ok((name, t))
    }

    /// Refuses a cursor after the partition's last stored event. This
    /// process may not have heard of the latest commits of another one, so
    /// the database decides. Waiting there would skip every event stored
    /// up to the cursor's sequence from now on: the database has lost
    /// events since it handed out the cursor (restored from an older copy,
    /// or commits lost to a power failure under `synchronous=NORMAL`).
    async fn check_not_past_head(
        &self,
        topic: &TopicState,
        partition: u32,
        sequence: u64,
        given: &str,
    ) -> Result<()> {
        let head = self.store.snapshot(topic).await?.heads[partition as usize];
        if sequence > head {
            return Err(HubError::OutOfRange(format!(
                "cursor {given:?} is after event {sequence} of partition {partition}, but the \
                 partition ends at event {head}: the hub's database has lost events since it gave \
                 out this cursor (restored from an older copy?). Reading on from it would skip the \
                 events stored there next; decide how to reconcile, then read from a cursor at or \
                 before the end, \"_first\" or \"_last\""
            )));
        }
        Ok(())
    }

    /// Turns rows into API events, marking invalidated transactions.
    async fn events(&self, topic: &TopicState, rows: Vec<EventRow>) -> Result<Vec<proto::Event>> {
        let invalid = self.store.invalidated_in(topic, &rows).await?;
        Ok(rows
            .into_iter()
            .map(|r| to_event(&topic.name, r, &invalid))
            .collect())
    }
}

/// How many events a read takes from the database for pages of `page`.
fn read_size(page: usize) -> usize {
    page * READ_AHEAD.div_ceil(page)
}

/// Takes the next page from the front of a read's `rows`: at most `page`
/// events, within [`PAGE_BYTES`] (at least one, if any).
fn next_page(
    rows: &mut VecDeque<EventRow>,
    page: usize,
    topic: &str,
    invalid: &HashSet<u64>,
) -> Vec<proto::Event> {
    let n = fitting(rows.iter().take(page));
    rows.drain(..n)
        .map(|r| to_event(topic, r, invalid))
        .collect()
}

/// Cuts `rows` to the longest prefix (at least one row) within
/// [`PAGE_BYTES`]; true when it cut.
fn fit(rows: &mut Vec<EventRow>) -> bool {
    let n = fitting(rows.iter());
    let cut = n < rows.len();
    rows.truncate(n);
    cut
}

/// How many of `rows` (at least one, if any) fit in a page of
/// [`PAGE_BYTES`].
fn fitting<'a>(rows: impl Iterator<Item = &'a EventRow>) -> usize {
    let mut total = 0;
    let mut n = 0;
    for r in rows {
        total += r.size();
        if total > PAGE_BYTES && n > 0 {
            break;
        }
        n += 1;
    }
    n
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn to_event(topic: &str, r: EventRow, invalid: &HashSet<u64>) -> proto::Event {
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
        transaction_invalidated: invalid.contains(&r.transaction_id),
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

/// Runs a streaming handler body in a task feeding a bounded channel. The
/// body's error, if any, ends the stream with its status.
fn stream<T, F>(body: impl FnOnce(mpsc::Sender<Result<T, Status>>) -> F) -> RpcStream<T>
where
    T: Send + 'static,
    F: Future<Output = Result<()>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    let fut = body(tx.clone());
    tokio::spawn(async move {
        if let Err(e) = fut.await {
            let _ = tx.send(Err(e.into())).await;
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

struct ReadArgs {
    topic: Arc<TopicState>,
    partition: u32,
    position: u64,
    page: usize,
    wait: Duration,
    follow: bool,
    heartbeat: Duration,
    types: Vec<String>,
}

impl Hub {
    async fn read_loop(
        self,
        a: ReadArgs,
        tx: mpsc::Sender<Result<proto::ReadPartitionResponse, Status>>,
    ) -> Result<()> {
        let mut heads = a.topic.heads[a.partition as usize].subscribe();
        let mut shutdown = self.shutdown.clone();
        let mut pos = a.position;
        let mut sent_any = false;
        let wait_until = Instant::now() + a.wait;
        let mut last_sent = Instant::now();
        let page =
            |events: Vec<proto::Event>, pos: u64, caught_up: bool| proto::ReadPartitionResponse {
                events,
                cursor: cursor::encode(&a.topic.name, a.partition, pos),
                caught_up,
                partition: a.partition,
            };
        loop {
            let head = *heads.borrow_and_update();
            if head > pos {
                let upto = if a.types.is_empty() {
                    head
                } else {
                    head.min(pos.saturating_add(self.limits.filtered_scan))
                };
                let read = self
                    .store
                    .read_page(
                        &a.topic,
                        a.partition,
                        pos,
                        upto,
                        read_size(a.page),
                        &a.types,
                    )
                    .await?;
                let mut rows = VecDeque::from(read.rows);
                // The read's events go out in pages of the size asked; the
                // last page's cursor is where the read ended.
                loop {
                    let events = next_page(&mut rows, a.page, &a.topic.name, &read.invalidated);
                    pos = match events.last() {
                        Some(last) if !rows.is_empty() => last.sequence,
                        _ => read.scanned,
                    };
                    let caught_up = pos >= a.topic.head(a.partition);
                    if events.is_empty() {
                        // The read skipped events of other types only (a
                        // filter is the only way a read finds none). A
                        // stretch cut at `filtered_scan` ends with a page
                        // saying where the scan got to; otherwise that
                        // goes with the next page or heartbeat (due here
                        // too: under a steady run of commits of other
                        // types the loop may never wait), and a long-poll
                        // answers once its wait is over.
                        let answer = !a.follow && caught_up && Instant::now() >= wait_until;
                        let heartbeat = a.follow && last_sent.elapsed() >= a.heartbeat;
                        if answer || heartbeat || upto < head {
                            if tx.send(Ok(page(events, pos, caught_up))).await.is_err() {
                                return Ok(());
                            }
                            last_sent = Instant::now();
                            if answer {
                                return Ok(());
                            }
                        }
                        break;
                    }
                    if tx.send(Ok(page(events, pos, caught_up))).await.is_err() {
                        return Ok(());
                    }
                    sent_any = true;
                    last_sent = Instant::now();
                    if rows.is_empty() {
                        if caught_up && !a.follow {
                            return Ok(());
                        }
                        break;
                    }
                }
                continue;
            }
            if !a.follow {
                if sent_any {
                    return Ok(());
                }
                tokio::select! {
                    changed = heads.changed() => { if changed.is_ok() { continue; } }
                    _ = tokio::time::sleep_until(wait_until) => {}
                    _ = shutdown.changed() => {}
                    _ = tx.closed() => return Ok(()),
                }
                let _ = tx.send(Ok(page(Vec::new(), pos, true))).await;
                return Ok(());
            }
            tokio::select! {
                changed = heads.changed() => { if changed.is_err() { return Ok(()); } }
                _ = tokio::time::sleep_until(last_sent + a.heartbeat) => {
                    if tx.send(Ok(page(Vec::new(), pos, true))).await.is_err() {
                        return Ok(());
                    }
                    last_sent = Instant::now();
                }
                _ = tx.closed() => return Ok(()),
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }

    async fn surface_loop(
        self,
        topic: Arc<TopicState>,
        req: proto::SurfaceRequest,
        tx: mpsc::Sender<Result<proto::SurfaceResponse, Status>>,
    ) -> Result<()> {
        let snapshot = self.store.snapshot(&topic).await?;
        let as_of = match req.as_of_transaction {
            0 => snapshot.last_transaction_id,
            t if t > snapshot.last_transaction_id => {
                return Err(HubError::invalid(format!(
                    "as_of_transaction {t} is after the last transaction of topic {:?} ({})",
                    topic.name, snapshot.last_transaction_id
                )));
            }
            t => t,
        };
        let mut cursors = Vec::with_capacity(topic.partition_count as usize);
        for p in 0..topic.partition_count {
            let head = if as_of == snapshot.last_transaction_id {
                snapshot.heads[p as usize]
            } else {
                self.store
                    .head_as_of(&topic, p, as_of, snapshot.heads[p as usize])
                    .await?
            };
            cursors.push(proto::PartitionCursor {
                partition: p,
                cursor: cursor::encode(&topic.name, p, head),
            });
        }
        let prefix = req.key_prefix;
        let (mut from, mut inclusive) = if req.after_key.as_str() >= prefix.as_str() {
            (req.after_key, false)
        } else {
            (prefix.clone(), true)
        };
        let limit = if req.limit == 0 {
            usize::MAX
        } else {
            req.limit as usize
        };
        let mut returned = 0usize;
        let mut sent = false;
        loop {
            let want = SURFACE_PAGE.min(limit - returned);
            let (mut rows, next) = self
                .store
                .surface_page(&topic, as_of, &from, inclusive, want)
                .await?;
            // Keys are sorted bytewise, so the first key past the prefix ends the listing.
            rows.retain(|r| r.key.as_deref().is_some_and(|k| k.starts_with(&prefix)));
            let next = if fit(&mut rows) {
                rows.last().and_then(|r| r.key.clone())
            } else {
                next.filter(|k| k.starts_with(&prefix))
            };
            returned += rows.len();
            let done = next.is_none() || returned >= limit;
            let mut next_after_key = String::new();
            if returned >= limit
                && let Some(k) = rows.last().and_then(|r| r.key.clone())
            {
                // Say "there is more" only if a candidate key follows.
                let (probe, probe_next) =
                    self.store.surface_page(&topic, as_of, &k, false, 1).await?;
                let more = probe
                    .iter()
                    .filter_map(|r| r.key.as_deref())
                    .chain(probe_next.as_deref());
                if more.into_iter().any(|pk| pk.starts_with(&prefix)) {
                    next_after_key = k;
                }
            }
            let events = self.events(&topic, rows).await?;
            if !events.is_empty() || !sent || done {
                let msg = proto::SurfaceResponse {
                    events,
                    cursors: cursors.clone(),
                    as_of_transaction: as_of,
                    next_after_key,
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return Ok(());
                }
                sent = true;
            }
            if done {
                return Ok(());
            }
            from = next.expect("not done");
            inclusive = false;
        }
    }

    async fn read_key_loop(
        self,
        topic: Arc<TopicState>,
        req: proto::ReadKeyRequest,
        tx: mpsc::Sender<Result<proto::ReadKeyResponse, Status>>,
    ) -> Result<()> {
        let page = self.page_size(req.max_events);
        let current = self.store.key_version(&topic, &req.key).await?;
        let mut from = req.from_version.max(1);
        loop {
            let rows = if from <= current {
                self.store
                    .read_key(&topic, &req.key, from, current, read_size(page))
                    .await?
            } else {
                Vec::new()
            };
            let invalid = self.store.invalidated_in(&topic, &rows).await?;
            let mut rows = VecDeque::from(rows);
            // The read's events go out in pages of the size asked.
            loop {
                let events = next_page(&mut rows, page, &topic.name, &invalid);
                let next = events.last().map(|last| last.key_version + 1);
                if tx
                    .send(Ok(proto::ReadKeyResponse {
                        events,
                        current_version: current,
                    }))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
                match next {
                    Some(n) if n <= current => from = n,
                    _ => return Ok(()),
                }
                if rows.is_empty() {
                    break;
                }
            }
        }
    }
}

#[tonic::async_trait]
impl EventHubService for Hub {
    async fn append(
        &self,
        request: Request<proto::AppendRequest>,
    ) -> Result<Response<proto::AppendResponse>, Status> {
        let grants = self.caller(&request)?;
        let req = request.into_inner();
        Self::allow(grants, Action::Append, &req.topic)?;
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
        let grants = self.caller(&request)?;
        let req = request.into_inner();
        Self::allow(grants, Action::Read, &req.topic)?;
        let (name, topic) = self.topic(&req.topic).await?;
        if req.partition >= topic.partition_count {
            return Err(HubError::invalid(format!(
                "partition {} is out of range; topic {:?} has partitions 0 to {}",
                req.partition,
                name.as_str(),
                topic.partition_count - 1
            ))
            .into());
        }
        validate::check_type_filter(&req.types)?;
        let position = match cursor::decode(name.as_str(), req.partition, &req.cursor)? {
            Start::After(s) if s > topic.head(req.partition) => {
                self.check_not_past_head(&topic, req.partition, s, &req.cursor)
                    .await?;
                s
            }
            Start::After(s) => s,
            Start::Last => topic.head(req.partition),
        };
        let heartbeat = match req.heartbeat_ms {
            0 => self.limits.default_heartbeat,
            ms => Duration::from_millis(u64::from(ms)).max(MIN_HEARTBEAT),
        };
        let args = ReadArgs {
            partition: req.partition,
            position,
            page: self.page_size(req.max_events),
            wait: Duration::from_millis(u64::from(req.wait_ms)).min(self.limits.max_wait),
            follow: req.follow,
            heartbeat,
            types: req.types,
            topic,
        };
        let hub = self.clone();
        Ok(Response::new(stream(|tx| hub.read_loop(args, tx))))
    }

    type SurfaceStream = RpcStream<proto::SurfaceResponse>;

    async fn surface(
        &self,
        request: Request<proto::SurfaceRequest>,
    ) -> Result<Response<Self::SurfaceStream>, Status> {
        let grants = self.caller(&request)?;
        let req = request.into_inner();
        Self::allow(grants, Action::Read, &req.topic)?;
        let (_, topic) = self.topic(&req.topic).await?;
        validate::check_no_nul(&req.key_prefix, "key_prefix")?;
        validate::check_no_nul(&req.after_key, "after_key")?;
        let hub = self.clone();
        Ok(Response::new(stream(|tx| hub.surface_loop(topic, req, tx))))
    }

    type ReadKeyStream = RpcStream<proto::ReadKeyResponse>;

    async fn read_key(
        &self,
        request: Request<proto::ReadKeyRequest>,
    ) -> Result<Response<Self::ReadKeyStream>, Status> {
        let grants = self.caller(&request)?;
        let req = request.into_inner();
        Self::allow(grants, Action::Read, &req.topic)?;
        let (_, topic) = self.topic(&req.topic).await?;
        validate::check_key(&req.key, "key")?;
        let hub = self.clone();
        Ok(Response::new(stream(|tx| {
            hub.read_key_loop(topic, req, tx)
        })))
    }

    async fn invalidate(
        &self,
        request: Request<proto::InvalidateRequest>,
    ) -> Result<Response<proto::InvalidateResponse>, Status> {
        let grants = self.caller(&request)?;
        let req = request.into_inner();
        Self::allow(grants, Action::Admin, &req.topic)?;
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
        let grants = self.caller(&request)?;
        let req = request.into_inner();
        Self::allow(grants, Action::Admin, &req.name)?;
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
        let grants = self.caller(&request)?;
        let name = request.into_inner().name;
        Self::allow(grants, Action::Read, &name)?;
        let (_, topic) = self.topic(&name).await?;
        Ok(Response::new(proto::GetTopicResponse {
            topic: Some(topic_info(&topic)),
        }))
    }

    async fn list_topics(
        &self,
        request: Request<proto::ListTopicsRequest>,
    ) -> Result<Response<proto::ListTopicsResponse>, Status> {
        let grants = self.caller(&request)?;
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
        topics.retain(|t| grants.is_none_or(|g| access::allows(g, Action::Read, &t.name)));
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
