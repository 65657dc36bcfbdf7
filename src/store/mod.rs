//! Storage on SQLite: the topic registry, reads on a connection pool, and
//! one writer task that owns the only write connection (see [`writer`]).
//!
//! The registry keeps every topic's partition heads in `watch` channels. The
//! writer publishes new heads only after its transaction committed, so a
//! reader that sees a head can read every event up to it, and a waiting
//! reader is woken by the commit itself rather than by polling.

mod writer;

use crate::config::{Config, SqliteSync};
use crate::error::{HubError, Result};
use crate::validate::{Content, NewEvent, TopicName};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

pub use writer::{AppendOutcome, AppendReply, InvalidateReply, StoredPos};

/// A topic as the running hub knows it.
#[derive(Debug)]
pub struct TopicState {
    pub id: i64,
    pub name: String,
    pub partition_count: u32,
    pub created_at_ms: i64,
    /// Last committed transaction id; written by the writer after commit.
    pub last_transaction_id: AtomicU64,
    /// Per partition, the last committed sequence; readers subscribe to wait.
    pub heads: Vec<watch::Sender<u64>>,
}

impl TopicState {
    pub fn head(&self, partition: u32) -> u64 {
        *self.heads[partition as usize].borrow()
    }
}

type Registry = Arc<RwLock<HashMap<String, Arc<TopicState>>>>;

/// A stored event as read from the log.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub partition: u32,
    pub sequence: u64,
    pub transaction_id: u64,
    pub key: Option<String>,
    pub key_version: u64,
    pub event_id: Option<String>,
    pub content: Content,
    pub committed_at_ms: i64,
    /// For invalidation markers: the invalidated transaction.
    pub invalidates: Option<u64>,
}

impl EventRow {
    /// Approximate encoded size, for bounding pages.
    pub fn size(&self) -> usize {
        let c = &self.content;
        64 + c.payload.len()
            + c.headers.as_ref().map_or(0, Vec::len)
            + c.event_type.len()
            + c.content_type.len()
            + self.key.as_ref().map_or(0, String::len)
            + self.event_id.as_ref().map_or(0, String::len)
    }
}

const EVENT_COLUMNS: &str = "e.partition, e.sequence, e.transaction_id, e.key, e.key_version, e.event_id, \
     e.event_type, e.content_type, e.headers, e.payload, e.tombstone, e.committed_at_ms, e.invalidates";

fn event_from_row(row: &SqliteRow) -> Result<EventRow> {
    Ok(EventRow {
        partition: row.try_get::<i64, _>("partition")? as u32,
        sequence: row.try_get::<i64, _>("sequence")? as u64,
        transaction_id: row.try_get::<i64, _>("transaction_id")? as u64,
        key: row.try_get("key")?,
        key_version: row.try_get::<i64, _>("key_version")? as u64,
        event_id: row.try_get("event_id")?,
        content: Content {
            event_type: row.try_get("event_type")?,
            content_type: row.try_get("content_type")?,
            headers: row.try_get("headers")?,
            payload: row.try_get("payload")?,
            tombstone: row.try_get("tombstone")?,
        },
        committed_at_ms: row.try_get("committed_at_ms")?,
        invalidates: row
            .try_get::<Option<i64>, _>("invalidates")?
            .map(|t| t as u64),
    })
}

/// A request to the writer task.
pub(crate) enum WriteRequest {
    Append {
        topic: TopicName,
        events: Vec<NewEvent>,
        dedup_by_content: bool,
        reply: oneshot::Sender<Result<AppendReply>>,
    },
    CreateTopic {
        topic: TopicName,
        partitions: u32,
        reply: oneshot::Sender<Result<(Arc<TopicState>, bool)>>,
    },
    Invalidate {
        topic: TopicName,
        transaction_id: u64,
        reason: String,
        reply: oneshot::Sender<Result<InvalidateReply>>,
    },
}

/// Partition heads and last transaction read together, in one snapshot.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub last_transaction_id: u64,
    pub heads: Vec<u64>,
}

/// The storage handle shared by all request handlers.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    writer: mpsc::Sender<WriteRequest>,
    topics: Registry,
}

impl Store {
    /// Opens (creating if needed) the database, runs migrations, loads the
    /// registry and starts the writer task.
    pub async fn open(config: &Config) -> Result<Store> {
        let url = &config.database_url;
        if !url.starts_with("sqlite:") {
            return Err(HubError::invalid(format!(
                "database URL {url:?} is not supported; use sqlite://PATH (e.g. sqlite://eventhub.db)"
            )));
        }
        let sync = match config.sqlite_synchronous {
            SqliteSync::Full => SqliteSynchronous::Full,
            SqliteSync::Normal => SqliteSynchronous::Normal,
        };
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sync)
            .busy_timeout(Duration::from_secs(10))
            .pragma("cache_size", "-65536")
            .log_statements(tracing::log::LevelFilter::Trace);
        let mut conn = options.connect().await?;
        sqlx::migrate!("migrations/sqlite")
            .run_direct(&mut conn)
            .await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(options.clone().read_only(true))
            .await?;
        let topics: Registry = Arc::default();
        load_registry(&mut conn, &topics).await?;
        let (tx, rx) = mpsc::channel(4096);
        writer::spawn(conn, rx, topics.clone(), config.clone());
        Ok(Store {
            pool,
            writer: tx,
            topics,
        })
    }

    /// The topic, if it exists.
    pub fn topic(&self, name: &str) -> Option<Arc<TopicState>> {
        self.topics.read().unwrap().get(name).cloned()
    }

    /// The topic, or NOT_FOUND.
    pub fn require_topic(&self, name: &TopicName) -> Result<Arc<TopicState>> {
        self.topic(name.as_str())
            .ok_or_else(|| HubError::topic_not_found(name.as_str()))
    }

    /// Topics sorted by name.
    pub fn list_topics(&self, prefix: &str, after: &str, limit: usize) -> Vec<Arc<TopicState>> {
        let map = self.topics.read().unwrap();
        let mut all: Vec<_> = map
            .values()
            .filter(|t| t.name.starts_with(prefix) && t.name.as_str() > after)
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all.truncate(limit);
        all
    }

    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> WriteRequest,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(make(tx))
            .await
            .map_err(|_| HubError::Unavailable("the hub is shutting down".into()))?;
        rx.await
            .map_err(|_| HubError::Unavailable("the hub's writer stopped; retry".into()))?
    }

    pub async fn append(
        &self,
        topic: TopicName,
        events: Vec<NewEvent>,
        dedup_by_content: bool,
    ) -> Result<AppendReply> {
        self.write(|reply| WriteRequest::Append {
            topic,
            events,
            dedup_by_content,
            reply,
        })
        .await
    }

    pub async fn create_topic(
        &self,
        topic: TopicName,
        partitions: u32,
    ) -> Result<(Arc<TopicState>, bool)> {
        self.write(|reply| WriteRequest::CreateTopic {
            topic,
            partitions,
            reply,
        })
        .await
    }

    pub async fn invalidate(
        &self,
        topic: TopicName,
        transaction_id: u64,
        reason: String,
    ) -> Result<InvalidateReply> {
        self.write(|reply| WriteRequest::Invalidate {
            topic,
            transaction_id,
            reason,
            reply,
        })
        .await
    }

    /// Events of one partition with `after < sequence <= upto`, at most
    /// `limit`, only of `types` when not empty.
    pub async fn read_partition(
        &self,
        topic: &TopicState,
        partition: u32,
        after: u64,
        upto: u64,
        limit: usize,
        types: &[String],
    ) -> Result<Vec<EventRow>> {
        let mut sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.topic_id = ? AND e.partition = ? \
             AND e.sequence > ? AND e.sequence <= ?"
        );
        if !types.is_empty() {
            sql.push_str(" AND e.event_type IN (");
            sql.push_str(&vec!["?"; types.len()].join(","));
            sql.push(')');
        }
        sql.push_str(" ORDER BY e.sequence LIMIT ?");
        let mut q = sqlx::query(&sql)
            .bind(topic.id)
            .bind(partition as i64)
            .bind(after as i64)
            .bind(upto as i64);
        for t in types {
            q = q.bind(t);
        }
        let rows = q.bind(limit as i64).fetch_all(&self.pool).await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Which of the transactions in `min..=max` are invalidated.
    pub async fn invalidated_between(
        &self,
        topic: &TopicState,
        min: u64,
        max: u64,
    ) -> Result<HashSet<u64>> {
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT transaction_id FROM invalidations WHERE topic_id = ? AND transaction_id BETWEEN ? AND ?",
        )
        .bind(topic.id)
        .bind(min as i64)
        .bind(max as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(t,)| t as u64).collect())
    }

    /// The topic's last transaction and partition heads, consistently.
    pub async fn snapshot(&self, topic: &TopicState) -> Result<Snapshot> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let (last,): (i64,) =
            sqlx::query_as("SELECT last_transaction_id FROM topics WHERE topic_id = ?")
                .bind(topic.id)
                .fetch_one(&mut *tx)
                .await?;
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT partition, head_sequence FROM partitions WHERE topic_id = ? ORDER BY partition",
        )
        .bind(topic.id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut heads = vec![0u64; topic.partition_count as usize];
        for (p, h) in rows {
            heads[p as usize] = h as u64;
        }
        Ok(Snapshot {
            last_transaction_id: last as u64,
            heads,
        })
    }

    /// The last sequence of a partition committed at or before `transaction`.
    pub async fn head_as_of(
        &self,
        topic: &TopicState,
        partition: u32,
        transaction: u64,
    ) -> Result<u64> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT sequence FROM events WHERE topic_id = ? AND partition = ? AND transaction_id <= ? \
             ORDER BY transaction_id DESC, sequence DESC LIMIT 1",
        )
        .bind(topic.id)
        .bind(partition as i64)
        .bind(transaction as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map_or(0, |(s,)| s as u64))
    }

    /// One page of the surface as of transaction `as_of`: keys from `from`
    /// (exclusive unless `inclusive`), each with its latest valid event as of
    /// then, tombstoned and not-yet-existing keys left out. Returns the page
    /// and the last key examined (to continue from), `None` at the end.
    pub async fn surface_page(
        &self,
        topic: &TopicState,
        as_of: u64,
        from: &str,
        inclusive: bool,
        limit: usize,
    ) -> Result<(Vec<EventRow>, Option<String>)> {
        let sql = format!(
            "SELECT k.key AS surface_key, k.changed_transaction_id AS changed, {EVENT_COLUMNS} \
             FROM keys k LEFT JOIN events e ON e.topic_id = k.topic_id AND e.partition = k.live_partition \
             AND e.sequence = k.live_sequence \
             WHERE k.topic_id = ? AND k.key {} ? \
             AND (k.changed_transaction_id > ? OR (k.live_sequence IS NOT NULL AND k.live_tombstone = 0)) \
             ORDER BY k.key LIMIT ?",
            if inclusive { ">=" } else { ">" }
        );
        let rows = sqlx::query(&sql)
            .bind(topic.id)
            .bind(from)
            .bind(as_of as i64)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        let last = if rows.len() == limit {
            rows.last()
                .map(|r| r.try_get::<String, _>("surface_key"))
                .transpose()?
        } else {
            None
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let changed = row.try_get::<i64, _>("changed")? as u64;
            if changed <= as_of {
                out.push(event_from_row(row)?);
            } else {
                let key: String = row.try_get("surface_key")?;
                if let Some(e) = self.key_as_of(topic, &key, as_of).await?
                    && !e.content.tombstone
                {
                    out.push(e);
                }
            }
        }
        Ok((out, last))
    }

    /// The latest event of `key` committed at or before `as_of` whose
    /// transaction was not invalidated at or before `as_of`.
    async fn key_as_of(
        &self,
        topic: &TopicState,
        key: &str,
        as_of: u64,
    ) -> Result<Option<EventRow>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.topic_id = ?1 AND e.key = ?2 AND e.transaction_id <= ?3 \
             AND NOT EXISTS (SELECT 1 FROM invalidations i WHERE i.topic_id = ?1 \
                 AND i.transaction_id = e.transaction_id AND i.marker_transaction_id <= ?3) \
             ORDER BY e.key_version DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(topic.id)
            .bind(key)
            .bind(as_of as i64)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    /// A key's current version (0 when never written).
    pub async fn key_version(&self, topic: &TopicState, key: &str) -> Result<u64> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT version FROM keys WHERE topic_id = ? AND key = ?")
                .bind(topic.id)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map_or(0, |(v,)| v as u64))
    }

    /// Events of one key with `from <= key_version <= upto`, at most `limit`.
    pub async fn read_key(
        &self,
        topic: &TopicState,
        key: &str,
        from: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<EventRow>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.topic_id = ? AND e.key = ? \
             AND e.key_version >= ? AND e.key_version <= ? ORDER BY e.key_version LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(topic.id)
            .bind(key)
            .bind(from as i64)
            .bind(upto as i64)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }
}

async fn load_registry(conn: &mut sqlx::SqliteConnection, topics: &Registry) -> Result<()> {
    let rows: Vec<(i64, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT topic_id, name, partition_count, created_at_ms, last_transaction_id FROM topics",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut map = HashMap::new();
    for (id, name, count, created, last) in rows {
        let heads: Vec<(i64, i64)> =
            sqlx::query_as("SELECT partition, head_sequence FROM partitions WHERE topic_id = ?")
                .bind(id)
                .fetch_all(&mut *conn)
                .await?;
        let state = TopicState::new(id, name.clone(), count as u32, created, last as u64);
        for (p, h) in heads {
            state.heads[p as usize].send_replace(h as u64);
        }
        map.insert(name, Arc::new(state));
    }
    *topics.write().unwrap() = map;
    Ok(())
}

impl TopicState {
    fn new(id: i64, name: String, partition_count: u32, created_at_ms: i64, last: u64) -> Self {
        TopicState {
            id,
            name,
            partition_count,
            created_at_ms,
            last_transaction_id: AtomicU64::new(last),
            heads: (0..partition_count).map(|_| watch::channel(0).0).collect(),
        }
    }

    pub fn last_transaction(&self) -> u64 {
        self.last_transaction_id.load(Ordering::Acquire)
    }
}
