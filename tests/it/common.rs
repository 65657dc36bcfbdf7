//! Test harness: a real hub on 127.0.0.1:0 with a fresh database, and a
//! typed client to it.
//!
//! The backend is SQLite unless `EVENTHUB_TEST_BACKEND=postgres`; then every
//! hub gets a fresh database on the server named by
//! `EVENTHUB_TEST_POSTGRES_URL` (see `scripts/with-postgres.sh`). The same
//! tests run on both.
#![allow(dead_code)]

use eventhub::config::Config;
use eventhub::proto::event_hub_service_client::EventHubServiceClient;
use eventhub::proto::{self, AppendEvent, AppendResponse, Event, ReadPartitionRequest};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
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
    /// The hub's database, for tests that reach into it.
    pub database_url: String,
    _postgres_in_use: Option<PostgresInUse>,
}

pub async fn spawn_hub() -> TestHub {
    spawn_hub_with(|_| {}).await
}

/// Whether the suite runs on PostgreSQL (`EVENTHUB_TEST_BACKEND=postgres`).
pub fn on_postgres() -> bool {
    match std::env::var("EVENTHUB_TEST_BACKEND").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("EVENTHUB_TEST_BACKEND={other:?}; use sqlite or postgres"),
    }
}

/// The PostgreSQL server to test against, if any. Tests that need one and
/// find none are skipped, unless `EVENTHUB_TEST_REQUIRE_POSTGRES` is set
/// (as `scripts/test.sh` does): then they fail.
pub fn postgres_server() -> Option<String> {
    match std::env::var("EVENTHUB_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("EVENTHUB_TEST_REQUIRE_POSTGRES").is_some() => panic!(
            "EVENTHUB_TEST_POSTGRES_URL is not set; run the tests under scripts/with-postgres.sh"
        ),
        _ => {
            eprintln!(
                "skipped: no PostgreSQL server (set EVENTHUB_TEST_POSTGRES_URL or run under scripts/with-postgres.sh)"
            );
            None
        }
    }
}

/// The PostgreSQL test server is shared by every test that uses it and taken
/// away (stopped, then started) by `postgres_restart`, which runs in the same
/// binary: a test holds the read side while it uses the server, the restart
/// the write side.
static POSTGRES_IN_USE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// While this lives, the PostgreSQL test server stays up.
pub type PostgresInUse = tokio::sync::RwLockReadGuard<'static, ()>;

/// A fresh database on the PostgreSQL test server, which stays up while this lives.
pub struct PostgresDatabase {
    pub url: String,
    _in_use: PostgresInUse,
}

/// A new, empty database on the test server, kept up while the result lives.
pub async fn fresh_postgres_database(server: &str) -> PostgresDatabase {
    let in_use = POSTGRES_IN_USE.read().await;
    PostgresDatabase {
        url: create_postgres_database(server).await,
        _in_use: in_use,
    }
}

/// Waits until no other test uses the PostgreSQL test server, and keeps them
/// off it while the result lives, so that the server can be stopped.
pub async fn postgres_server_alone() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    POSTGRES_IN_USE.write().await
}

/// A new, empty database on the test server; returns its URL.
pub async fn create_postgres_database(server: &str) -> String {
    use sqlx::Connection;
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "eventhub_test_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = sqlx::PgConnection::connect(server)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {server}: {e}"));
    // With a linguistic default collation, as production clusters usually
    // have (the test cluster's own is C.UTF-8, which sorts like bytes and
    // would hide a query that sorts by the database's locale). ICU needs
    // PostgreSQL 15 built with it; without, the server's default is used.
    let icu = format!(
        "CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' \
         LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
    );
    if sqlx::query(&icu).execute(&mut conn).await.is_err() {
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    // Same server and parameters, the new database as the path.
    let mut url = url::Url::parse(server).unwrap();
    url.set_path(&name);
    url.to_string()
}

/// A URL for a fresh database of the backend under test (SQLite files go in
/// `dir`), and for PostgreSQL what keeps the server up while it is used.
pub async fn fresh_database_url(dir: &std::path::Path) -> (String, Option<PostgresInUse>) {
    if on_postgres() {
        let server = std::env::var("EVENTHUB_TEST_POSTGRES_URL")
            .expect("EVENTHUB_TEST_BACKEND=postgres needs EVENTHUB_TEST_POSTGRES_URL");
        let database = fresh_postgres_database(&server).await;
        (database.url, Some(database._in_use))
    } else {
        (format!("sqlite://{}", dir.join("hub.db").display()), None)
    }
}

pub async fn spawn_hub_with(configure: impl FnOnce(&mut Config)) -> TestHub {
    let dir = tempfile::tempdir().unwrap();
    let (url, postgres_in_use) = fresh_database_url(dir.path()).await;
    let mut config = Config::new(url);
    config.default_partitions = 4;
    configure(&mut config);
    let database_url = config.database_url.clone();
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
        database_url,
        _postgres_in_use: postgres_in_use,
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

    /// Stops the hub, then lists the files left in its directory (on SQLite,
    /// only `hub.db` once the store has closed every connection; a `-wal` or
    /// `-shm` file means it gave up waiting for one).
    pub async fn stop_and_list_files(mut self) -> Vec<String> {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
        let mut files: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        files
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

/// Every page of one read of a partition from `_first` with `max_events`
/// per page (no waiting, no following).
pub async fn read_pages(
    client: &mut Client,
    topic: &str,
    partition: u32,
    max_events: u32,
    types: &[&str],
) -> Vec<proto::ReadPartitionResponse> {
    let stream = client
        .read_partition(ReadPartitionRequest {
            topic: topic.into(),
            partition,
            cursor: "_first".into(),
            max_events,
            types: types.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    every_message(stream).await
}

/// Every page of ReadKey of `key` from its first version.
pub async fn read_key_pages(
    client: &mut Client,
    topic: &str,
    key: &str,
    max_events: u32,
) -> Vec<proto::ReadKeyResponse> {
    let stream = client
        .read_key(proto::ReadKeyRequest {
            topic: topic.into(),
            key: key.into(),
            max_events,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    every_message(stream).await
}

/// Every message of a server stream, which must end without an error.
pub async fn every_message<T>(mut stream: tonic::Streaming<T>) -> Vec<T> {
    let mut messages = Vec::new();
    while let Some(message) = stream.next().await {
        messages.push(message.unwrap());
    }
    messages
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

/// Follows `partition` of `topic` from its first event.
pub async fn follow(
    client: &Client,
    topic: &str,
    partition: u32,
) -> tonic::Streaming<proto::ReadPartitionResponse> {
    client
        .clone()
        .read_partition(ReadPartitionRequest {
            topic: topic.into(),
            partition,
            cursor: "_first".into(),
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// A hub running as its own process (`eventhub serve`), killed on drop.
pub struct HubProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub client: Client,
}

/// Starts `eventhub serve` on a free port with the given database and
/// default partition count, and connects to it.
pub async fn spawn_process(database_url: &str, partitions: u32) -> HubProcess {
    spawn_command(serve_command(database_url, partitions)).await
}

/// `eventhub serve` on a free port with the given database and default
/// partition count, to be started by [`spawn_command`].
pub fn serve_command(database_url: &str, partitions: u32) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eventhub"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--default-partitions"])
        .arg(partitions.to_string())
        .arg("--database")
        .arg(database_url)
        .env("EVENTHUB_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Starts a [`serve_command`] and connects to the hub once it listens.
pub async fn spawn_command(mut command: Command) -> HubProcess {
    let mut child = command.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .await
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("eventhub listening on ")
        .unwrap_or_else(|| panic!("expected the listening line, got {line:?}"))
        .parse()
        .unwrap();
    let client = connect(addr).await;
    HubProcess {
        child,
        addr,
        client,
    }
}

/// Appenders and followers at once: `appenders` clients each send
/// `appends` Appends of 1–4 events to `topic` (of `partitions` partitions)
/// while every client of `followers` follows every partition from
/// `_first`. Checks that every follower sees every acknowledged event
/// exactly once, in order, with no gap.
pub async fn check_no_gap(
    appenders: Vec<Client>,
    appends: usize,
    followers: Vec<Client>,
    topic: &str,
    partitions: u32,
) {
    use std::collections::HashMap;
    use tokio_stream::StreamExt;
    append(
        &mut appenders[0].clone(),
        topic,
        vec![ev("seed", "T", "seed")],
    )
    .await;
    let mut streams = Vec::new();
    for (f, client) in followers.iter().enumerate() {
        for p in 0..partitions {
            let stream = client
                .clone()
                .read_partition(ReadPartitionRequest {
                    topic: topic.into(),
                    partition: p,
                    cursor: "_first".into(),
                    follow: true,
                    max_events: 13,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            streams.push((f, p, stream));
        }
    }
    let mut producers = Vec::new();
    for (a, client) in appenders.into_iter().enumerate() {
        let mut client = client;
        let topic = topic.to_owned();
        producers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0..appends {
                let size = 1 + (n % 4);
                let events = (0..size)
                    .map(|i| {
                        ev(
                            &format!("key-{a}-{}", (n + i) % 7),
                            "T",
                            &format!("{a}/{n}/{i}"),
                        )
                    })
                    .collect();
                let resp = append(&mut client, &topic, events).await;
                for (i, r) in resp.results.iter().enumerate() {
                    acked.push((r.partition, r.sequence, format!("{a}/{n}/{i}")));
                }
            }
            acked
        }));
    }
    let mut acked: HashMap<u32, Vec<(u64, String)>> = HashMap::new();
    acked
        .entry(partition_of("seed", partitions))
        .or_default()
        .push((1, "seed".into()));
    for p in producers {
        for (partition, seq, payload) in p.await.unwrap() {
            acked.entry(partition).or_default().push((seq, payload));
        }
    }
    for v in acked.values_mut() {
        v.sort();
    }
    for (f, p, stream) in streams.iter_mut() {
        let expected = acked.get(p).cloned().unwrap_or_default();
        let mut seen: Vec<(u64, String)> = Vec::new();
        while seen.len() < expected.len() {
            let page = tokio::time::timeout(std::time::Duration::from_secs(30), stream.next())
                .await
                .unwrap_or_else(|_| panic!("follower {f} of partition {p} stalled"))
                .unwrap()
                .unwrap();
            seen.extend(
                page.events
                    .into_iter()
                    .map(|e| (e.sequence, String::from_utf8(e.payload).unwrap())),
            );
        }
        let seqs: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            seqs,
            (1..=expected.len() as u64).collect::<Vec<_>>(),
            "follower {f}, partition {p}: in order, no gap, no repeat"
        );
        assert_eq!(
            seen, expected,
            "follower {f}, partition {p}: exactly the acknowledged events"
        );
    }
}
