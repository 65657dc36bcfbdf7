//! The hub under test, in-process: [`eventhub::server::run`] on a
//! `127.0.0.1:0` listener with a fresh database, and the gRPC client side
//! of every workload, talking real gRPC over loopback.

use super::events::{self, Sizes, TOPIC, append_event};
use super::latency::{self, LatencyRun};
use anyhow::{Context, Result, anyhow, bail};
use eventhub::config::Config;
use eventhub::proto::event_hub_service_client::EventHubServiceClient;
use eventhub::proto::{
    AppendEvent, AppendRequest, CreateTopicRequest, GetTopicRequest, ReadKeyRequest,
    ReadPartitionRequest, SurfaceRequest,
};
use indicatif::ProgressBar;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tonic::transport::Channel;

pub type Client = EventHubServiceClient<Channel>;

/// Most events per page asked of ReadPartition (the server's default cap).
pub const PAGE_EVENTS: u32 = 10_000;
/// The page size the consumers of `clients/` ask for by default.
pub const CONSUMER_PAGE_EVENTS: u32 = 100;

/// A hub serving on loopback until [`RunningHub::stop`].
pub struct RunningHub {
    addr: SocketAddr,
    /// The connection most clients share.
    channel: Channel,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<()>>,
}

/// Connects a channel (one HTTP/2 connection) to `addr`.
pub async fn connect(addr: SocketAddr) -> Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?)
}

impl RunningHub {
    /// Starts a hub on the database at `url` and creates the bench topic.
    pub async fn start(url: &str, partitions: u32) -> Result<RunningHub> {
        let mut config = Config::new(url);
        config.default_partitions = partitions;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let mut task = tokio::spawn(eventhub::server::run(listener, config, async {
            let _ = stopped.await;
        }));
        let ready = async {
            let channel = connect(addr).await?;
            Client::new(channel.clone())
                .create_topic(CreateTopicRequest {
                    name: TOPIC.into(),
                    partition_count: partitions,
                })
                .await?;
            anyhow::Ok(channel)
        };
        let channel = tokio::select! {
            ready = ready => match ready {
                Ok(channel) => channel,
                Err(e) => {
                    // The server's own error says more than the client's.
                    if let Ok(Ok(Err(cause))) = tokio::time::timeout(Duration::from_secs(5), &mut task).await {
                        return Err(cause.context("the hub did not start"));
                    }
                    return Err(e.context("the hub did not answer"));
                }
            },
            ended = &mut task => return Err(match ended {
                Ok(Err(e)) => e.context("the hub did not start"),
                Ok(Ok(())) => anyhow!("the hub stopped at start-up"),
                Err(e) => anyhow!("the hub panicked at start-up: {e}"),
            }),
        };
        Ok(RunningHub {
            addr,
            channel,
            stop,
            task,
        })
    }

    /// A client on the hub's shared connection.
    pub fn client(&self) -> Client {
        Client::new(self.channel.clone())
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A new connection to the hub.
    pub async fn connect(&self) -> Result<Channel> {
        connect(self.addr).await
    }

    /// Events stored in the bench topic, as the hub reports them.
    pub async fn event_count(&self) -> Result<u64> {
        let topic = self
            .client()
            .get_topic(GetTopicRequest { name: TOPIC.into() })
            .await?
            .into_inner()
            .topic
            .context("GetTopic without a topic")?;
        Ok(topic.event_count)
    }

    /// Stops the hub gracefully and waits for it.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        drop(self.channel);
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .context("the hub did not stop within 30 s")???;
        Ok(())
    }
}

/// Workload 1: appends `batches` one after another from one producer.
/// Returns the elapsed time and the events acknowledged.
pub async fn append_batches(
    client: &mut Client,
    batches: Vec<Vec<AppendEvent>>,
    pb: &ProgressBar,
) -> Result<(Duration, u64)> {
    let started = Instant::now();
    let mut acked = 0u64;
    for events in batches {
        let n = events.len();
        let reply = client
            .append(AppendRequest {
                topic: TOPIC.into(),
                events,
                dedup_by_content: false,
            })
            .await?
            .into_inner();
        if reply.results.len() != n {
            bail!(
                "Append of {n} events answered {} results",
                reply.results.len()
            );
        }
        acked += n as u64;
        pb.inc(n as u64);
    }
    Ok((started.elapsed(), acked))
}

/// Workload 2: `producers` concurrent tasks, each sending one event per
/// Append and waiting for it, until `duration` has passed. Works against
/// the hub and against the no-op server alike. Returns the elapsed time and
/// the Appends acknowledged.
pub async fn append_singles(
    channel: Channel,
    sizes: &Sizes,
    payload: &[u8],
    pb: &ProgressBar,
) -> Result<(Duration, u64)> {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_millis(sizes.single_ms);
    let mut tasks = JoinSet::new();
    for p in 0..sizes.producers {
        let mut client = Client::new(channel.clone());
        let done = done.clone();
        let payload = payload.to_vec();
        let (producers, keys) = (sizes.producers, sizes.keys);
        tasks.spawn(async move {
            let mut i = 0;
            while Instant::now() < deadline {
                let key = events::key((p + i * producers) % keys);
                i += 1;
                client
                    .append(AppendRequest {
                        topic: TOPIC.into(),
                        events: vec![append_event(key, payload.clone())],
                        dedup_by_content: false,
                    })
                    .await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    let ticker = tick_progress(pb.clone(), started);
    let mut result = Ok(());
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r.map_err(anyhow::Error::from).and_then(|r| r) {
            result = Err(e);
            tasks.abort_all();
        }
    }
    ticker.abort();
    result?;
    Ok((started.elapsed(), done.load(Ordering::Relaxed)))
}

/// Moves a time-based progress bar until aborted.
pub fn tick_progress(pb: ProgressBar, started: Instant) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
            pb.set_position(started.elapsed().as_millis() as u64);
        }
    })
}

/// Workload 3 (and the full read of workload 5): reads one partition from
/// `_first` to the head in pages of at most `page` events, no follow.
/// Returns the elapsed time and the events read; checks they come in
/// sequence order with no gap.
pub async fn read_partition(
    client: &mut Client,
    partition: u32,
    page: u32,
    pb: &ProgressBar,
) -> Result<(Duration, u64)> {
    let started = Instant::now();
    let mut stream = client
        .read_partition(ReadPartitionRequest {
            topic: TOPIC.into(),
            partition,
            cursor: "_first".into(),
            max_events: page,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut n = 0u64;
    while let Some(page) = stream.message().await? {
        for e in &page.events {
            if e.sequence != n + 1 {
                bail!("read sequence {} after {n}", e.sequence);
            }
            n += 1;
        }
        pb.inc(page.events.len() as u64);
    }
    Ok((started.elapsed(), n))
}

/// Workload 5: the surface of the whole topic. Returns the elapsed time and
/// the keys returned.
pub async fn surface(client: &mut Client) -> Result<(Duration, u64)> {
    let started = Instant::now();
    let mut stream = client
        .surface(SurfaceRequest {
            topic: TOPIC.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut n = 0u64;
    while let Some(page) = stream.message().await? {
        n += page.events.len() as u64;
    }
    Ok((started.elapsed(), n))
}

/// Workload 5: one key's history. Returns the elapsed time and the events
/// returned.
pub async fn read_key(client: &mut Client, key: &str) -> Result<(Duration, u64)> {
    let started = Instant::now();
    let mut stream = client
        .read_key(ReadKeyRequest {
            topic: TOPIC.into(),
            key: key.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut n = 0u64;
    while let Some(page) = stream.message().await? {
        n += page.events.len() as u64;
    }
    Ok((started.elapsed(), n))
}

/// Loads the read dataset: `sizes.read_events` events into `partition`, in
/// Appends of `sizes.append_batch`, each key getting `events_per_key`
/// events. A few producers at once, to load faster (not measured).
pub async fn load(
    hub: &RunningHub,
    sizes: &Sizes,
    keys: &[String],
    payload: &[u8],
    pb: &ProgressBar,
) -> Result<u64> {
    const LOADERS: usize = 4;
    let batches = sizes.read_events.div_ceil(sizes.append_batch);
    let mut tasks = JoinSet::new();
    for l in 0..LOADERS {
        let mut client = hub.client();
        let keys = keys.to_vec();
        let payload = payload.to_vec();
        let pb = pb.clone();
        let (total, batch) = (sizes.read_events, sizes.append_batch);
        tasks.spawn(async move {
            for b in (l..batches).step_by(LOADERS) {
                let events: Vec<AppendEvent> = (b * batch..((b + 1) * batch).min(total))
                    .map(|i| append_event(keys[i % keys.len()].clone(), payload.clone()))
                    .collect();
                let n = events.len() as u64;
                client
                    .append(AppendRequest {
                        topic: TOPIC.into(),
                        events,
                        dedup_by_content: false,
                    })
                    .await?;
                pb.inc(n);
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    hub.event_count().await
}

/// Workload 4: a follower per partition (ReadPartition with follow from
/// `_last`) on one connection, and a paced producer on another. Followers
/// check that each partition's sequences arrive in order with no gap.
pub async fn delivery(
    hub: &RunningHub,
    sizes: &Sizes,
    epoch: Instant,
    payload: &[u8],
    pb: &ProgressBar,
) -> Result<LatencyRun> {
    let (receipts, collector) = latency::collector();
    let followers_channel = hub.channel();
    let mut followers = JoinSet::new();
    for partition in 0..sizes.partitions {
        // Once the call returns, the hub has fixed the follower's start at
        // the head: every later event reaches it.
        let mut stream = Client::new(followers_channel.clone())
            .read_partition(ReadPartitionRequest {
                topic: TOPIC.into(),
                partition,
                cursor: "_last".into(),
                follow: true,
                max_events: PAGE_EVENTS,
                ..Default::default()
            })
            .await?
            .into_inner();
        let receipts = receipts.clone();
        followers.spawn(async move {
            let mut last = None::<u64>;
            while let Some(page) = stream.message().await? {
                let now = epoch.elapsed();
                for e in page.events {
                    if let Some(l) = last
                        && e.sequence != l + 1
                    {
                        bail!("partition {partition}: sequence {} after {l}", e.sequence);
                    }
                    last = Some(e.sequence);
                    receipts.record(events::age(&e.payload, now));
                }
            }
            anyhow::Ok(())
        });
    }
    drop(receipts);
    // The producer has its own connection, as a separate service would.
    let producer = hub.connect().await?;
    let per_tick = sizes.latency_per_tick();
    let (keys, payload) = (sizes.keys, payload.to_vec());
    let (acked, elapsed) = latency::paced(sizes, pb, |tick| {
        let mut client = Client::new(producer.clone());
        let payload = payload.clone();
        async move {
            let mut p = payload;
            events::stamp(&mut p, epoch);
            let first = tick as usize * per_tick;
            let events = (first..first + per_tick)
                .map(|i| append_event(events::key(i % keys), p.clone()))
                .collect();
            client
                .append(AppendRequest {
                    topic: TOPIC.into(),
                    events,
                    dedup_by_content: false,
                })
                .await?;
            Ok(per_tick as u64)
        }
    })
    .await?;
    collector.finish(acked, elapsed, &mut followers).await
}
