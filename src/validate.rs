//! Checks at the edge, turning API input into the domain's types
//! (`domain`): the storage layer only ever sees input that passed through
//! here.

use crate::config::Limits;
use crate::domain::{Content, Expected, NewEvent};
use crate::error::{HubError, Result};
use crate::proto;
use std::collections::{BTreeMap, HashSet};

/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 1024;
/// Type of the marker events Invalidate appends.
pub const INVALIDATION_TYPE: &str = "$invalidation";
/// Longest topic name, event type or event id, in bytes.
pub(crate) const MAX_NAME: usize = 200;
const MAX_KEY_BYTES: usize = 1024;

/// 64-bit FNV-1a, the documented partitioning hash.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_extend(0xcbf2_9ce4_8422_2325, bytes)
}

/// FNV-1a (64-bit) of what hashed to `h`, followed by `bytes`.
pub fn fnv1a64_extend(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The partition of a key: `fnv1a64(key) % partitions`.
pub fn partition_for(key: &str, partitions: u32) -> u32 {
    (fnv1a64(key.as_bytes()) % u64::from(partitions)) as u32
}

/// A partition count given to CreateTopic (0 means the default).
pub fn partition_count(n: u32, default: u32) -> Result<u32> {
    let n = if n == 0 { default } else { n };
    if !(1..=MAX_PARTITIONS).contains(&n) {
        return Err(HubError::invalid(format!(
            "partition_count is {n}; it must be between 1 and {MAX_PARTITIONS}"
        )));
    }
    Ok(n)
}

/// Headers as stored: sorted pairs, each name and value length-prefixed.
pub fn encode_headers(headers: &BTreeMap<&str, &str>) -> Option<Vec<u8>> {
    if headers.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for (k, v) in headers {
        for s in [k, v] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    Some(out)
}

/// The inverse of [`encode_headers`]. Stored data is trusted; a corrupt
/// blob yields the pairs decoded so far.
pub fn decode_headers(mut blob: &[u8]) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    let take = |blob: &mut &[u8]| -> Option<String> {
        let len = u32::from_le_bytes(blob.get(..4)?.try_into().ok()?) as usize;
        let s = String::from_utf8_lossy(blob.get(4..4 + len)?).into_owned();
        *blob = &blob[4 + len..];
        Some(s)
    };
    while !blob.is_empty() {
        let (Some(k), Some(v)) = (take(&mut blob), take(&mut blob)) else {
            break;
        };
        out.insert(k, v);
    }
    out
}

fn check_event_type(t: &str, i: usize) -> Result<()> {
    if t.is_empty() {
        return Err(HubError::invalid(format!(
            "events[{i}].type is empty; every event needs a type"
        )));
    }
    if t.len() > MAX_NAME {
        return Err(HubError::invalid(format!(
            "events[{i}].type is {} bytes long; the limit is {MAX_NAME}",
            t.len()
        )));
    }
    if t.starts_with('$') {
        return Err(HubError::invalid(format!(
            "events[{i}].type {t:?} starts with '$'; such types are reserved for the hub"
        )));
    }
    if let Some(c) = t
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-')))
    {
        return Err(HubError::invalid(format!(
            "events[{i}].type {t:?} contains {c:?}; use only letters, digits and . _ : / -"
        )));
    }
    Ok(())
}

/// Checks a types filter of a read (reserved types may be asked for).
pub fn check_type_filter(types: &[String]) -> Result<()> {
    if types.len() > 1000 {
        return Err(HubError::invalid(format!(
            "types lists {} types; the limit is 1000",
            types.len()
        )));
    }
    for t in types {
        if t.is_empty() || t.len() > MAX_NAME {
            return Err(HubError::invalid(format!(
                "types contains a type of {} bytes; a type is 1–{MAX_NAME} bytes",
                t.len()
            )));
        }
        check_no_nul(t, "types")?;
    }
    Ok(())
}

/// Refuses the NUL character (U+0000) in text the hub stores or compares:
/// PostgreSQL's text cannot hold it, and an input must mean the same on
/// both backends.
pub fn check_no_nul(text: &str, field: &str) -> Result<()> {
    if text.contains('\0') {
        return Err(HubError::invalid(format!(
            "{field} contains the NUL character (U+0000), which the hub does not store; remove it"
        )));
    }
    Ok(())
}

/// Checks a key given to a read or an append.
pub fn check_key(key: &str, field: &str) -> Result<()> {
    if key.is_empty() {
        return Err(HubError::invalid(format!(
            "{field} is empty; every event needs a key"
        )));
    }
    check_no_nul(key, field)?;
    if key.len() > MAX_KEY_BYTES {
        return Err(HubError::invalid(format!(
            "{field} is {} bytes long; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    if key.starts_with('$') {
        return Err(HubError::invalid(format!(
            "{field} {key:?} starts with '$'; such keys are reserved for the hub"
        )));
    }
    Ok(())
}

/// Checks the events of an Append and turns them into [`NewEvent`]s.
pub fn append_events(events: Vec<proto::AppendEvent>, limits: &Limits) -> Result<Vec<NewEvent>> {
    if events.is_empty() {
        return Err(HubError::invalid(
            "events is empty; an Append needs at least one event",
        ));
    }
    if events.len() > limits.max_events_per_append {
        return Err(HubError::ResourceExhausted(format!(
            "the Append has {} events; the limit is {} per Append (split it into several)",
            events.len(),
            limits.max_events_per_append
        )));
    }
    let mut ids = HashSet::new();
    let mut out = Vec::with_capacity(events.len());
    for (i, e) in events.into_iter().enumerate() {
        check_key(&e.key, &format!("events[{i}].key"))?;
        check_event_type(&e.r#type, i)?;
        if e.content_type.len() > MAX_NAME
            || e.content_type
                .chars()
                .any(|c| !c.is_ascii() || c.is_ascii_control())
        {
            return Err(HubError::invalid(format!(
                "events[{i}].content_type must be up to {MAX_NAME} printable ASCII characters"
            )));
        }
        if e.event_id.len() > MAX_NAME {
            return Err(HubError::invalid(format!(
                "events[{i}].event_id is {} bytes long; the limit is {MAX_NAME}",
                e.event_id.len()
            )));
        }
        check_no_nul(&e.event_id, &format!("events[{i}].event_id"))?;
        if !e.event_id.is_empty() && !ids.insert(e.event_id.clone()) {
            return Err(HubError::invalid(format!(
                "events[{i}].event_id {:?} appears twice in this Append; event ids are unique",
                e.event_id
            )));
        }
        let mut size = e.key.len()
            + e.r#type.len()
            + e.content_type.len()
            + e.event_id.len()
            + e.payload.len();
        for (k, v) in &e.headers {
            if k.is_empty() || k.len() > MAX_NAME {
                return Err(HubError::invalid(format!(
                    "events[{i}].headers has a name of {} bytes; header names are 1–{MAX_NAME} bytes",
                    k.len()
                )));
            }
            size += k.len() + v.len();
        }
        if size > limits.max_event_bytes {
            return Err(HubError::invalid(format!(
                "events[{i}] is {size} bytes; the limit is {} bytes per event (key, type, content type, event id, headers and payload together)",
                limits.max_event_bytes
            )));
        }
        let expected = match proto::ExpectedVersion::try_from(e.expected) {
            Ok(proto::ExpectedVersion::Unspecified | proto::ExpectedVersion::Any) => Expected::Any,
            Ok(proto::ExpectedVersion::NoKey) => Expected::NoKey,
            Ok(proto::ExpectedVersion::Exists) => Expected::Exists,
            Ok(proto::ExpectedVersion::Exact) => Expected::Exact(e.expected_key_version),
            Err(_) => {
                return Err(HubError::invalid(format!(
                    "events[{i}].expected is {}, which is not an ExpectedVersion value",
                    e.expected
                )));
            }
        };
        let headers: BTreeMap<&str, &str> = e
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let headers = encode_headers(&headers);
        out.push(NewEvent {
            key: e.key,
            event_id: (!e.event_id.is_empty()).then_some(e.event_id),
            expected,
            content: Content {
                event_type: e.r#type,
                content_type: e.content_type,
                headers,
                payload: e.payload,
                tombstone: e.tombstone,
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TopicName;

    /// The hash matches the published FNV-1a test vectors.
    #[test]
    fn fnv_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    /// Headers survive the canonical encoding.
    #[test]
    fn headers_round_trip() {
        let h: BTreeMap<&str, &str> = [("b", "2"), ("a", "1")].into();
        let blob = encode_headers(&h).unwrap();
        let back = decode_headers(&blob);
        assert_eq!(back.len(), 2);
        assert_eq!(back["a"], "1");
    }

    /// Names and types that are reserved or malformed are refused at the
    /// edge, with the reason; the rest pass.
    #[test]
    fn reserved_and_malformed_names_are_refused() {
        // (event type, refused because)
        let types = [
            ("OrderPlaced", None),
            ("orders.v1/placed:eu-1_x", None),
            ("$invalidation", Some("reserved for the hub")),
            ("$mine", Some("reserved for the hub")),
            ("", Some("is empty")),
            ("a b", Some("contains ' '")),
            (&*"t".repeat(MAX_NAME + 1), Some("the limit is 200")),
        ];
        for (t, refused) in types {
            let event = proto::AppendEvent {
                key: "k".into(),
                r#type: t.into(),
                ..Default::default()
            };
            let result = append_events(vec![event], &Limits::default());
            match (result, refused) {
                (Ok(events), None) => assert_eq!(events[0].content.event_type, t),
                (Err(HubError::InvalidArgument(m)), Some(why)) => {
                    assert!(m.starts_with("events[0].type"), "{m}");
                    assert!(m.contains(why), "{t:?}: {m}");
                }
                (other, _) => panic!("{t:?}: {other:?}"),
            }
        }
        // (key, refused because)
        let keys = [
            ("order-1", None),
            ("ünïcode key", None),
            ("$k", Some("reserved for the hub")),
            ("", Some("is empty")),
            ("a\0b", Some("NUL")),
            (&*"k".repeat(MAX_KEY_BYTES + 1), Some("the limit is 1024")),
        ];
        for (key, refused) in keys {
            match (check_key(key, "key"), refused) {
                (Ok(()), None) => {}
                (Err(HubError::InvalidArgument(m)), Some(why)) => {
                    assert!(m.starts_with("key"), "{m}");
                    assert!(m.contains(why), "{key:?}: {m}");
                }
                (other, _) => panic!("{key:?}: {other:?}"),
            }
        }
        // (topic name, refused because)
        let names = [
            ("orders", None),
            ("orders.eu-1_v2", None),
            ("", Some("is empty")),
            (".hidden", Some("starts with '.'")),
            ("a/b", Some("contains '/'")),
            (&*"n".repeat(MAX_NAME + 1), Some("the limit is 200")),
        ];
        for (name, refused) in names {
            match (TopicName::parse(name), refused) {
                (Ok(n), None) => assert_eq!(n.as_str(), name),
                (Err(HubError::InvalidArgument(m)), Some(why)) => {
                    assert!(m.contains(why), "{name:?}: {m}")
                }
                (other, _) => panic!("{name:?}: {other:?}"),
            }
        }
    }
}
