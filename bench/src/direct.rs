//! The database references: the same rows the hub stores, written and read
//! straight against the same kind of database (with sqlx, and SQLite's
//! reads with `rusqlite`), with no gRPC and no hub logic in between. Also
//! fresh databases for every run.
//!
//! The write references get a database made by the hub's own migrations,
//! so their `events` table has the hub's columns, indexes and collations.
//! Durability matches the hub: SQLite in WAL mode with `synchronous=FULL`,
//! PostgreSQL with `synchronous_commit=on`.

use super::events::{CONTENT_TYPE, EVENT_TYPE, Row, TOPIC_ID, key, now_ms};
use anyhow::{Context, Result, bail};
use eventhub::validate::partition_for;
use futures::TryStreamExt;
use indicatif::ProgressBar;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Executor, QueryBuilder, Sqlite};
use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::log::LevelFilter;

const COLUMNS: &str = "topic_id, partition, sequence, transaction_id, key, key_version, event_id, \
     event_type, content_type, headers, payload, tombstone, committed_at_ms, invalidates";

const POSTGRES_UNNEST_INSERT: &str = "INSERT INTO events (topic_id, partition, sequence, transaction_id, \
     key, key_version, event_id, event_type, content_type, headers, payload, tombstone, committed_at_ms, \
     invalidates) SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], \
     $5::text[], $6::bigint[], $7::text[], $8::text[], $9::text[], $10::bytea[], $11::bytea[], \
     $12::boolean[], $13::bigint[], $14::bigint[])";

/// Every column the hub reads for an event, read back the same way.
#[derive(sqlx::FromRow)]
#[allow(dead_code)] // decoded to pay the cost the hub pays, not looked at
struct StoredEvent {
    partition: i64,
    sequence: i64,
    transaction_id: i64,
    key: Option<String>,
    key_version: i64,
    event_id: Option<String>,
    event_type: String,
    content_type: String,
    headers: Option<Vec<u8>>,
    payload: Vec<u8>,
    tombstone: bool,
    committed_at_ms: i64,
    invalidates: Option<i64>,
}

/// A PostgreSQL server on which the bench creates (and drops) its own
/// databases, `eventhub_bench_<pid>_<n>`.
pub struct PgServer {
    admin: PgPool,
    base: url::Url,
    next: AtomicU32,
    /// Databases created and not dropped yet, dropped at the end even when
    /// a run failed.
    live: Mutex<BTreeSet<String>>,
}

impl PgServer {
    pub async fn connect(url: &str) -> Result<Arc<PgServer>> {
        let base = url::Url::parse(url).with_context(|| format!("PostgreSQL URL {url:?}"))?;
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .with_context(|| format!("cannot connect to PostgreSQL at {}", redact(&base)))?;
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&admin)
            .await?;
        tracing::info!(%version, "PostgreSQL for the bench");
        Ok(Arc::new(PgServer {
            admin,
            base,
            next: AtomicU32::new(0),
            live: Mutex::default(),
        }))
    }

    pub async fn version(&self) -> Result<String> {
        Ok(sqlx::query_scalar("SHOW server_version")
            .fetch_one(&self.admin)
            .await?)
    }

    /// Creates a fresh, empty database; returns its name and URL.
    async fn create(&self) -> Result<(String, String)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("eventhub_bench_{}_{n}", std::process::id());
        self.admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .with_context(|| format!("CREATE DATABASE {name} (the user needs CREATEDB)"))?;
        self.live.lock().unwrap().insert(name.clone());
        let mut url = self.base.clone();
        url.set_path(&format!("/{name}"));
        Ok((name, url.to_string()))
    }

    async fn drop_database(&self, name: &str) -> Result<()> {
        let forced = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        if self.admin.execute(forced.as_str()).await.is_err() {
            // Before PostgreSQL 13 there is no FORCE.
            self.admin
                .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
                .await?;
        }
        self.live.lock().unwrap().remove(name);
        Ok(())
    }

    /// Drops every database the bench created and has not dropped yet.
    pub async fn drop_all(&self) {
        let names: Vec<String> = self.live.lock().unwrap().iter().cloned().collect();
        for name in names {
            if let Err(e) = self.drop_database(&name).await {
                eprintln!("could not drop PostgreSQL database {name}: {e:#}");
            }
        }
    }
}

/// The URL without its password, for messages.
fn redact(url: &url::Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    u.to_string()
}

/// Which database a run uses.
#[derive(Clone)]
pub enum Backend {
    Sqlite,
    Postgres(Arc<PgServer>),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }
}

/// A fresh, empty database for one run (a file in a temporary directory,
/// or a PostgreSQL database the bench created). Call [`FreshDb::dispose`]
/// when done.
pub enum FreshDb {
    Sqlite {
        dir: tempfile::TempDir,
        url: String,
    },
    Postgres {
        server: Arc<PgServer>,
        name: String,
        url: String,
    },
}

impl FreshDb {
    pub async fn new(backend: &Backend) -> Result<FreshDb> {
        Ok(match backend {
            Backend::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("eventhub-bench")
                    .tempdir()?;
                let url = format!("sqlite://{}", dir.path().join("bench.db").display());
                FreshDb::Sqlite { dir, url }
            }
            Backend::Postgres(server) => {
                let (name, url) = server.create().await?;
                FreshDb::Postgres {
                    server: server.clone(),
                    name,
                    url,
                }
            }
        })
    }

    pub fn url(&self) -> &str {
        match self {
            FreshDb::Sqlite { url, .. } | FreshDb::Postgres { url, .. } => url,
        }
    }

    pub async fn dispose(self) -> Result<()> {
        match self {
            FreshDb::Sqlite { dir, .. } => Ok(dir.close()?),
            FreshDb::Postgres { server, name, .. } => server.drop_database(&name).await,
        }
    }
}

fn sqlite_options(url: &str) -> Result<SqliteConnectOptions> {
    // The hub's settings (src/store): WAL, synchronous=FULL, a 64 MiB cache.
    Ok(SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .pragma("cache_size", "-65536")
        .log_slow_statements(LevelFilter::Off, Duration::ZERO))
}

fn postgres_options(url: &str) -> Result<PgConnectOptions> {
    Ok(PgConnectOptions::from_str(url)?
        .options([("synchronous_commit", "on")])
        .log_slow_statements(LevelFilter::Off, Duration::ZERO))
}

/// A connection pool straight to a database.
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Db {
    /// Opens a fresh database and runs the hub's migrations in it, for the
    /// write references.
    pub async fn create(fresh: &FreshDb, connections: u32) -> Result<Db> {
        let db = Db::open(fresh, connections, false).await?;
        match &db {
            Db::Sqlite(p) => {
                eventhub::store::SQLITE_MIGRATIONS.run(p).await?;
            }
            Db::Postgres(p) => {
                eventhub::store::POSTGRES_MIGRATIONS.run(p).await?;
            }
        }
        Ok(db)
    }

    /// Opens an existing database (the hub's), for the read reference.
    pub async fn open(fresh: &FreshDb, connections: u32, read_only: bool) -> Result<Db> {
        Ok(match fresh {
            FreshDb::Sqlite { url, .. } => Db::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(connections)
                    .connect_with(sqlite_options(url)?.read_only(read_only))
                    .await?,
            ),
            FreshDb::Postgres { url, .. } => Db::Postgres(
                PgPoolOptions::new()
                    .max_connections(connections)
                    .connect_with(postgres_options(url)?)
                    .await?,
            ),
        })
    }

    pub async fn close(self) {
        match self {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }

    /// Brings a database just loaded to the state of one that has been
    /// running for a while, so that no round of a read workload pays for
    /// the load. On PostgreSQL: `VACUUM ANALYZE`, which autovacuum would
    /// run soon after a million inserts anyway; it sets the rows' hint bits
    /// once (else the first reads of each page write it back) and gives the
    /// planner statistics. SQLite has nothing of the kind to do.
    pub async fn settle(&self) -> Result<()> {
        if let Db::Postgres(p) = self {
            sqlx::raw_sql("VACUUM ANALYZE").execute(p).await?;
        }
        Ok(())
    }

    /// Inserts one transaction's rows with one multi-row statement
    /// (SQLite: `INSERT ... VALUES (...), (...)`, PostgreSQL:
    /// `INSERT ... SELECT * FROM UNNEST(...)`) and commits.
    pub async fn insert_batch(&self, rows: &[Row]) -> Result<()> {
        match self {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let mut qb =
                    QueryBuilder::<Sqlite>::new(format!("INSERT INTO events ({COLUMNS}) "));
                qb.push_values(rows, |mut b, r| {
                    b.push_bind(TOPIC_ID)
                        .push_bind(r.partition)
                        .push_bind(r.sequence)
                        .push_bind(r.transaction_id)
                        .push_bind(r.key.as_str())
                        .push_bind(r.key_version)
                        .push_bind(None::<&str>)
                        .push_bind(EVENT_TYPE)
                        .push_bind(CONTENT_TYPE)
                        .push_bind(None::<&[u8]>)
                        .push_bind(r.payload.as_slice())
                        .push_bind(false)
                        .push_bind(r.committed_at_ms)
                        .push_bind(None::<i64>);
                });
                qb.build().execute(&mut *tx).await?;
                tx.commit().await?;
            }
            Db::Postgres(pool) => {
                let n = rows.len();
                let mut tx = pool.begin().await?;
                sqlx::query(POSTGRES_UNNEST_INSERT)
                    .bind(vec![TOPIC_ID; n])
                    .bind(rows.iter().map(|r| r.partition).collect::<Vec<_>>())
                    .bind(rows.iter().map(|r| r.sequence).collect::<Vec<_>>())
                    .bind(rows.iter().map(|r| r.transaction_id).collect::<Vec<_>>())
                    .bind(
                        rows.iter()
                            .map(|r| Some(r.key.as_str()))
                            .collect::<Vec<_>>(),
                    )
                    .bind(rows.iter().map(|r| r.key_version).collect::<Vec<_>>())
                    .bind(vec![None::<String>; n])
                    .bind(vec![EVENT_TYPE; n])
                    .bind(vec![CONTENT_TYPE; n])
                    .bind(vec![None::<Vec<u8>>; n])
                    .bind(
                        rows.iter()
                            .map(|r| r.payload.as_slice())
                            .collect::<Vec<_>>(),
                    )
                    .bind(vec![false; n])
                    .bind(rows.iter().map(|r| r.committed_at_ms).collect::<Vec<_>>())
                    .bind(vec![None::<i64>; n])
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Rows in the reference's `events` table.
    pub async fn count(&self) -> Result<u64> {
        let n: i64 = match self {
            Db::Sqlite(p) => {
                sqlx::query_scalar("SELECT count(*) FROM events")
                    .fetch_one(p)
                    .await?
            }
            Db::Postgres(p) => {
                sqlx::query_scalar("SELECT count(*) FROM events")
                    .fetch_one(p)
                    .await?
            }
        };
        Ok(n as u64)
    }

    /// One event per transaction, as a naive outbox writes, from `writers`
    /// concurrent connections until `duration` has passed. Returns the
    /// elapsed time and the rows committed.
    pub async fn insert_one_per_transaction(
        &self,
        writers: usize,
        duration: Duration,
        payload: &[u8],
        partitions: u32,
        keys: usize,
    ) -> Result<(Duration, u64)> {
        let done = Arc::new(AtomicU64::new(0));
        // Like an outbox's bigserial: unique across writers, so the primary
        // key never collides; each writer owns its keys and their versions.
        let sequence = Arc::new(AtomicI64::new(0));
        let started = Instant::now();
        let deadline = started + duration;
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..writers {
            let db = self.clone_pool();
            let done = done.clone();
            let sequence = sequence.clone();
            let payload = payload.to_vec();
            tasks.spawn(async move {
                let mut versions: HashMap<String, i64> = HashMap::new();
                let mut i = 0usize;
                while Instant::now() < deadline {
                    let k = key((w + i * writers) % keys);
                    i += 1;
                    let version = versions.entry(k.clone()).or_default();
                    *version += 1;
                    let row = Row {
                        partition: i64::from(partition_for(&k, partitions)),
                        sequence: sequence.fetch_add(1, Ordering::Relaxed) + 1,
                        transaction_id: i as i64,
                        key: k,
                        key_version: *version,
                        payload: payload.clone(),
                        committed_at_ms: now_ms(),
                    };
                    db.insert_one(&row).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        Ok((started.elapsed(), done.load(Ordering::Relaxed)))
    }

    fn clone_pool(&self) -> Db {
        match self {
            Db::Sqlite(p) => Db::Sqlite(p.clone()),
            Db::Postgres(p) => Db::Postgres(p.clone()),
        }
    }

    async fn insert_one(&self, r: &Row) -> Result<()> {
        let sql = format!(
            "INSERT INTO events ({COLUMNS}) VALUES ({})",
            match self {
                Db::Sqlite(_) => "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?",
                Db::Postgres(_) => "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14",
            }
        );
        macro_rules! insert {
            ($pool:expr) => {{
                let mut tx = $pool.begin().await?;
                sqlx::query(&sql)
                    .bind(TOPIC_ID)
                    .bind(r.partition)
                    .bind(r.sequence)
                    .bind(r.transaction_id)
                    .bind(r.key.as_str())
                    .bind(r.key_version)
                    .bind(None::<&str>)
                    .bind(EVENT_TYPE)
                    .bind(CONTENT_TYPE)
                    .bind(None::<&[u8]>)
                    .bind(r.payload.as_slice())
                    .bind(false)
                    .bind(r.committed_at_ms)
                    .bind(None::<i64>)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }};
        }
        match self {
            Db::Sqlite(p) => insert!(p),
            Db::Postgres(p) => insert!(p),
        }
        Ok(())
    }

    /// Reads every event of one partition of the hub's topic `topic`, in
    /// sequence order, streaming the rows (`fetch`) and decoding every
    /// column. Returns the elapsed time and the events read.
    pub async fn read_partition(
        &self,
        topic: &str,
        partition: u32,
        pb: &ProgressBar,
    ) -> Result<(Duration, u64)> {
        let started = Instant::now();
        let mut n = 0u64;
        match self {
            Db::Sqlite(p) => {
                // Stepped through SQLite's API on a thread of its own, as
                // the hub reads long pages (sqlx's SQLite driver hands
                // every row from its worker thread through a channel, at
                // about a tenth of this speed).
                let path = p.connect_options().get_filename().to_owned();
                let (topic, pb) = (topic.to_owned(), pb.clone());
                n = tokio::task::spawn_blocking(move || {
                    sqlite_read_partition(&path, &topic, partition, &pb)
                })
                .await??;
            }
            Db::Postgres(p) => {
                let (topic_id,): (i64,) =
                    sqlx::query_as("SELECT topic_id::bigint FROM topics WHERE name = $1")
                        .bind(topic)
                        .fetch_one(p)
                        .await?;
                // Casts keep this right whether the hub's integer columns
                // are INTEGER or BIGINT.
                let sql = "SELECT partition::bigint AS partition, sequence::bigint AS sequence, \
                     transaction_id::bigint AS transaction_id, key, key_version::bigint AS key_version, \
                     event_id, event_type, content_type, headers, payload, tombstone, \
                     committed_at_ms::bigint AS committed_at_ms, invalidates::bigint AS invalidates \
                     FROM events WHERE topic_id = $1 AND partition = $2 ORDER BY sequence";
                let mut rows = sqlx::query_as::<_, StoredEvent>(sql)
                    .bind(topic_id)
                    .bind(i64::from(partition))
                    .fetch(p);
                while let Some(row) = rows.try_next().await? {
                    std::hint::black_box(row);
                    n += 1;
                    if n.is_multiple_of(10_000) {
                        pb.inc(10_000);
                    }
                }
            }
        }
        let elapsed = started.elapsed();
        if n == 0 {
            bail!("the hub's database holds no events of {topic:?} partition {partition}");
        }
        Ok((elapsed, n))
    }
}

/// Reads every event of one partition with `rusqlite` on a read-only
/// connection of its own, decoding every column into a [`StoredEvent`].
fn sqlite_read_partition(
    path: &std::path::Path,
    topic: &str,
    partition: u32,
    pb: &ProgressBar,
) -> Result<u64> {
    use rusqlite::OpenFlags;
    let db = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    db.pragma_update(None, "cache_size", -65536)?;
    let topic_id: i64 = db.query_row(
        "SELECT topic_id FROM topics WHERE name = ?1",
        [topic],
        |r| r.get(0),
    )?;
    let mut statement = db.prepare(&format!(
        "SELECT {COLUMNS} FROM events WHERE topic_id = ?1 AND partition = ?2 ORDER BY sequence"
    ))?;
    let mut rows = statement.query((topic_id, i64::from(partition)))?;
    let mut n = 0u64;
    while let Some(r) = rows.next()? {
        // Column 0 is topic_id.
        std::hint::black_box(StoredEvent {
            partition: r.get(1)?,
            sequence: r.get(2)?,
            transaction_id: r.get(3)?,
            key: r.get(4)?,
            key_version: r.get(5)?,
            event_id: r.get(6)?,
            event_type: r.get(7)?,
            content_type: r.get(8)?,
            headers: r.get(9)?,
            payload: r.get(10)?,
            tombstone: r.get(11)?,
            committed_at_ms: r.get(12)?,
            invalidates: r.get(13)?,
        });
        n += 1;
        if n.is_multiple_of(10_000) {
            pb.inc(10_000);
        }
    }
    Ok(n)
}

/// A single SQLite connection for the one-writer reference (SQLite has one
/// writer at a time anyway).
pub async fn sqlite_single_writer(fresh: &FreshDb) -> Result<Db> {
    let db = Db::create(fresh, 1).await?;
    if let Db::Sqlite(p) = &db {
        // Make sure the connection is open before the clock starts.
        p.acquire().await?.ping().await?;
    }
    Ok(db)
}
