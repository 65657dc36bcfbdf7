//! The planning rules, table by table.

use super::*;
use crate::domain::AppendOutcome::{DuplicateContent, DuplicateEventId, Stored};
use crate::domain::Expected;

const PARTITIONS: u32 = 4;

fn content(payload: &str) -> Content {
    Content {
        event_type: "T".into(),
        content_type: "text/plain".into(),
        headers: None,
        payload: payload.as_bytes().to_vec(),
        tombstone: false,
    }
}

fn ev(key: &str, payload: &str) -> NewEvent {
    NewEvent {
        key: key.into(),
        event_id: None,
        expected: Expected::Any,
        content: content(payload),
    }
}

fn with_id(mut e: NewEvent, id: &str) -> NewEvent {
    e.event_id = Some(id.into());
    e
}

fn expecting(mut e: NewEvent, expected: Expected) -> NewEvent {
    e.expected = expected;
    e
}

/// A draft of a topic whose last transaction is 7 and whose partitions'
/// heads are 10, 20, 30 and 40.
fn draft() -> Draft {
    Draft::new(1, "t".into(), PARTITIONS, 0, 7, vec![10, 20, 30, 40])
}

fn p(key: &str) -> u32 {
    partition_for(key, PARTITIONS)
}

/// What the draft would write and where it stands, to compare a
/// draft before and after a rejected append.
fn state(d: &Draft) -> (u64, Vec<u64>, Vec<PendingEvent>, usize, usize) {
    (
        d.last_txn,
        d.heads.clone(),
        d.rows.clone(),
        d.keys.len(),
        d.ids.len(),
    )
}

#[test]
fn stored_events_take_the_next_sequence_of_their_partition_and_version_of_their_key() {
    // A key in another partition than "a".
    let b = (0..)
        .map(|i| format!("b{i}"))
        .find(|k| p(k) != p("a"))
        .unwrap();
    let head = |key: &str| [10, 20, 30, 40][p(key) as usize];
    let mut d = draft();
    let first = d
        .plan_append(&[ev("a", "1"), ev(&b, "1"), ev("a", "2")], false)
        .unwrap();
    let second = d.plan_append(&[ev("a", "3")], false).unwrap();
    assert_eq!((first.transaction_id, second.transaction_id), (8, 9));
    let expected = [
        (p("a"), head("a") + 1, 1, 8),
        (p(&b), head(&b) + 1, 1, 8),
        (p("a"), head("a") + 2, 2, 8),
        (p("a"), head("a") + 3, 3, 9),
    ];
    let results = first.results.iter().chain(&second.results);
    for ((pos, outcome), (partition, sequence, version, txn)) in results.zip(expected) {
        assert_eq!(*outcome, Stored);
        assert_eq!(
            (
                pos.partition,
                pos.sequence,
                pos.key_version,
                pos.transaction_id
            ),
            (partition, sequence, version, txn)
        );
    }
    // The draft writes what it planned, in order, and the heads moved.
    assert_eq!(d.last_txn, 9);
    let rows: Vec<(u32, u64)> = d.rows.iter().map(|r| (r.partition, r.sequence)).collect();
    let planned: Vec<(u32, u64)> = expected.iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(rows, planned);
    assert_eq!(d.moved_heads(), {
        let mut h = vec![(p("a"), head("a") + 3), (p(&b), head(&b) + 1)];
        h.sort();
        h
    });
    let changed: BTreeMap<&str, u64> = d
        .changed_keys()
        .into_iter()
        .map(|(k, s)| (k.as_str(), s.version))
        .collect();
    assert_eq!(changed, BTreeMap::from([("a", 3), (b.as_str(), 1)]));
}

#[test]
fn event_ids_already_stored_or_planned_are_duplicates() {
    let stored = StoredPos {
        partition: 2,
        sequence: 5,
        key_version: 1,
        transaction_id: 3,
    };
    let mut d = draft();
    d.ids.insert("stored".into(), stored);
    let first = d
        .plan_append(
            &[
                with_id(ev("a", "1"), "new"),
                with_id(ev("a", "2"), "stored"),
            ],
            false,
        )
        .unwrap();
    assert_eq!(first.results[0].1, Stored);
    assert_eq!(first.results[1], (stored, DuplicateEventId));
    // A later append of the batch repeating an id the batch stores.
    let again = d
        .plan_append(&[with_id(ev("b", "1"), "new")], false)
        .unwrap();
    assert_eq!(again.results, [(first.results[0].0, DuplicateEventId)]);
    // An append of duplicates only stores nothing and takes no
    // transaction id: it answers with the duplicates' own.
    assert_eq!(again.transaction_id, 8);
    assert_eq!((d.last_txn, d.rows.len()), (8, 1));
}

#[test]
fn an_expected_version_that_does_not_hold_rejects_the_whole_append() {
    // (expected, key's version before the append, holds)
    let table = [
        (Expected::Any, 0, true),
        (Expected::Any, 2, true),
        (Expected::NoKey, 0, true),
        (Expected::NoKey, 1, false),
        (Expected::Exists, 0, false),
        (Expected::Exists, 1, true),
        (Expected::Exact(2), 2, true),
        (Expected::Exact(2), 1, false),
        (Expected::Exact(0), 0, true),
    ];
    for (expected, version, holds) in table {
        let mut d = draft();
        d.plan_append(&[ev("other", "x")], false).unwrap();
        if version > 0 {
            d.keys.insert(
                "k".into(),
                KeyState {
                    version,
                    live: None,
                    changed: None,
                },
            );
        }
        let before = state(&d);
        // An event the append stores before the one that fails.
        let events = [ev("first", "x"), expecting(ev("k", "y"), expected)];
        match d.plan_append(&events, false) {
            Ok(reply) => {
                assert!(holds, "{expected:?} at version {version}");
                assert_eq!(reply.results[1].0.key_version, version + 1);
            }
            Err(HubError::VersionConflict {
                key,
                actual,
                expected: words,
            }) => {
                assert!(!holds, "{expected:?} at version {version}");
                assert_eq!((key.as_str(), actual), ("k", version));
                assert!(words.starts_with("but events[1] expected"), "{words}");
                assert!(words.ends_with("nothing was stored"), "{words}");
                assert_eq!(state(&d), before, "a rejected append changes nothing");
            }
            Err(other) => panic!("{other:?}"),
        }
    }
}

#[test]
fn dedup_by_content_compares_with_the_keys_latest_valid_event() {
    // (payloads appended to one key, in one append each, with dedup;
    // which were stored)
    let table: [(&[&str], &[bool]); 4] = [
        (&["A", "B", "A"], &[true, true, true]),
        (&["A", "A"], &[true, false]),
        (
            &["A", "A", "B", "B", "A"],
            &[true, false, true, false, true],
        ),
        (&["stored", "A"], &[false, true]),
    ];
    for (payloads, stored) in table {
        let mut d = draft();
        // The key's latest valid event in the database has payload "stored".
        let live = Live {
            partition: p("k"),
            sequence: 3,
            tombstone: false,
        };
        d.keys.insert(
            "k".into(),
            KeyState {
                version: 1,
                live: Some(live),
                changed: None,
            },
        );
        d.contents
            .insert((live.partition, 3), (content("stored"), 1, 2));
        let mut outcomes = Vec::new();
        let mut last_stored = StoredPos {
            partition: live.partition,
            sequence: 3,
            key_version: 1,
            transaction_id: 2,
        };
        for payload in payloads {
            let reply = d.plan_append(&[ev("k", payload)], true).unwrap();
            let (pos, outcome) = reply.results[0];
            match outcome {
                Stored => last_stored = pos,
                DuplicateContent => assert_eq!(pos, last_stored, "{payloads:?}"),
                DuplicateEventId => panic!("no ids here"),
            }
            outcomes.push(outcome == Stored);
        }
        assert_eq!(outcomes, stored, "{payloads:?}");
    }
    // Without dedup, or with another content, the same payload is stored.
    let mut d = draft();
    d.plan_append(&[ev("k", "A")], true).unwrap();
    let reply = d.plan_append(&[ev("k", "A")], false).unwrap();
    assert_eq!(reply.results[0].1, Stored);
    let mut tombstone = ev("k", "A");
    tombstone.content.tombstone = true;
    let reply = d.plan_append(&[tombstone], true).unwrap();
    assert_eq!(reply.results[0].1, Stored);
}

#[test]
fn a_batch_loads_only_what_neither_the_draft_nor_the_cache_knows() {
    let events = [
        with_id(ev("b", "1"), "id-2"),
        with_id(ev("a", "1"), "id-1"),
        ev("a", "2"),
    ];
    let known = [with_id(ev("c", "1"), "known")];
    let mut cache = KeyCache::default();
    let mut d = draft();
    d.ids.insert(
        "known".into(),
        StoredPos {
            partition: 0,
            sequence: 1,
            key_version: 1,
            transaction_id: 1,
        },
    );
    let wanted = d.wanted([(&events[..], false), (&known[..], true)], &mut cache);
    assert_eq!(wanted.keys, ["a", "b", "c"]);
    assert_eq!(wanted.ids, ["id-1", "id-2"]);
    assert_eq!(wanted.dedup_keys, BTreeSet::from(["c"]));

    // A topic this writer created and whose keys it all holds: a key
    // it does not hold is new, and nothing is loaded.
    cache.created(1);
    cache.commit(
        1,
        7,
        [(
            "a".to_owned(),
            KeyState {
                version: 4,
                live: None,
                changed: Some(7),
            },
        )]
        .into_iter(),
    );
    let mut d = draft();
    let wanted = d.wanted([(&events[..], false)], &mut cache);
    assert!(wanted.keys.is_empty());
    assert_eq!(d.keys["a"].version, 4);
    assert_eq!(d.keys["b"], KeyState::default());

    // Contents are wanted for dedup keys with a live event the draft
    // does not know.
    let live = |sequence| Live {
        partition: 0,
        sequence,
        tombstone: false,
    };
    let mut d = draft();
    for (key, sequence) in [("x", 1), ("y", 2)] {
        d.keys.insert(
            key.into(),
            KeyState {
                version: 1,
                live: Some(live(sequence)),
                changed: None,
            },
        );
    }
    d.contents.insert((0, 2), (content("y"), 1, 1));
    let dedup = BTreeSet::from(["x", "y", "never-written"]);
    assert_eq!(d.contents_wanted(&dedup), [live(1)]);
}

#[test]
fn an_invalidation_puts_one_marker_at_the_head_of_each_partition_it_touches() {
    let mut d = draft();
    let (txn, markers) = d.plan_invalidation(5, &BTreeSet::from([1, 3]), "wrong price");
    assert_eq!(txn, 8);
    let at: Vec<(u32, u64, u64)> = markers
        .iter()
        .map(|m| (m.partition, m.sequence, m.transaction_id))
        .collect();
    assert_eq!(at, [(1, 21, 8), (3, 41, 8)]);
    assert_eq!(d.heads, [10, 21, 30, 41]);
    assert!(d.rows.iter().all(|r| r.invalidates == Some(5)
        && r.key.is_none()
        && r.content.event_type == INVALIDATION_TYPE
        && r.content.payload == b"wrong price"));
    assert_eq!(d.moved_heads(), [(1, 21), (3, 41)]);
}
