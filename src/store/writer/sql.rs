//! The writer's statements ([`WriteStorage`]), written once for every
//! [`Dialect`] whose database decodes the schema's types.

use super::plan::{KeyState, Live, PendingEvent, StoredContent};
use crate::domain::{Content, StoredPos};
use crate::error::{HubError, Result};
use crate::store::TopicRow;
use crate::store::reads::{TOPIC_SELECT, topic_rows};
use crate::store::storage::{Conn, Dialect, FoundTopic, TransactionEvent, WriteStorage};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Row, Type};

impl<D: Dialect> WriteStorage for D
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    for<'q> <D::Db as Database>::Arguments<'q>: IntoArguments<'q, D::Db>,
    for<'a> &'a str: ColumnIndex<<D::Db as Database>::Row>,
    i64: Type<D::Db> + for<'q> Encode<'q, D::Db> + for<'r> Decode<'r, D::Db>,
    Option<i64>: Type<D::Db> + for<'q> Encode<'q, D::Db>,
    bool: Type<D::Db> + for<'q> Encode<'q, D::Db> + for<'r> Decode<'r, D::Db>,
    String: Type<D::Db> + for<'q> Encode<'q, D::Db> + for<'r> Decode<'r, D::Db>,
    for<'s> &'s str: Type<D::Db> + Encode<'s, D::Db>,
    Vec<u8>: Type<D::Db> + for<'r> Decode<'r, D::Db>,
    (i64,): for<'r> FromRow<'r, <D::Db as Database>::Row>,
{
    async fn find_topic(conn: &mut Conn<D>, name: &str) -> Result<Option<FoundTopic>> {
        let row = sqlx::query(
            "SELECT topic_id, partition_count, created_at_ms FROM topics WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|r| {
            Ok(FoundTopic {
                id: r.try_get("topic_id")?,
                partition_count: r.try_get::<i64, _>("partition_count")? as u32,
                created_at_ms: r.try_get("created_at_ms")?,
            })
        })
        .transpose()
    }

    async fn topic_by_id(conn: &mut Conn<D>, id: i64) -> Result<TopicRow> {
        let rows = sqlx::query(&format!(
            "{TOPIC_SELECT} WHERE t.topic_id = $1 ORDER BY p.partition"
        ))
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        topic_rows(&rows)?.pop().ok_or_else(|| {
            HubError::Unavailable("a topic disappeared while it was read; retry".into())
        })
    }

    async fn insert_topic(
        conn: &mut Conn<D>,
        name: &str,
        partitions: u32,
        created_at_ms: i64,
    ) -> Result<Option<i64>> {
        let row: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO topics (name, partition_count, created_at_ms, last_transaction_id) VALUES ($1, $2, $3, 0) \
             ON CONFLICT (name) DO NOTHING RETURNING topic_id",
        )
        .bind(name)
        .bind(partitions as i64)
        .bind(created_at_ms)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((id,)) = row else { return Ok(None) };
        let values: Vec<String> = (0..partitions).map(|p| format!("($1, {p}, 0)")).collect();
        sqlx::query(&format!(
            "INSERT INTO partitions (topic_id, partition, head_sequence) VALUES {}",
            values.join(", ")
        ))
        .bind(id)
        .execute(&mut *conn)
        .await?;
        Ok(Some(id))
    }

    async fn remove_topic(conn: &mut Conn<D>, id: i64) -> Result<()> {
        sqlx::query("DELETE FROM partitions WHERE topic_id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM topics WHERE topic_id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn lock_topic(conn: &mut Conn<D>, id: i64) -> Result<u64> {
        let (last_txn,): (i64,) = sqlx::query_as(D::LOCK_TOPIC)
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
        Ok(last_txn as u64)
    }

    async fn heads(conn: &mut Conn<D>, id: i64, partition_count: u32) -> Result<Vec<u64>> {
        let rows =
            sqlx::query("SELECT partition, head_sequence FROM partitions WHERE topic_id = $1")
                .bind(id)
                .fetch_all(&mut *conn)
                .await?;
        let mut heads = vec![0u64; partition_count as usize];
        for r in rows {
            let p = r.try_get::<i64, _>("partition")? as usize;
            heads[p] = r.try_get::<i64, _>("head_sequence")? as u64;
        }
        Ok(heads)
    }

    async fn load_keys(
        conn: &mut Conn<D>,
        id: i64,
        keys: &[&str],
    ) -> Result<Vec<(String, KeyState)>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(D::CHUNK) {
            // Not a prepared statement: PostgreSQL would settle on a generic
            // plan made while the table was small (a scan of the whole table,
            // which grows with every key) and keep it.
            let rows = D::select_in(
                conn,
                "SELECT key, version, live_partition, live_sequence, live_tombstone FROM keys",
                id,
                "key",
                chunk,
                false,
            )
            .await?;
            for row in rows {
                let key: String = row.try_get("key")?;
                let live = match (
                    row.try_get::<Option<i64>, _>("live_partition")?,
                    row.try_get::<Option<i64>, _>("live_sequence")?,
                ) {
                    (Some(p), Some(s)) => Some(Live {
                        partition: p as u32,
                        sequence: s as u64,
                        tombstone: row.try_get("live_tombstone")?,
                    }),
                    _ => None,
                };
                let version = row.try_get::<i64, _>("version")? as u64;
                out.push((
                    key,
                    KeyState {
                        version,
                        live,
                        changed: None,
                    },
                ));
            }
        }
        Ok(out)
    }

    async fn load_event_ids(
        conn: &mut Conn<D>,
        id: i64,
        ids: &[&str],
    ) -> Result<Vec<(String, StoredPos)>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(D::CHUNK) {
            let rows = D::select_in(
                conn,
                "SELECT event_id, partition, sequence, key_version, transaction_id FROM events",
                id,
                "event_id",
                chunk,
                true,
            )
            .await?;
            for row in rows {
                let pos = StoredPos {
                    partition: row.try_get::<i64, _>("partition")? as u32,
                    sequence: row.try_get::<i64, _>("sequence")? as u64,
                    key_version: row.try_get::<i64, _>("key_version")? as u64,
                    transaction_id: row.try_get::<i64, _>("transaction_id")? as u64,
                };
                out.push((row.try_get("event_id")?, pos));
            }
        }
        Ok(out)
    }

    async fn load_contents(
        conn: &mut Conn<D>,
        id: i64,
        lives: &[Live],
    ) -> Result<Vec<((u32, u64), StoredContent)>> {
        let mut out = Vec::with_capacity(lives.len());
        for chunk in lives.chunks(D::CHUNK) {
            let pairs: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, ${})", 2 * i + 2, 2 * i + 3))
                .collect();
            let sql = format!(
                "SELECT partition, sequence, key_version, transaction_id, event_type, content_type, headers, payload, tombstone \
                 FROM events WHERE topic_id = $1 AND (partition, sequence) IN (VALUES {})",
                pairs.join(", ")
            );
            let mut q = sqlx::query(&sql).bind(id);
            for l in chunk {
                q = q.bind(l.partition as i64).bind(l.sequence as i64);
            }
            for row in q.fetch_all(&mut *conn).await? {
                let content = Content {
                    event_type: row.try_get("event_type")?,
                    content_type: row.try_get("content_type")?,
                    headers: row.try_get("headers")?,
                    payload: row.try_get("payload")?,
                    tombstone: row.try_get("tombstone")?,
                };
                let at = (
                    row.try_get::<i64, _>("partition")? as u32,
                    row.try_get::<i64, _>("sequence")? as u64,
                );
                let version = row.try_get::<i64, _>("key_version")? as u64;
                let txn = row.try_get::<i64, _>("transaction_id")? as u64;
                out.push((at, (content, version, txn)));
            }
        }
        Ok(out)
    }

    async fn stored_as_written(
        conn: &mut Conn<D>,
        topic_id: i64,
        first: &PendingEvent,
        now_ms: i64,
    ) -> Result<bool> {
        let row = sqlx::query(
            "SELECT transaction_id, key, key_version, event_id, payload, committed_at_ms FROM events \
             WHERE topic_id = $1 AND partition = $2 AND sequence = $3",
        )
        .bind(topic_id)
        .bind(first.partition as i64)
        .bind(first.sequence as i64)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(r) = row else { return Ok(false) };
        Ok(
            r.try_get::<i64, _>("transaction_id")? as u64 == first.transaction_id
                && r.try_get::<Option<String>, _>("key")? == first.key
                && r.try_get::<i64, _>("key_version")? as u64 == first.key_version
                && r.try_get::<Option<String>, _>("event_id")? == first.event_id
                && r.try_get::<Vec<u8>, _>("payload")? == first.content.payload
                && r.try_get::<i64, _>("committed_at_ms")? == now_ms,
        )
    }

    async fn invalidation_of(conn: &mut Conn<D>, id: i64, transaction: u64) -> Result<Option<u64>> {
        let prior: Option<(i64,)> = sqlx::query_as(
            "SELECT marker_transaction_id FROM invalidations WHERE topic_id = $1 AND transaction_id = $2",
        )
        .bind(id)
        .bind(transaction as i64)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(prior.map(|(m,)| m as u64))
    }

    async fn positions_of(conn: &mut Conn<D>, id: i64, transaction: u64) -> Result<Vec<StoredPos>> {
        let rows = sqlx::query(
            "SELECT partition, sequence, key_version FROM events WHERE topic_id = $1 AND transaction_id = $2 \
             ORDER BY partition",
        )
        .bind(id)
        .bind(transaction as i64)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredPos {
                    partition: r.try_get::<i64, _>("partition")? as u32,
                    sequence: r.try_get::<i64, _>("sequence")? as u64,
                    key_version: r.try_get::<i64, _>("key_version")? as u64,
                    transaction_id: transaction,
                })
            })
            .collect()
    }

    async fn events_of(
        conn: &mut Conn<D>,
        id: i64,
        transaction: u64,
    ) -> Result<Vec<TransactionEvent>> {
        let rows = sqlx::query(
            "SELECT partition, key, invalidates FROM events WHERE topic_id = $1 AND transaction_id = $2",
        )
        .bind(id)
        .bind(transaction as i64)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TransactionEvent {
                    partition: r.try_get::<i64, _>("partition")? as u32,
                    key: r.try_get("key")?,
                    invalidates: r
                        .try_get::<Option<i64>, _>("invalidates")?
                        .map(|t| t as u64),
                })
            })
            .collect()
    }

    async fn insert_invalidation(
        conn: &mut Conn<D>,
        id: i64,
        transaction: u64,
        marker: u64,
        reason: &str,
    ) -> Result<()> {
        sqlx::query("INSERT INTO invalidations (topic_id, transaction_id, marker_transaction_id, reason) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(transaction as i64)
            .bind(marker as i64)
            .bind(reason)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn fall_back(conn: &mut Conn<D>, id: i64, key: &str, marker: u64) -> Result<()> {
        let live = sqlx::query(
            "SELECT partition, sequence, tombstone FROM events e WHERE e.topic_id = $1 AND e.key = $2 \
             AND NOT EXISTS (SELECT 1 FROM invalidations i WHERE i.topic_id = $1 AND i.transaction_id = e.transaction_id) \
             ORDER BY e.key_version DESC LIMIT 1",
        )
        .bind(id)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
        let (p, s, t) = match &live {
            Some(r) => (
                Some(r.try_get::<i64, _>("partition")?),
                Some(r.try_get::<i64, _>("sequence")?),
                r.try_get::<bool, _>("tombstone")?,
            ),
            None => (None, None, false),
        };
        sqlx::query(
            "UPDATE keys SET live_partition = $1, live_sequence = $2, live_tombstone = $3, changed_transaction_id = $4 \
             WHERE topic_id = $5 AND key = $6",
        )
        .bind(p)
        .bind(s)
        .bind(t)
        .bind(marker as i64)
        .bind(id)
        .bind(key)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
