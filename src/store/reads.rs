//! Every read of the store ([`ReadStorage`]), written once for every
//! [`Dialect`] whose database decodes the schema's types; events decode in
//! one place ([`event_from_row`]).

use super::storage::{Dialect, EVENT_COLUMNS, ReadStorage};
use super::{PAGE_BYTES, Registry, TopicRow, TopicState, adopt};
use crate::domain::{Content, EventRow, Snapshot};
use crate::error::{HubError, Result};
use futures::TryStreamExt;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, Row, Type,
};
use std::collections::HashSet;
use std::sync::LazyLock;

/// [`EVENT_COLUMNS`] of the events table `e`, for queries that join.
pub(crate) static E_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    EVENT_COLUMNS
        .split(", ")
        .map(|c| format!("e.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
});

/// The event in the [`EVENT_COLUMNS`] of `row`, which start at column
/// `first`. This is the path of every event read, so columns are taken by
/// position (by name, each would cost a lookup) and without checking their
/// declared types against the Rust ones, which the schema fixes: without
/// the checks a catch-up read on PostgreSQL went from 0.60–0.63M to
/// 0.65–0.71M events/s. A value that does not decode is still an error.
pub(crate) fn event_from_row<R: Row>(row: &R, first: usize) -> Result<EventRow>
where
    usize: ColumnIndex<R>,
    i64: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    bool: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    String: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    Vec<u8>: Type<R::Database> + for<'r> Decode<'r, R::Database>,
{
    let c = |i: usize| first + i;
    Ok(EventRow {
        partition: row.try_get_unchecked::<i64, _>(c(0))? as u32,
        sequence: row.try_get_unchecked::<i64, _>(c(1))? as u64,
        transaction_id: row.try_get_unchecked::<i64, _>(c(2))? as u64,
        key: row.try_get_unchecked(c(3))?,
        key_version: row.try_get_unchecked::<i64, _>(c(4))? as u64,
        event_id: row.try_get_unchecked(c(5))?,
        content: Content {
            event_type: row.try_get_unchecked(c(6))?,
            content_type: row.try_get_unchecked(c(7))?,
            headers: row.try_get_unchecked(c(8))?,
            payload: row.try_get_unchecked(c(9))?,
            tombstone: row.try_get_unchecked(c(10))?,
        },
        committed_at_ms: row.try_get_unchecked(c(11))?,
        invalidates: row
            .try_get_unchecked::<Option<i64>, _>(c(12))?
            .map(|t| t as u64),
        transaction_invalidated: false,
    })
}

/// Topic rows with their heads, from rows of [`TOPIC_SELECT`] ordered by
/// topic, then partition.
pub(crate) fn topic_rows<R: Row>(rows: &[R]) -> Result<Vec<TopicRow>>
where
    for<'a> &'a str: ColumnIndex<R>,
    i64: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    String: Type<R::Database> + for<'r> Decode<'r, R::Database>,
{
    let mut out: Vec<TopicRow> = Vec::new();
    for row in rows {
        let id: i64 = row.try_get("topic_id")?;
        if out.last().is_none_or(|t| t.id != id) {
            out.push(TopicRow {
                id,
                name: row.try_get("name")?,
                partition_count: row.try_get::<i64, _>("partition_count")? as u32,
                created_at_ms: row.try_get("created_at_ms")?,
                last_transaction_id: row.try_get::<i64, _>("last_transaction_id")? as u64,
                heads: Vec::new(),
            });
        }
        let t = out.last_mut().expect("pushed above");
        t.heads.push((
            row.try_get::<i64, _>("partition")? as u32,
            row.try_get::<i64, _>("head_sequence")? as u64,
        ));
    }
    Ok(out)
}

/// The events of `rows` (of [`EVENT_COLUMNS`]), decoded as they arrive
/// while the database sends the rest, up to the first that takes the page
/// past [`PAGE_BYTES`]: a page of large events is never loaded whole.
async fn page<R: Row>(
    mut rows: impl futures::Stream<Item = std::result::Result<R, sqlx::Error>> + Unpin,
    limit: usize,
) -> Result<Vec<EventRow>>
where
    usize: ColumnIndex<R>,
    i64: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    bool: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    String: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    Vec<u8>: Type<R::Database> + for<'r> Decode<'r, R::Database>,
{
    let mut events = Vec::with_capacity(limit.min(1024));
    let mut bytes = 0;
    while let Some(row) = rows.try_next().await? {
        let event = event_from_row(&row, 0)?;
        bytes += event.size();
        events.push(event);
        if bytes > PAGE_BYTES {
            break;
        }
    }
    Ok(events)
}

/// A topic joined to its partitions, in one statement (one snapshot).
pub(crate) const TOPIC_SELECT: &str = "SELECT t.topic_id, t.name, t.partition_count, t.created_at_ms, \
     t.last_transaction_id, p.partition, p.head_sequence \
     FROM topics t JOIN partitions p ON p.topic_id = t.topic_id";

impl<D: Dialect> ReadStorage for D
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    for<'c> &'c Pool<D::Db>: Executor<'c, Database = D::Db>,
    for<'q> <D::Db as Database>::Arguments<'q>: IntoArguments<'q, D::Db>,
    usize: ColumnIndex<<D::Db as Database>::Row>,
    for<'a> &'a str: ColumnIndex<<D::Db as Database>::Row>,
    i64: Type<D::Db> + for<'q> Encode<'q, D::Db> + for<'r> Decode<'r, D::Db>,
    bool: Type<D::Db> + for<'q> Encode<'q, D::Db> + for<'r> Decode<'r, D::Db>,
    String: Type<D::Db> + for<'q> Encode<'q, D::Db> + for<'r> Decode<'r, D::Db>,
    for<'s> &'s str: Type<D::Db> + Encode<'s, D::Db>,
    Vec<u8>: Type<D::Db> + for<'r> Decode<'r, D::Db>,
    (i64,): for<'r> FromRow<'r, <D::Db as Database>::Row>,
    (String,): for<'r> FromRow<'r, <D::Db as Database>::Row>,
{
    /// The stored topic named `name`, with its heads.
    async fn topic_row(&self, name: &str) -> Result<Option<TopicRow>> {
        let rows = sqlx::query(&format!(
            "{TOPIC_SELECT} WHERE t.name = $1 ORDER BY p.partition"
        ))
        .bind(name)
        .fetch_all(self.pool())
        .await?;
        Ok(topic_rows(&rows)?.pop())
    }

    /// Loads every stored topic into the registry, advancing the heads of
    /// those already there.
    async fn adopt_all(&self, topics: &Registry) -> Result<()> {
        let rows = sqlx::query(&format!("{TOPIC_SELECT} ORDER BY t.topic_id, p.partition"))
            .fetch_all(self.pool())
            .await?;
        for row in topic_rows(&rows)? {
            adopt(topics, &row);
        }
        Ok(())
    }

    /// Names of topics starting with `prefix` and sorting after `after`.
    async fn topic_names(&self, prefix: &str, after: &str, limit: usize) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM topics WHERE substr(name, 1, length($1)) = $1 AND name > $2 \
             ORDER BY name LIMIT $3",
        )
        .bind(prefix)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(n,)| n).collect())
    }

    /// Closes the pool's connections, waiting for those in use.
    async fn close(&self) {
        crate::store::close_pool(self.pool()).await;
    }

    async fn read_partition(
        &self,
        topic: &TopicState,
        partition: u32,
        after: u64,
        upto: u64,
        limit: usize,
        types: &[String],
    ) -> Result<Vec<EventRow>> {
        if let Some(events) = self
            .bulk_read(topic.id, partition, after, upto, limit, types)
            .await?
        {
            return Ok(events);
        }
        let cols = E_COLUMNS.as_str();
        let mut sql = format!(
            "SELECT {cols} FROM events e WHERE e.topic_id = $1 AND e.partition = $2 \
             AND e.sequence > $3 AND e.sequence <= $4"
        );
        if !types.is_empty() {
            let list: Vec<String> = (0..types.len()).map(|i| format!("${}", i + 6)).collect();
            sql.push_str(&format!(" AND e.event_type IN ({})", list.join(",")));
        }
        sql.push_str(" ORDER BY e.sequence LIMIT $5");
        let mut q = sqlx::query(&sql)
            .bind(topic.id)
            .bind(partition as i64)
            .bind(after as i64)
            .bind(upto as i64)
            .bind(limit as i64);
        for t in types {
            q = q.bind(t.as_str());
        }
        page(q.fetch(self.pool()), limit).await
    }

    /// Whether any transaction of the topic is invalidated.
    async fn has_invalidations(&self, topic: &TopicState) -> Result<bool> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT transaction_id FROM invalidations WHERE topic_id = $1 LIMIT 1")
                .bind(topic.id)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.is_some())
    }

    async fn invalidated_between(
        &self,
        topic: &TopicState,
        min: u64,
        max: u64,
    ) -> Result<HashSet<u64>> {
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT transaction_id FROM invalidations WHERE topic_id = $1 AND transaction_id BETWEEN $2 AND $3",
        )
        .bind(topic.id)
        .bind(min as i64)
        .bind(max as i64)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(t,)| t as u64).collect())
    }

    async fn snapshot(&self, topic: &TopicState) -> Result<Snapshot> {
        let rows = sqlx::query(&format!(
            "{TOPIC_SELECT} WHERE t.topic_id = $1 ORDER BY p.partition"
        ))
        .bind(topic.id)
        .fetch_all(self.pool())
        .await?;
        let row = topic_rows(&rows)?
            .pop()
            .ok_or_else(|| HubError::topic_not_found(&topic.name))?;
        let mut heads = vec![0u64; topic.partition_count as usize];
        for (p, h) in row.heads {
            heads[p as usize] = h;
        }
        Ok(Snapshot {
            last_transaction_id: row.last_transaction_id,
            heads,
        })
    }

    /// A partition's sequences are gapless from 1 to its head, and their
    /// transaction ids grow with them: the last sequence committed at or
    /// before `transaction` is found by bisecting `0..=head`, one primary-key
    /// lookup per step, in one recursive query. (No index leads with the
    /// partition and the transaction: the index by transaction leads with
    /// the transaction, so that a commit writes one page of it.)
    async fn head_as_of(
        &self,
        topic: &TopicState,
        partition: u32,
        transaction: u64,
        head: u64,
    ) -> Result<u64> {
        // Invariant: `lo` is 0 or committed at or before `transaction`, and
        // `hi` is the head or followed by a sequence committed after it.
        let row: Option<(i64,)> = sqlx::query_as(
            "WITH RECURSIVE s(lo, hi) AS ( \
               SELECT CAST(0 AS BIGINT), CAST($4 AS BIGINT) \
               UNION ALL \
               SELECT CASE WHEN e.transaction_id <= $3 THEN (s.lo + s.hi + 1) / 2 ELSE s.lo END, \
                      CASE WHEN e.transaction_id <= $3 THEN s.hi ELSE (s.lo + s.hi + 1) / 2 - 1 END \
               FROM s JOIN events e ON e.topic_id = $1 AND e.partition = $2 \
                 AND e.sequence = (s.lo + s.hi + 1) / 2 \
               WHERE s.lo < s.hi) \
             SELECT lo FROM s WHERE lo = hi",
        )
        .bind(topic.id)
        .bind(partition as i64)
        .bind(transaction as i64)
        .bind(head as i64)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some((s,)) => Ok(s as u64),
            None => Err(HubError::Internal(format!(
                "partition {partition} of topic {:?} has a gap in its sequences below {head}",
                topic.name
            ))),
        }
    }

    async fn surface_page(
        &self,
        topic: &TopicState,
        as_of: u64,
        from: &str,
        inclusive: bool,
        limit: usize,
    ) -> Result<(Vec<EventRow>, Option<String>)> {
        let cols = E_COLUMNS.as_str();
        let sql = format!(
            "SELECT k.key AS surface_key, k.changed_transaction_id AS changed, {cols} \
             FROM keys k LEFT JOIN events e ON e.topic_id = k.topic_id AND e.partition = k.live_partition \
             AND e.sequence = k.live_sequence \
             WHERE k.topic_id = $1 AND k.key {} $2 \
             AND (k.changed_transaction_id > $3 OR (k.live_sequence IS NOT NULL AND NOT k.live_tombstone)) \
             ORDER BY k.key LIMIT $4",
            if inclusive { ">=" } else { ">" }
        );
        let rows = sqlx::query(&sql)
            .bind(topic.id)
            .bind(from)
            .bind(as_of as i64)
            .bind(limit as i64)
            .fetch_all(self.pool())
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
                // After surface_key and changed.
                out.push(event_from_row(row, 2)?);
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
        let cols = E_COLUMNS.as_str();
        let sql = format!(
            "SELECT {cols} FROM events e WHERE e.topic_id = $1 AND e.key = $2 AND e.transaction_id <= $3 \
             AND NOT EXISTS (SELECT 1 FROM invalidations i WHERE i.topic_id = $1 \
                 AND i.transaction_id = e.transaction_id AND i.marker_transaction_id <= $3) \
             ORDER BY e.key_version DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(topic.id)
            .bind(key)
            .bind(as_of as i64)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(|r| event_from_row(r, 0)).transpose()
    }

    async fn key_version(&self, topic: &TopicState, key: &str) -> Result<u64> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT version FROM keys WHERE topic_id = $1 AND key = $2")
                .bind(topic.id)
                .bind(key)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map_or(0, |(v,)| v as u64))
    }

    async fn read_key(
        &self,
        topic: &TopicState,
        key: &str,
        from: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<EventRow>> {
        let cols = E_COLUMNS.as_str();
        let sql = format!(
            "SELECT {cols} FROM events e WHERE e.topic_id = $1 AND e.key = $2 \
             AND e.key_version >= $3 AND e.key_version <= $4 ORDER BY e.key_version LIMIT $5"
        );
        let q = sqlx::query(&sql)
            .bind(topic.id)
            .bind(key)
            .bind(from as i64)
            .bind(upto as i64)
            .bind(limit as i64);
        page(q.fetch(self.pool()), limit).await
    }
}
