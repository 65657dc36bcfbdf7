//! Long partition reads on SQLite, stepped straight through SQLite's API on
//! a pooled connection's handle.
//!
//! sqlx runs each SQLite connection on a worker thread of its own, which
//! copies every row into a row object and hands it through a channel to
//! the task that awaits it; a catch-up read spent most of its time there,
//! and read no faster than sqlx itself reads the table (about 260,000 rows
//! a second on the development machine). Here a blocking thread takes the
//! connection's handle out of its worker (sqlx's `lock_handle`), steps the
//! statement with `rusqlite`, which links the same `libsqlite3-sys`, and
//! makes each row an event in place. Reads that may return fewer than
//! [`MIN_ROWS`] rows keep sqlx's prepared `SELECT` of `store/reads.rs`,
//! which saves this path's thread hand-offs and preparing the statement.

use crate::domain::{Content, EventRow};
use crate::error::{HubError, Result};
use crate::store::PAGE_BYTES;
use crate::store::storage::EVENT_COLUMNS as COLUMNS;
use sqlx::SqlitePool;

/// Reads that may return fewer rows take the prepared `SELECT`. Catch-up
/// reads with pages capped by the hub, this path and sqlx's alternated: at
/// 100 events a page (the consumers' default; 1,000,000 events) this path
/// read 366,000–480,000 events/s against sqlx's 168,000–216,000; at 50
/// (20,000 events) 223,000–337,000 against 187,000–260,000; at 20 both
/// about 130,000; at 5, 34,000–40,000 against 39,000–47,000.
pub(crate) const MIN_ROWS: u64 = 32;

/// The events of `partition` of topic `topic_id` with `after < sequence <=
/// upto` (and a type in `types`, unless it is empty), in order: at most
/// `limit`, and none after the first that takes the page past
/// [`PAGE_BYTES`]. `None` when the read may hold fewer than [`MIN_ROWS`]
/// rows: the prepared `SELECT` reads it.
pub(crate) async fn bulk_read(
    pool: &SqlitePool,
    topic_id: i64,
    partition: u32,
    after: u64,
    upto: u64,
    limit: usize,
    types: &[String],
) -> Result<Option<Vec<EventRow>>> {
    if (limit as u64).min(upto.saturating_sub(after)) < MIN_ROWS {
        return Ok(None);
    }
    let mut sql = format!(
        "SELECT {COLUMNS} FROM events WHERE topic_id = ?1 AND partition = ?2 \
         AND sequence > ?3 AND sequence <= ?4"
    );
    if !types.is_empty() {
        let list: Vec<String> = (0..types.len()).map(|i| format!("?{}", i + 6)).collect();
        sql.push_str(&format!(" AND event_type IN ({})", list.join(",")));
    }
    sql.push_str(" ORDER BY sequence LIMIT ?5");
    let mut params: Vec<rusqlite::types::Value> = vec![
        topic_id.into(),
        i64::from(partition).into(),
        (after as i64).into(),
        (upto as i64).into(),
        (limit as i64).into(),
    ];
    params.extend(types.iter().map(|t| t.clone().into()));
    let capacity = limit.min(upto.saturating_sub(after) as usize).min(16_384);

    let mut conn = pool.acquire().await?;
    let (conn, events) = tokio::task::spawn_blocking(move || {
        let events = read_locked(&mut conn, &sql, &params, capacity);
        (conn, events)
    })
    .await
    .map_err(|e| match e.try_into_panic() {
        Ok(panic) => std::panic::resume_unwind(panic),
        Err(_) => HubError::Unavailable("the hub is shutting down".into()),
    })?;
    // Back to the pool from the runtime, which sqlx's pool expects.
    drop(conn);
    events.map(Some)
}

/// Takes the connection's handle from sqlx's worker thread for the read;
/// the worker gets it back when the read ends.
fn read_locked(
    conn: &mut sqlx::SqliteConnection,
    sql: &str,
    params: &[rusqlite::types::Value],
    capacity: usize,
) -> Result<Vec<EventRow>> {
    let mut handle = futures::executor::block_on(conn.lock_handle())?;
    // SAFETY: the handle is locked out of sqlx's worker thread while
    // `handle` lives, and `db` is dropped before it. A connection made with
    // `from_handle` does not close the handle when dropped.
    let db = unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr()) }
        .map_err(storage)?;
    let events = read(&db, sql, params, capacity).map_err(storage);
    drop(db);
    events
}

fn read(
    db: &rusqlite::Connection,
    sql: &str,
    params: &[rusqlite::types::Value],
    capacity: usize,
) -> rusqlite::Result<Vec<EventRow>> {
    let mut statement = db.prepare(sql)?;
    let mut rows = statement.query(rusqlite::params_from_iter(params))?;
    let mut events = Vec::with_capacity(capacity);
    let mut bytes = 0;
    while let Some(row) = rows.next()? {
        let e = event(row)?;
        bytes += e.size();
        events.push(e);
        if bytes > PAGE_BYTES {
            break;
        }
    }
    Ok(events)
}

/// The event in a row of [`COLUMNS`].
fn event(row: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        partition: row.get::<_, i64>(0)? as u32,
        sequence: row.get::<_, i64>(1)? as u64,
        transaction_id: row.get::<_, i64>(2)? as u64,
        key: row.get(3)?,
        key_version: row.get::<_, i64>(4)? as u64,
        event_id: row.get(5)?,
        content: Content {
            event_type: row.get(6)?,
            content_type: row.get(7)?,
            headers: row.get(8)?,
            payload: row.get(9)?,
            tombstone: row.get(10)?,
        },
        committed_at_ms: row.get(11)?,
        invalidates: row.get::<_, Option<i64>>(12)?.map(|t| t as u64),
        transaction_invalidated: false,
    })
}

/// SQLite's own failures count as the storage being out of reach (the read
/// may succeed when retried); a value that does not decode is a decode
/// error.
fn storage(e: rusqlite::Error) -> HubError {
    match e {
        rusqlite::Error::SqliteFailure(..) => HubError::Storage(sqlx::Error::Io(
            std::io::Error::other(format!("SQLite read failed: {e}")),
        )),
        other => HubError::Storage(sqlx::Error::Decode(Box::new(other))),
    }
}
