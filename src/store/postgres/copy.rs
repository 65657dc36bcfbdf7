//! Long partition reads on PostgreSQL through `COPY (SELECT …) TO STDOUT
//! (FORMAT binary)`, parsed straight into events.
//!
//! A catch-up read is mostly per-row work in the driver: for a `SELECT`,
//! sqlx makes a row object for every `DataRow` message (with a vector of
//! column offsets) and decodes each column through its type machinery.
//! Binary `COPY` sends the same values in a format simple enough to parse
//! in one pass (big-endian integers, raw text and bytes, length-prefixed),
//! and PostgreSQL sends one message per row, which the parser reads in
//! place. `COPY` takes no parameters and is planned on every call, so it
//! is used only for pages that may hold many rows and have no type filter
//! (every value inlined is an integer); shorter reads take the prepared
//! `SELECT` of `store/reads.rs`.
//!
//! The connection is read to the end of the `COPY`. If the read fails or
//! is dropped before that, the connection is taken out of the pool and
//! closed, since sqlx would otherwise hand it out with the rest of the
//! `COPY` still queued on it.

use crate::domain::{Content, EventRow};
use crate::error::Result;
use crate::store::PAGE_BYTES;
use crate::store::storage::EVENT_COLUMNS as COLUMNS;
use futures::TryStreamExt;
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

/// Reads of at most this many rows use the prepared `SELECT`: below it,
/// planning the `COPY` costs more than it saves.
pub(crate) const MIN_ROWS: u64 = 256;

/// The number of columns in each row of the `COPY`.
const FIELDS: i16 = 13;

/// The events of `partition` of topic `topic_id` with `after < sequence <=
/// upto`, in order: at most `limit`, and none after the first that takes
/// the page past [`PAGE_BYTES`]. `None` when the read may hold fewer than
/// [`MIN_ROWS`] rows or filters `types`: the prepared `SELECT` reads it.
pub(crate) async fn bulk_read(
    pool: &PgPool,
    topic_id: i64,
    partition: u32,
    after: u64,
    upto: u64,
    limit: usize,
    types: &[String],
) -> Result<Option<Vec<EventRow>>> {
    if !types.is_empty() || (limit as u64).min(upto.saturating_sub(after)) < MIN_ROWS {
        return Ok(None);
    }
    let sql = format!(
        "COPY (SELECT {COLUMNS} FROM events WHERE topic_id = {topic_id} AND partition = {partition} \
         AND sequence > {after} AND sequence <= {upto} ORDER BY sequence LIMIT {limit}) \
         TO STDOUT (FORMAT binary)"
    );
    let mut conn = Unfinished(Some(pool.acquire().await?));
    let mut events = Vec::with_capacity(limit.min(upto.saturating_sub(after) as usize).min(16_384));
    let mut parser = Parser::default();
    {
        let c = conn.0.as_mut().expect("set above");
        let mut chunks = c.copy_out_raw(&sql).await?;
        while let Some(chunk) = chunks.try_next().await? {
            parser.feed(&chunk, &mut events)?;
            if parser.bytes > PAGE_BYTES {
                // Large events: the rest of the page is not wanted, and
                // `conn` is closed rather than drained.
                return Ok(Some(events));
            }
        }
    }
    parser.finish()?;
    // Read to the end: the connection may go back to the pool.
    conn.0.take();
    Ok(Some(events))
}

/// A pool connection in the middle of a `COPY`: closed rather than
/// returned to the pool if dropped before the `COPY` ended.
struct Unfinished(Option<PoolConnection<Postgres>>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(conn.detach());
        }
    }
}

/// The binary `COPY` format's signature, followed by a 32-bit flags field
/// and the 32-bit length of a header extension.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

#[derive(Default)]
struct Parser {
    header_read: bool,
    trailer_read: bool,
    /// Bytes of an incomplete tuple, when a message ended inside one.
    pending: Vec<u8>,
    /// The size of the events parsed so far; parsing stops at the first
    /// event that takes it past [`PAGE_BYTES`].
    bytes: usize,
}

fn malformed(what: &str) -> crate::error::HubError {
    sqlx::Error::Decode(format!("unexpected binary COPY data from PostgreSQL: {what}").into())
        .into()
}

impl Parser {
    /// Parses the complete tuples of `chunk` (after what is pending) into
    /// `out`, keeping an incomplete tail for the next chunk.
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<EventRow>) -> Result<()> {
        if self.pending.is_empty() {
            let used = self.parse(chunk, out)?;
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            let mut data = std::mem::take(&mut self.pending);
            data.extend_from_slice(chunk);
            let used = self.parse(&data, out)?;
            data.drain(..used);
            self.pending = data;
        }
        Ok(())
    }

    /// Parses from the start of `data`; returns how many bytes it used.
    fn parse(&mut self, data: &[u8], out: &mut Vec<EventRow>) -> Result<usize> {
        let mut r = Reader { data, at: 0 };
        if !self.header_read {
            let Some(sig) = r.take(SIGNATURE.len() + 8) else {
                return Ok(0);
            };
            if &sig[..SIGNATURE.len()] != SIGNATURE {
                return Err(malformed("no binary COPY signature"));
            }
            let ext = u32::from_be_bytes(sig[SIGNATURE.len() + 4..].try_into().expect("4 bytes"));
            if r.take(ext as usize).is_none() {
                return Ok(0);
            }
            self.header_read = true;
        }
        loop {
            let start = r.at;
            if self.trailer_read {
                if r.at < data.len() {
                    return Err(malformed("data after the trailer"));
                }
                return Ok(r.at);
            }
            match r.tuple() {
                Ok(Some(Tuple::Event(e))) => {
                    self.bytes += e.size();
                    out.push(e);
                    if self.bytes > PAGE_BYTES {
                        return Ok(r.at);
                    }
                }
                Ok(Some(Tuple::Trailer)) => self.trailer_read = true,
                Ok(None) => return Ok(start),
                Err(e) => return Err(e),
            }
        }
    }

    fn finish(&self) -> Result<()> {
        if self.trailer_read && self.pending.is_empty() {
            Ok(())
        } else {
            Err(malformed("the COPY ended without its trailer"))
        }
    }
}

#[allow(clippy::large_enum_variant)]
enum Tuple {
    Event(EventRow),
    Trailer,
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.data.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    fn i16(&mut self) -> Option<i16> {
        self.take(2)
            .map(|b| i16::from_be_bytes(b.try_into().expect("2 bytes")))
    }

    /// One field: `None` when the data ends inside it, `Some(None)` for NULL.
    fn field(&mut self) -> Option<Option<&'a [u8]>> {
        let len = i32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes"));
        if len < 0 {
            return Some(None);
        }
        self.take(len as usize).map(Some)
    }

    /// The next tuple; `Ok(None)` when the data ends inside it.
    fn tuple(&mut self) -> Result<Option<Tuple>> {
        let Some(n) = self.i16() else {
            return Ok(None);
        };
        if n == -1 {
            return Ok(Some(Tuple::Trailer));
        }
        if n != FIELDS {
            return Err(malformed(&format!("a row of {n} columns, not {FIELDS}")));
        }
        let mut f: [Option<&[u8]>; FIELDS as usize] = [None; FIELDS as usize];
        for slot in &mut f {
            match self.field() {
                Some(v) => *slot = v,
                None => return Ok(None),
            }
        }
        let int = |i: usize| -> Result<i64> {
            match f[i] {
                Some(b) if b.len() == 8 => Ok(i64::from_be_bytes(b.try_into().expect("8 bytes"))),
                _ => Err(malformed(&format!("column {i} is not a BIGINT"))),
            }
        };
        let text = |i: usize| -> Result<Option<String>> {
            f[i].map(|b| {
                std::str::from_utf8(b)
                    .map(str::to_owned)
                    .map_err(|_| malformed(&format!("column {i} is not UTF-8")))
            })
            .transpose()
        };
        let required = |v: Option<String>, i: usize| {
            v.ok_or_else(|| malformed(&format!("column {i} is NULL")))
        };
        let tombstone = match f[10] {
            Some([b]) => *b != 0,
            _ => return Err(malformed("column 10 is not a BOOLEAN")),
        };
        let event = EventRow {
            partition: int(0)? as u32,
            sequence: int(1)? as u64,
            transaction_id: int(2)? as u64,
            key: text(3)?,
            key_version: int(4)? as u64,
            event_id: text(5)?,
            content: Content {
                event_type: required(text(6)?, 6)?,
                content_type: required(text(7)?, 7)?,
                headers: f[8].map(<[u8]>::to_vec),
                payload: f[9].ok_or_else(|| malformed("column 9 is NULL"))?.to_vec(),
                tombstone,
            },
            committed_at_ms: int(11)?,
            invalidates: match f[12] {
                None => None,
                Some(_) => Some(int(12)? as u64),
            },
            transaction_invalidated: false,
        };
        Ok(Some(Tuple::Event(event)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut t = (fields.len() as i16).to_be_bytes().to_vec();
        for f in fields {
            match f {
                None => t.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(b) => {
                    t.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    t.extend_from_slice(b);
                }
            }
        }
        t
    }

    fn event(sequence: i64, payload: &[u8]) -> Vec<u8> {
        let int = |v: i64| v.to_be_bytes();
        let (p, s, tx, kv, at) = (
            int(3),
            int(sequence),
            int(7),
            int(1),
            int(1_700_000_000_000),
        );
        tuple(&[
            Some(&p),
            Some(&s),
            Some(&tx),
            Some(b"k\xc3\xa9"),
            Some(&kv),
            None,
            Some(b"t"),
            Some(b"application/json"),
            None,
            Some(payload),
            Some(&[0]),
            Some(&at),
            None,
        ])
    }

    fn copy(rows: &[Vec<u8>]) -> Vec<u8> {
        let mut d = SIGNATURE.to_vec();
        d.extend_from_slice(&[0; 8]);
        for r in rows {
            d.extend_from_slice(r);
        }
        d.extend_from_slice(&(-1i16).to_be_bytes());
        d
    }

    #[test]
    fn parses_rows_split_anywhere() {
        let data = copy(&[event(1, b"{}"), event(2, b""), event(3, &[0xff; 300])]);
        for split in 1..data.len() {
            let (mut p, mut out) = (Parser::default(), Vec::new());
            p.feed(&data[..split], &mut out).unwrap();
            p.feed(&data[split..], &mut out).unwrap();
            p.finish().unwrap();
            let seqs: Vec<u64> = out.iter().map(|e| e.sequence).collect();
            assert_eq!(seqs, [1, 2, 3], "split at {split}");
            assert_eq!(out[0].key.as_deref(), Some("ké"));
            assert_eq!(out[0].partition, 3);
            assert_eq!(out[0].event_id, None);
            assert_eq!(out[2].content.payload, vec![0xff; 300]);
            assert_eq!(out[1].content.content_type, "application/json");
            assert_eq!(out[0].committed_at_ms, 1_700_000_000_000);
        }
    }

    #[test]
    fn stops_at_the_first_event_past_the_page_bytes() {
        let big = vec![7u8; 1_000_000];
        let rows: Vec<Vec<u8>> = (1..=6).map(|s| event(s, &big)).collect();
        let (mut p, mut out) = (Parser::default(), Vec::new());
        p.feed(&copy(&rows), &mut out).unwrap();
        assert_eq!(
            out.len(),
            4,
            "three fit in {PAGE_BYTES} bytes, the fourth passes it"
        );
        assert!(p.bytes > PAGE_BYTES);
    }

    #[test]
    fn refuses_what_is_not_an_event_row() {
        let mut text = copy(&[event(1, b"")]);
        text[0] = b'X';
        let (mut p, mut out) = (Parser::default(), Vec::new());
        assert!(p.feed(&text, &mut out).is_err(), "not the binary format");
        let mut short = copy(&[]);
        short.truncate(short.len() - 2);
        short.extend_from_slice(&tuple(&[Some(b"x")]));
        let (mut p, mut out) = (Parser::default(), Vec::new());
        assert!(p.feed(&short, &mut out).is_err());
        let (mut p, mut out) = (Parser::default(), Vec::new());
        p.feed(&copy(&[event(1, b"")])[..40], &mut out).unwrap();
        assert!(p.finish().is_err(), "a COPY cut short is an error");
    }
}
