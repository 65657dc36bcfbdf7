//! Heads between hub processes: every writer's transaction sends a
//! `NOTIFY` with its new heads, which PostgreSQL delivers to every
//! listening process when, and only when, the transaction commits; each
//! process's listener applies them to its registry. If the listener's
//! connection drops, notifications sent meanwhile are lost: it reconnects
//! (with backoff) and reads every topic's heads from the database once.

use super::Postgres;
use crate::error::Result;
use crate::store::Registry;
use crate::store::storage::ReadStorage;
use sqlx::postgres::{PgListener, PgPool};
use std::sync::LazyLock;
use std::time::Duration;

/// The notification channel for new heads.
pub(super) const CHANNEL: &str = "eventhub_heads";

pub(super) async fn listen_heads(pool: &PgPool) -> Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Report a lost connection at once instead of reconnecting silently:
    // notifications may have been missed, so heads must be read again.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Applies every head notification to the registry, for as long as the
/// hub runs; on connection loss, reconnects and resynchronises.
pub(super) async fn follow_heads(
    listener: PgListener,
    pool: PgPool,
    reads: Postgres,
    topics: Registry,
) {
    let mut listener = Some(listener);
    loop {
        let Some(l) = listener.as_mut() else {
            listener = Some(reconnect(&pool).await);
            match reads.adopt_all(&topics).await {
                Ok(()) => tracing::info!("listening for new heads again"),
                // The database answered the listener a moment ago; should
                // it fail now, each topic's next notification still brings
                // its heads.
                Err(e) => tracing::warn!(error = %e, "could not resynchronise heads"),
            }
            continue;
        };
        match l.try_recv().await {
            Ok(Some(n)) => apply(&topics, n.payload()),
            Ok(None) | Err(_) => {
                tracing::warn!("lost the connection that listens for new heads; reconnecting");
                listener = None;
            }
        }
    }
}

/// A listening connection, retried with backoff until the database answers.
async fn reconnect(pool: &PgPool) -> PgListener {
    let mut delay = Duration::from_millis(50);
    loop {
        match listen_heads(pool).await {
            Ok(l) => return l,
            Err(e) => {
                tracing::debug!(error = %e, "listener reconnect failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// This process, in the notifications its writer sends: random, so that
/// processes sharing a database tell their own commits from the others'.
pub(super) static ORIGIN: LazyLock<String> = LazyLock::new(|| {
    use std::hash::BuildHasher;
    let seed = std::hash::RandomState::new().hash_one(std::process::id());
    format!("@{seed:016x}")
});

/// Applies a payload `<topic> <last transaction> @<origin> <partition>:<head> ...`
/// (the origin may be missing).
fn apply(topics: &Registry, payload: &str) {
    let mut parts = payload.split(' ').peekable();
    let (Some(name), Some(Ok(last))) = (parts.next(), parts.next().map(str::parse::<u64>)) else {
        tracing::warn!(payload, "ignoring a malformed heads notification");
        return;
    };
    let origin = parts.next_if(|p| p.starts_with('@'));
    // A topic this process has not loaded yet reads its heads when it is.
    let Some(state) = topics.read().unwrap().get(name).cloned() else {
        return;
    };
    // Another process's commit may have invalidated events the tails hold.
    // `advance` drops them for any new transaction but the one this
    // process's writer is trying, which another process may have taken
    // (the writer's guarded write then writes nothing): only the origin
    // tells that one apart.
    if origin != Some(ORIGIN.as_str())
        && last > state.last_transaction()
        && last == state.local_transaction()
    {
        state.forget_tails();
    }
    let heads: Vec<(u32, u64)> = parts
        .filter_map(|ph| {
            let (p, h) = ph.split_once(':')?;
            Some((p.parse().ok()?, h.parse().ok()?))
        })
        .collect();
    if origin == Some(ORIGIN.as_str()) && state.defer_own(last, heads.clone()) {
        return;
    }
    state.advance(last, heads);
}

/// Notification payloads announcing new heads: `<topic> <last transaction>
/// @<origin> <partition>:<head> ...`, split to stay far below PostgreSQL's
/// 8,000-byte payload limit.
pub(super) fn heads_payloads(topic: &str, last_txn: u64, heads: &[(u32, u64)]) -> Vec<String> {
    heads
        .chunks(200)
        .map(|chunk| {
            let mut s = format!("{topic} {last_txn} {}", *ORIGIN);
            for (p, h) in chunk {
                s.push_str(&format!(" {p}:{h}"));
            }
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Content, EventRow};
    use crate::store::writer::Committed;
    use crate::store::{TopicRow, TopicState, registered};
    use std::sync::Arc;

    fn row(sequence: u64, transaction_id: u64) -> EventRow {
        EventRow {
            partition: 0,
            sequence,
            transaction_id,
            key: Some("k".into()),
            key_version: sequence,
            event_id: None,
            content: Content {
                event_type: "T".into(),
                content_type: String::new(),
                headers: None,
                payload: Vec::new(),
                tombstone: false,
            },
            committed_at_ms: 0,
            invalidates: None,
            transaction_invalidated: false,
        }
    }

    /// A registry holding one new topic.
    fn topic(name: &str, partitions: u32) -> (Registry, Arc<TopicState>) {
        let topics = Registry::default();
        let row = TopicRow {
            id: 1,
            name: name.into(),
            partition_count: partitions,
            created_at_ms: 0,
            last_transaction_id: 0,
            heads: (0..partitions).map(|p| (p, 0)).collect(),
        };
        let state = registered(&topics, &row);
        (topics, state)
    }

    /// The writer committed transaction 1 and is trying 2 when a
    /// notification of transaction 2 arrives: the tails are kept if the
    /// writer sent it (which then moves the heads itself), dropped if
    /// another process did (which moves the heads at once).
    #[test]
    fn a_commit_elsewhere_drops_the_tails_even_with_the_writers_transaction_id() {
        for (origin, own) in [(ORIGIN.as_str(), true), ("@0123456789abcdef", false)] {
            let (topics, state) = topic("t", 1);
            let _reader = state.heads[0].subscribe();
            state.committing(1);
            state.publish(&Committed::assumed(), 1, &[(0, 1)], [row(1, 1)]);
            state.committing(2);
            apply(&topics, &format!("t 2 {origin} 0:2"));
            assert_eq!(state.head(0), if own { 1 } else { 2 }, "origin {origin}");
            let tail = state.tail_page(0, 0, 2, 10, &[]);
            assert_eq!(tail.is_some(), own, "origin {origin}");
        }
    }

    /// A notification of the writer's own commit that comes before the
    /// writer published it leaves the heads to the writer, which hands the
    /// commit's events to the tails first. If the writer gives the commit
    /// up instead (it cannot tell whether it happened), the notification's
    /// heads apply, since it proves the commit.
    #[test]
    fn an_own_notification_waits_for_the_writer() {
        let (topics, state) = topic("t", 1);
        let _reader = state.heads[0].subscribe();
        let own = |last: u64, head: u64| format!("t {last} {} 0:{head}", *ORIGIN);

        state.committing(1);
        apply(&topics, &own(1, 3));
        assert_eq!((state.last_transaction(), state.head(0)), (0, 0));
        let rows = [row(1, 1), row(2, 1), row(3, 1)];
        state.publish(&Committed::assumed(), 1, &[(0, 3)], rows);
        assert_eq!((state.last_transaction(), state.head(0)), (1, 3));
        assert_eq!(state.tail_page(0, 0, 3, 10, &[]).unwrap().rows.len(), 3);
        // A notification after the writer published changes nothing.
        apply(&topics, &own(1, 3));
        assert_eq!(state.head(0), 3);

        state.committing(2);
        apply(&topics, &own(2, 5));
        assert_eq!(state.head(0), 3);
        state.give_up();
        assert_eq!((state.last_transaction(), state.head(0)), (2, 5));
        assert!(state.tail_page(0, 3, 5, 10, &[]).is_none());

        // Given up before its notification came: applied when it comes.
        state.committing(3);
        state.give_up();
        apply(&topics, &own(3, 6));
        assert_eq!((state.last_transaction(), state.head(0)), (3, 6));
    }

    /// Payloads of processes that send no origin are applied as commits
    /// from elsewhere.
    #[test]
    fn a_payload_without_origin_is_applied() {
        let (topics, state) = topic("t", 2);
        apply(&topics, "t 3 0:2 1:5");
        assert_eq!(
            (state.last_transaction(), state.head(0), state.head(1)),
            (3, 2, 5)
        );
        let payloads = heads_payloads("t", 4, &[(1, 6)]);
        assert_eq!(payloads, [format!("t 4 {} 1:6", *ORIGIN)]);
        apply(&topics, &payloads[0]);
        assert_eq!((state.last_transaction(), state.head(1)), (4, 6));
    }
}
