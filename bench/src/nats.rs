//! The peer: NATS JetStream with file storage, `nats-server -js -sd <tmp>`
//! started by the bench on a free loopback port, driven with `async-nats`.
//!
//! Messages carry the same 150-byte payloads as the hub's events; the
//! partition is the last token of the subject (`<stream>.<partition>`).

use super::events::{self, Sizes};
use super::latency::{self, LatencyRun};
use anyhow::{Context, Result, anyhow, bail};
use async_nats::jetstream::consumer::{DeliverPolicy, pull, push};
use async_nats::jetstream::{self, stream};
use async_nats::{Client, Subject};
use bytes::Bytes;
use futures::StreamExt;
use indicatif::ProgressBar;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

/// What the NATS rows say when there is no server to run.
pub const NOT_FOUND: &str = "skipped: nats-server not found; run scripts/install-bench-deps.sh";

/// The stream holding the read dataset.
const READS: &str = "reads";

/// `explicit` if given, else `nats-server` on PATH or in the sbin
/// directories Debian installs it to.
pub fn find(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// A running nats-server with JetStream on a temporary store directory,
/// killed when dropped.
struct NatsServer {
    child: Child,
    url: String,
    version: String,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    async fn start(bin: &Path) -> Result<NatsServer> {
        let dir = tempfile::Builder::new()
            .prefix("eventhub-bench-nats")
            .tempdir()?;
        let mut child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let mut lines = BufReader::new(child.stderr.take().context("nats-server stderr")?).lines();
        // The server logs its port (picked by `-p -1`) and then that it is
        // ready; wait for both.
        let mut url = None;
        let mut version = String::from("unknown");
        let mut log = Vec::new();
        let ready = tokio::time::timeout(Duration::from_secs(15), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                    url = Some(format!("nats://{}", addr.trim()));
                }
                if let Some(v) = line.split("Version:").nth(1) {
                    version = v.trim().to_owned();
                }
                if line.contains("Server is ready") {
                    return anyhow::Ok(true);
                }
                log.push(line);
            }
            Ok(false)
        })
        .await;
        let url = match (ready, url) {
            (Ok(Ok(true)), Some(url)) => url,
            _ => bail!("nats-server did not start; its log:\n{}", log.join("\n")),
        };
        // Keep reading its log so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(NatsServer {
            child,
            url,
            version,
            _dir: dir,
        })
    }
}

/// NATS JetStream ready for the workloads: the server, a publishing
/// connection and a subscribing one (as a separate producer and consumer
/// would have).
pub struct Peer {
    server: NatsServer,
    publisher: jetstream::Context,
    subscriber_client: Client,
    subscriber: jetstream::Context,
    /// Numbers the streams of successive runs.
    runs: AtomicU32,
}

impl Peer {
    pub async fn start(bin: &Path) -> Result<Peer> {
        let server = NatsServer::start(bin).await?;
        let publisher = async_nats::connect(&server.url).await?;
        let subscriber_client = async_nats::connect(&server.url).await?;
        Ok(Peer {
            publisher: jetstream::new(publisher),
            subscriber: jetstream::new(subscriber_client.clone()),
            subscriber_client,
            server,
            runs: AtomicU32::new(0),
        })
    }

    pub fn version(&self) -> &str {
        &self.server.version
    }

    pub async fn stop(mut self) {
        let _ = self.server.child.kill().await;
    }

    /// A new stream with file storage taking `<name>.>`.
    async fn create_stream(&self, name: &str) -> Result<stream::Stream<stream::Info>> {
        self.publisher
            .create_stream(stream::Config {
                name: name.to_owned(),
                subjects: vec![format!("{name}.>")],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!("create stream {name}: {e}"))
    }

    async fn stream_messages(&self, name: &str) -> Result<u64> {
        let mut s = self
            .publisher
            .get_stream(name)
            .await
            .map_err(|e| anyhow!("get stream {name}: {e}"))?;
        Ok(s.info()
            .await
            .map_err(|e| anyhow!("stream info: {e}"))?
            .state
            .messages)
    }

    /// Publishes one batch without waiting, then waits for every ack.
    async fn publish_batch(
        &self,
        messages: impl IntoIterator<Item = (Subject, Bytes)>,
    ) -> Result<u64> {
        let mut acks = Vec::new();
        for (subject, payload) in messages {
            acks.push(
                self.publisher
                    .publish(subject, payload)
                    .await
                    .map_err(|e| anyhow!("publish: {e}"))?,
            );
        }
        let n = acks.len() as u64;
        for ack in acks {
            ack.await.map_err(|e| anyhow!("publish ack: {e}"))?;
        }
        Ok(n)
    }

    /// Workload 1: one publisher, batches of messages published without
    /// waiting and then every ack awaited, batch after batch, into a fresh
    /// stream. Returns the elapsed time and the messages acknowledged.
    pub async fn batched(
        &self,
        batches: &[Vec<(String, Vec<u8>)>],
        partitions: u32,
        pb: &ProgressBar,
    ) -> Result<(Duration, u64)> {
        let name = format!("batched{}", self.runs.fetch_add(1, Ordering::Relaxed));
        self.create_stream(&name).await?;
        let subjects: Vec<Subject> = (0..partitions)
            .map(|p| Subject::from(format!("{name}.{p}")))
            .collect();
        let batches: Vec<Vec<(Subject, Bytes)>> = batches
            .iter()
            .map(|b| {
                b.iter()
                    .map(|(key, payload)| {
                        let p = eventhub::validate::partition_for(key, partitions);
                        (subjects[p as usize].clone(), Bytes::from(payload.clone()))
                    })
                    .collect()
            })
            .collect();
        let started = Instant::now();
        let mut acked = 0;
        for batch in batches {
            let n = self.publish_batch(batch).await?;
            acked += n;
            pb.inc(n);
        }
        let elapsed = started.elapsed();
        let stored = self.stream_messages(&name).await?;
        self.publisher
            .delete_stream(&name)
            .await
            .map_err(|e| anyhow!("delete stream: {e}"))?;
        if stored != acked {
            bail!("stream holds {stored} messages after {acked} acknowledged");
        }
        Ok((elapsed, acked))
    }

    /// Loads the read dataset: `n` messages on one subject.
    pub async fn load(
        &self,
        n: usize,
        batch: usize,
        payload: &[u8],
        pb: &ProgressBar,
    ) -> Result<u64> {
        self.create_stream(READS).await?;
        let subject = Subject::from(format!("{READS}.0"));
        let payload = Bytes::from(payload.to_vec());
        let mut left = n;
        while left > 0 {
            let k = left.min(batch);
            self.publish_batch((0..k).map(|_| (subject.clone(), payload.clone())))
                .await?;
            left -= k;
            pb.inc(k as u64);
        }
        self.stream_messages(READS).await
    }

    /// Workload 3: an ordered consumer reads the whole dataset from the
    /// start. Returns the elapsed time and the messages read.
    pub async fn ordered_read(&self, expected: u64, pb: &ProgressBar) -> Result<(Duration, u64)> {
        let started = Instant::now();
        let stream = self
            .subscriber
            .get_stream(READS)
            .await
            .map_err(|e| anyhow!("get stream: {e}"))?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: format!("{READS}.0"),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!("create ordered consumer: {e}"))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| anyhow!("ordered consumer: {e}"))?;
        let mut n = 0u64;
        while n < expected {
            match messages.next().await {
                Some(Ok(m)) => {
                    std::hint::black_box(&m.payload);
                    n += 1;
                    if n.is_multiple_of(10_000) {
                        pb.inc(10_000);
                    }
                }
                Some(Err(e)) => bail!("ordered consumer after {n} messages: {e}"),
                None => bail!("ordered consumer ended after {n} messages"),
            }
        }
        Ok((started.elapsed(), n))
    }

    /// Workload 4: an ordered push consumer per partition subject, and the
    /// paced producer publishing each tick's messages and awaiting their
    /// acks, into a fresh stream.
    pub async fn delivery(
        &self,
        sizes: &Sizes,
        epoch: Instant,
        payload: &[u8],
        pb: &ProgressBar,
    ) -> Result<LatencyRun> {
        let name = format!("latency{}", self.runs.fetch_add(1, Ordering::Relaxed));
        self.create_stream(&name).await?;
        let stream = self
            .subscriber
            .get_stream(&name)
            .await
            .map_err(|e| anyhow!("get stream: {e}"))?;
        let (receipts, collector) = latency::collector();
        let mut followers = JoinSet::new();
        for p in 0..sizes.partitions {
            let consumer = stream
                .create_consumer(push::OrderedConfig {
                    deliver_subject: self.subscriber_client.new_inbox(),
                    filter_subject: format!("{name}.{p}"),
                    deliver_policy: DeliverPolicy::New,
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow!("create ordered push consumer: {e}"))?;
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| anyhow!("ordered push consumer: {e}"))?;
            let receipts = receipts.clone();
            followers.spawn(async move {
                while let Some(m) = messages.next().await {
                    let m = m.map_err(|e| anyhow!("ordered push consumer: {e}"))?;
                    receipts.record(events::age(&m.payload, epoch.elapsed()));
                }
                anyhow::Ok(())
            });
        }
        drop(receipts);
        // Once the server has answered a ping, it has every subscription.
        self.subscriber_client.flush().await?;
        let subjects: Vec<Subject> = (0..sizes.partitions)
            .map(|p| Subject::from(format!("{name}.{p}")))
            .collect();
        let per_tick = sizes.latency_per_tick();
        let (keys, partitions) = (sizes.keys, sizes.partitions);
        let run = latency::paced(sizes, pb, |tick| {
            let js = self.publisher.clone();
            let subjects = subjects.clone();
            let mut payload = payload.to_vec();
            async move {
                events::stamp(&mut payload, epoch);
                let payload = Bytes::from(payload);
                let first = tick as usize * per_tick;
                let mut acks = Vec::with_capacity(per_tick);
                for i in first..first + per_tick {
                    let p = eventhub::validate::partition_for(&events::key(i % keys), partitions);
                    acks.push(
                        js.publish(subjects[p as usize].clone(), payload.clone())
                            .await
                            .map_err(|e| anyhow!("publish: {e}"))?,
                    );
                }
                for ack in acks {
                    ack.await.map_err(|e| anyhow!("publish ack: {e}"))?;
                }
                Ok(per_tick as u64)
            }
        })
        .await;
        let result = match run {
            Ok((acked, elapsed)) => collector.finish(acked, elapsed, &mut followers).await,
            Err(e) => Err(e),
        };
        followers.abort_all();
        self.publisher
            .delete_stream(&name)
            .await
            .map_err(|e| anyhow!("delete stream: {e}"))?;
        result
    }
}
