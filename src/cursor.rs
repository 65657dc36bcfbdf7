//! Cursors: opaque, URL-safe strings naming a position in one partition.
//!
//! The format is `<partition>.<sequence>.<check>`, where `check` is eight hex
//! digits of a hash over topic, partition and sequence. The check lets the
//! hub refuse a cursor of another topic, and typos, instead of silently
//! reading from somewhere else. Clients treat cursors as opaque.

use crate::error::{HubError, Result};
use crate::validate::fnv1a64;

pub const FIRST: &str = "_first";
pub const LAST: &str = "_last";

fn check(topic: &str, partition: u32, sequence: u64) -> u32 {
    let h = fnv1a64(format!("{topic}\0{partition}\0{sequence}").as_bytes());
    (h ^ (h >> 32)) as u32
}

/// The cursor after `sequence` (0 = before the first event).
pub fn encode(topic: &str, partition: u32, sequence: u64) -> String {
    format!(
        "{partition}.{sequence}.{:08x}",
        check(topic, partition, sequence)
    )
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// After this sequence (0 = from the first event).
    After(u64),
    /// The head at the time of the call.
    Last,
}

/// Decodes a cursor given for `topic`/`partition`.
pub fn decode(topic: &str, partition: u32, cursor: &str) -> Result<Start> {
    match cursor {
        "" | FIRST => return Ok(Start::After(0)),
        LAST => return Ok(Start::Last),
        _ => {}
    }
    let malformed = || {
        HubError::invalid(format!(
            "cursor {cursor:?} is malformed; pass a cursor returned by the hub verbatim, or \"_first\" or \"_last\""
        ))
    };
    if cursor.len() > 64 {
        return Err(malformed());
    }
    let mut parts = cursor.split('.');
    let (Some(p), Some(s), Some(c), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let p: u32 = p.parse().map_err(|_| malformed())?;
    let s: u64 = s.parse().map_err(|_| malformed())?;
    if c.len() != 8 {
        return Err(malformed());
    }
    let c = u32::from_str_radix(c, 16).map_err(|_| malformed())?;
    if p != partition {
        return Err(HubError::invalid(format!(
            "cursor {cursor:?} belongs to partition {p}, not to partition {partition}; a cursor is only valid for the partition it came from"
        )));
    }
    if c != check(topic, p, s) {
        return Err(HubError::invalid(format!(
            "cursor {cursor:?} does not belong to topic {topic:?} (it comes from another topic or was altered)"
        )));
    }
    if i64::try_from(s).is_err() {
        return Err(malformed());
    }
    Ok(Start::After(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cursor decodes back to its position, and only for its own topic and partition.
    #[test]
    fn round_trip_and_rejections() {
        let c = encode("orders", 3, 42);
        assert_eq!(decode("orders", 3, &c).unwrap(), Start::After(42));
        assert!(decode("orders", 4, &c).is_err());
        assert!(decode("billing", 3, &c).is_err());
        assert!(decode("orders", 3, "3.42.zzzzzzzz").is_err());
        assert_eq!(decode("orders", 3, "_first").unwrap(), Start::After(0));
        assert_eq!(decode("orders", 3, "_last").unwrap(), Start::Last);
    }
}
