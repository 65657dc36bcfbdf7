//! Cursors: opaque, URL-safe strings naming a position in one partition.
//!
//! The format is `<partition>.<sequence>.<check>`, where `check` is eight hex
//! digits of a hash over topic, partition and sequence. The check lets the
//! hub refuse a cursor of another topic, and typos, instead of silently
//! reading from somewhere else. Clients treat cursors as opaque.

use crate::error::{HubError, Result};
use crate::validate::{fnv1a64, fnv1a64_extend};

pub const FIRST: &str = "_first";
pub const LAST: &str = "_last";

/// The decimal digits of `n`, written at the end of `buf`.
fn decimal(buf: &mut [u8; 20], mut n: u64) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).expect("ASCII digits")
}

/// The check of a position, from the decimal digits of its partition and
/// sequence: a hash of `"<topic>\0<partition>\0<sequence>"`.
fn check_digits(topic: &str, partition: &str, sequence: &str) -> u32 {
    let mut h = fnv1a64(topic.as_bytes());
    for part in [partition, sequence] {
        h = fnv1a64_extend(h, &[0]);
        h = fnv1a64_extend(h, part.as_bytes());
    }
    (h ^ (h >> 32)) as u32
}

fn check(topic: &str, partition: u32, sequence: u64) -> u32 {
    let (mut p, mut s) = ([0u8; 20], [0u8; 20]);
    check_digits(
        topic,
        decimal(&mut p, partition.into()),
        decimal(&mut s, sequence),
    )
}

/// The cursor after `sequence` (0 = before the first event). Readers send
/// one per event, so this writes it without formatting machinery: one
/// allocation, no intermediate strings.
pub fn encode(topic: &str, partition: u32, sequence: u64) -> String {
    let (mut p, mut s) = ([0u8; 20], [0u8; 20]);
    let (p, s) = (decimal(&mut p, partition.into()), decimal(&mut s, sequence));
    let check = check_digits(topic, p, s);
    let mut out = String::with_capacity(p.len() + s.len() + 10);
    out.push_str(p);
    out.push('.');
    out.push_str(s);
    out.push('.');
    for shift in (0..8).rev() {
        let nibble = (check >> (shift * 4)) & 0xf;
        out.push(char::from_digit(nibble, 16).expect("a nibble"));
    }
    out
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
    if cursor.len() > 64 {
        return Err(HubError::invalid(format!(
            "cursor is {} bytes long, and no cursor is longer than 40; pass a cursor returned by \
             the hub verbatim, or \"_first\" or \"_last\"",
            cursor.len()
        )));
    }
    let malformed = || {
        HubError::invalid(format!(
            "cursor {cursor:?} is malformed; pass a cursor returned by the hub verbatim, or \"_first\" or \"_last\""
        ))
    };
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
    if c != check(topic, p, s) {
        return Err(HubError::invalid(format!(
            "cursor {cursor:?} does not belong to topic {topic:?} (it comes from another topic or was altered)"
        )));
    }
    // The hub writes each position one way; another spelling of it
    // ("+3", "03", upper-case hex) was not handed out by the hub.
    if encode(topic, p, s) != cursor {
        return Err(malformed());
    }
    if p != partition {
        return Err(HubError::invalid(format!(
            "cursor {cursor:?} belongs to partition {p}, not to partition {partition}; a cursor is only valid for the partition it came from"
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
        // Only the hub's own spelling of a position.
        assert_eq!(c, "3.42.9301d9e9");
        for other in [
            "+3.42.9301d9e9",
            "03.42.9301d9e9",
            "3.042.9301d9e9",
            "3.42.9301D9E9",
        ] {
            let e = decode("orders", 3, other).unwrap_err().to_string();
            assert!(e.contains("malformed"), "{other}: {e}");
        }
        // A typo in the partition is an altered cursor, not another partition's.
        let e = decode("orders", 3, "31.42.9301d9e9")
            .unwrap_err()
            .to_string();
        assert!(e.contains("was altered"), "{e}");
        let e = decode("orders", 3, &"9".repeat(100_000))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 200 && e.contains("100000 bytes"), "{e}");
        assert_eq!(decode("orders", 3, "_first").unwrap(), Start::After(0));
        assert_eq!(decode("orders", 3, "_last").unwrap(), Start::Last);
    }

    /// Cursors are stored by clients: the encoding never changes. This is
    /// its definition, written plainly.
    #[test]
    fn encoding_is_stable() {
        let defined = |topic: &str, p: u32, s: u64| {
            let h = fnv1a64(format!("{topic}\0{p}\0{s}").as_bytes());
            format!("{p}.{s}.{:08x}", (h ^ (h >> 32)) as u32)
        };
        assert_eq!(encode("orders", 3, 42), "3.42.9301d9e9");
        for topic in ["orders", "a", "billing.v2-x_y"] {
            for p in [0, 1, 9, 10, 255, 4095, u32::MAX] {
                for s in [0, 1, 9, 10, 99, 100, 123_456_789, u64::MAX] {
                    assert_eq!(encode(topic, p, s), defined(topic, p, s));
                }
            }
        }
    }
}
